"""Intensity steps, in place on a ``(B, C, *spatial)`` floating-point image, batched over samples.

Each step takes a CPU mask of the samples (``(B,)``) or sample/channel pairs (``(B, C)``) it touches and
the per-sample values (see :class:`~.pipeline.AugmentationParams`); untouched entries stay bit-identical.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from nnseg.training.augment._common import expand, indices


def add_noise(image: Tensor, mask: Tensor, std: Tensor, seed: int) -> None:
    """Add Gaussian noise of standard deviation ``std[b]`` to sample ``b`` where ``mask[b]``.

    One noise field per sample, shared by its channels (as nnU-Net), drawn from a generator on the
    image's device seeded with ``seed``.
    """
    index = indices(mask, image.device)
    if index is None:
        return
    generator = torch.Generator(device=image.device)
    generator.manual_seed(seed)
    field = torch.randn(
        (index.numel(), 1, *image.shape[2:]), generator=generator, device=image.device, dtype=image.dtype
    )
    image[index] += field * expand(std[mask].to(image.device, image.dtype), image.ndim)


def blur(image: Tensor, mask: Tensor, sigma: Tensor) -> None:
    """Gaussian-blur channel ``(b, c)`` where ``mask[b, c]``, with sigma ``sigma[b, c, axis]`` in voxels.

    nnU-Net's kernel (truncated at about 6 sigma), separable, reflected border.
    """
    pairs = mask.nonzero()
    if pairs.numel() == 0:
        return
    b, c = pairs[:, 0].to(image.device), pairs[:, 1].to(image.device)
    sigmas = sigma[mask]  # (N, D)
    x = image[b, c]
    for axis in range(image.ndim - 2):
        x = _blur_axis(x, sigmas[:, axis], axis)
    image[b, c] = x


def scale_brightness(image: Tensor, mask: Tensor, factor: Tensor) -> None:
    """Multiply channel ``c`` of sample ``b`` by ``factor[b, c]`` where ``mask[b]``."""
    index = indices(mask, image.device)
    if index is None:
        return
    image[index] *= expand(factor[mask].to(image.device, image.dtype), image.ndim, leading=2)


def adjust_contrast(image: Tensor, mask: Tensor, factor: Tensor) -> None:
    """``(x - mean) * factor[b, c] + mean`` per channel where ``mask[b]``, clipped to the channel's range."""
    index = indices(mask, image.device)
    if index is None:
        return
    x = image[index]
    flat = x.flatten(2)
    mean = expand(flat.mean(-1), x.ndim, leading=2)
    low, high = (expand(v, x.ndim, leading=2) for v in flat.aminmax(dim=-1))
    scaled = expand(factor[mask].to(image.device, image.dtype), x.ndim, leading=2)
    image[index] = torch.clamp((x - mean) * scaled + mean, low, high)


def simulate_low_resolution(image: Tensor, mask: Tensor, zoom: Tensor, ignore_axes: Sequence[int] = ()) -> None:
    """nnU-Net's SimulateLowResolutionTransform on channel ``(b, c)`` where ``mask[b, c]``.

    Every spatial axis but ``ignore_axes`` is downsampled (``nearest-exact``) to ``round(n * zoom[b, c])``
    (at least 1), then the channel is upsampled back (bi/trilinear, ``align_corners=False``).
    """
    spatial = tuple(image.shape[2:])
    mode = "bilinear" if len(spatial) == 2 else "trilinear"
    for (b, c), z in zip(mask.nonzero().tolist(), zoom[mask].tolist()):
        low = [n if axis in ignore_axes else max(1, round(n * z)) for axis, n in enumerate(spatial)]
        if tuple(low) == spatial:
            continue
        down = F.interpolate(image[b, c][None, None], low, mode="nearest-exact")
        image[b, c] = F.interpolate(down, spatial, mode=mode, align_corners=False)[0, 0]


def adjust_gamma(image: Tensor, mask: Tensor, exponent: Tensor, *, invert: bool) -> None:
    """nnU-Net's gamma with retained stats, per channel where ``mask[b]``; ``invert`` applies it to ``-image``.

    Algebraically folded so that the image is read a few times only: with ``u`` the channel rescaled
    to [0, 1] (``(x - min) / range``, or ``(max - x) / range`` when inverted) and ``q = u ** gamma``,
    nnU-Net's result is ``sign * (q - mean(q)) * std(x) / std(q) + mean(x)`` (``sign`` = -1 when inverted),
    up to its 1e-7 guards on range and standard deviation, which are kept.
    """
    index = indices(mask, image.device)
    if index is None:
        return
    x = image[index]
    shape = (x.shape[0], x.shape[1], *[1] * (x.ndim - 2))
    flat = x.flatten(2)
    std, mean = (v.view(shape) for v in torch.std_mean(flat, dim=-1))
    low, high = (v.view(shape) for v in flat.aminmax(dim=-1))
    spread = high - low
    scale = 1 / spread.clamp_min(1e-7)
    q = ((high - x) if invert else (x - low)).mul_(scale)
    q.pow_(exponent[mask].to(image.device, image.dtype).view(shape))
    q_std, q_mean = (v.view(shape) for v in torch.std_mean(q.flatten(2), dim=-1))
    factor = std / (q_std * spread).clamp_min(1e-7) * spread
    if invert:
        factor = -factor
    image[index] = q.sub_(q_mean).mul_(factor).add_(mean)


def _blur_kernel_radius(sigma: Tensor) -> Tensor:
    """Half-width of nnU-Net's kernel: size = sigma * 6 + 0.5 rounded (half to even) to the nearest odd integer."""
    target = sigma * 6 + 0.5
    rounded = torch.round(target)  # half to even, like Python's round
    odd = rounded.remainder(2) == 1
    size = torch.where(odd, rounded, torch.where(target - rounded >= 0, rounded + 1, rounded - 1))
    return ((size - 1) // 2).to(torch.int64)


def _blur_axis(x: Tensor, sigma: Tensor, axis: int) -> Tensor:
    """Gaussian-blur each of ``x``'s ``N`` volumes ``(N, *spatial)`` along ``axis`` with its own sigma.

    One kernel width for the batch (the largest); each row's kernel is zero beyond its own nnU-Net
    truncation radius, so every volume gets exactly nnU-Net's kernel. Reflect padding.
    """
    radius_each = _blur_kernel_radius(sigma)
    radius = int(radius_each.max())
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float64)
    weights = torch.exp(-0.5 * (offsets[None, :] / sigma[:, None].to(torch.float64)) ** 2)
    weights = torch.where(offsets.abs()[None, :] <= radius_each[:, None], weights, 0.0)
    weights = (weights / weights.sum(1, keepdim=True)).to(x.device, x.dtype)
    size = x.shape[axis + 1]
    spatial = x.ndim - 1
    pad = [0, 0] * spatial
    pad[2 * (spatial - 1 - axis)] = pad[2 * (spatial - 1 - axis) + 1] = radius
    mode = "reflect" if radius < size else "replicate"
    padded = F.pad(x.unsqueeze(0), pad, mode=mode).squeeze(0)
    out = torch.zeros_like(x)
    for k in range(2 * radius + 1):
        out += expand(weights[:, k], x.ndim) * padded.narrow(axis + 1, k, size)
    return out
