"""Sliding-window prediction over a whole (preprocessed) volume: window positions, Gaussian weights, stitching.

Windows overlap by ``1 - step_size`` (0.5 by default), are weighted by a Gaussian
importance map (sigma = 1/8 of the patch edge) and averaged as logits, as nnU-Net does.
What we do less of: windows that contain no voxel of the body mask (the nonzero mask,
and for CT the air mask of :mod:`nnseg.inference.skipping`) are skipped, and windows
with their mirrored copies go through the network in batches of ``window_batch`` inputs
(one window in one mirror orientation each).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

Predict = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class WindowStats:
    """Work done by :func:`predict_sliding_window`, accumulated over calls.

    ``windows``: window positions; ``run``: those not skipped; ``inputs``: network inputs (run windows x
    mirrorings); ``forward_passes``: calls of the network (batches of up to ``window_batch`` inputs).
    """

    windows: int = 0
    run: int = 0
    inputs: int = 0
    forward_passes: int = 0


def window_starts(size: Sequence[int], patch: Sequence[int], step_size: float) -> list[list[int]]:
    """Per axis, evenly spaced window starts covering ``size`` with steps of at most ``step_size * patch``."""
    if not 0 < step_size <= 1:
        raise ValueError(f"step_size must be in (0, 1], got {step_size}")
    starts = []
    for n, p in zip(size, patch):
        if n <= p:
            starts.append([0])
            continue
        count = math.ceil((n - p) / (p * step_size)) + 1
        step = (n - p) / (count - 1)
        starts.append([int(round(step * i)) for i in range(count)])
    return starts


def gaussian_importance(patch: Sequence[int], sigma_scale: float = 1 / 8) -> torch.Tensor:
    """Gaussian centred on the patch, max 1, no zeros (zeros would leave voxels without weight)."""
    delta = np.zeros(patch, dtype=np.float32)
    delta[tuple(p // 2 for p in patch)] = 1
    weights = ndimage.gaussian_filter(delta, [p * sigma_scale for p in patch], mode="constant", cval=0)
    weights /= weights.max()
    weights[weights == 0] = weights[weights > 0].min()
    return torch.from_numpy(weights)


def _flip(tensor: torch.Tensor, axes: tuple[int, ...]) -> torch.Tensor:
    """Flip one ``(channels, *spatial)`` tensor along spatial ``axes`` (no copy when there are none)."""
    return torch.flip(tensor, [a + 1 for a in axes]) if axes else tensor


def mirror_combinations(axes: Sequence[int]) -> list[tuple[int, ...]]:
    """Every subset of the spatial axes to flip (the empty one first): 8 for three axes."""
    return [combo for r in range(len(axes) + 1) for combo in itertools.combinations(axes, r)]


@torch.inference_mode()
def predict_sliding_window(
    predict: Predict,
    image: torch.Tensor,
    patch: Sequence[int],
    num_classes: int,
    *,
    step_size: float = 0.5,
    mirror_axes: Sequence[int] = (),
    window_batch: int = 2,
    body_mask: torch.Tensor | None = None,
    device: torch.device | str = "cpu",
    progress: Callable[[int], None] | None = None,
    stats: WindowStats | None = None,
) -> torch.Tensor:
    """Logits ``(classes, *spatial)`` (float32, CPU) for ``image`` ``(channels, *spatial)``.

    Args:
        predict: maps a batch ``(B, channels, *patch)`` to logits ``(B, classes, *patch)``.
        image: the preprocessed image.
        patch: window size (the training patch).
        num_classes: network outputs.
        step_size: window step as a fraction of the patch (0.5 = 50 % overlap).
        mirror_axes: spatial axes for mirroring test-time augmentation (averaged over every combination).
        window_batch: network inputs per forward pass; each is one window in one mirror orientation, so a
            window's mirrored copies share forward passes (``benchmarks/mirror_batching.py``).
        body_mask: ``(*spatial)`` bool; windows without any True voxel are skipped and predicted background.
        device: where the network runs; stitching buffers stay on the CPU.
        progress: called with the number of windows done after each batch.
        stats: counts of windows and forward passes are added to it.
    """
    spatial = tuple(image.shape[1:])
    patch = tuple(int(p) for p in patch)
    pad = [max(0, p - s) for p, s in zip(patch, spatial)]
    if any(pad):
        padding = [v for p in reversed(pad) for v in (p // 2, p - p // 2)]
        image = F.pad(image, padding)
        if body_mask is not None:
            body_mask = F.pad(body_mask, padding)
    padded = tuple(image.shape[1:])
    weights = gaussian_importance(patch)
    logits = torch.zeros((num_classes, *padded), dtype=torch.float32)
    counts = torch.zeros(padded, dtype=torch.float32)
    windows = [
        tuple(slice(s, s + p) for s, p in zip(start, patch))
        for start in itertools.product(*window_starts(padded, patch, step_size))
    ]
    total = len(windows)
    if body_mask is not None:
        windows = [w for w in windows if bool(body_mask[w].any())] or windows[:1]
    flips = mirror_combinations(mirror_axes)
    if stats is not None:
        stats.windows += total
        stats.run += len(windows)
        stats.inputs += len(windows) * len(flips)
        stats.forward_passes += math.ceil(len(windows) * len(flips) / window_batch)
    weights_device = weights.to(device)
    # every (window, mirror) pair is one network input; pairs share forward passes of `window_batch` inputs
    jobs = [(index, flip) for index in range(len(windows)) for flip in flips]
    partial: dict[int, torch.Tensor] = {}
    mirrors_done: dict[int, int] = {}
    for first in range(0, len(jobs), window_batch):
        chunk = jobs[first : first + window_batch]
        batch = torch.stack([_flip(image[(slice(None), *windows[index])], flip) for index, flip in chunk])
        outputs = predict(batch.to(device, non_blocking=True)).float()
        finished = 0
        for (index, flip), output in zip(chunk, outputs):
            output = _flip(output, flip)
            partial[index] = output if index not in partial else partial[index] + output
            mirrors_done[index] = mirrors_done.get(index, 0) + 1
            if mirrors_done[index] == len(flips):
                window = windows[index]
                logits[(slice(None), *window)] += (partial.pop(index) * (weights_device / len(flips))).cpu()
                counts[window] += weights
                finished += 1
        if progress is not None and finished:
            progress(finished)
    covered = counts > 0
    logits /= torch.where(covered, counts, 1.0)  # in place: no copies of the covered voxels
    logits[0, ~covered] = 1.0  # skipped windows: background
    if any(pad):
        crop = tuple(slice(p // 2, p // 2 + s) for p, s in zip(pad, spatial))
        logits = logits[(slice(None), *crop)]
    return logits
