"""Throughput of nnseg's batched augmentation against an equivalent per-sample MONAI pipeline.

Both pipelines take the larger region nnU-Net samples (``TrainingAugmentation.sampling_patch_size``),
1 image channel plus a 3-label segmentation, and return a patch. Printed per patch size and
device, in samples per second:

- ``nnU-Net p``: nnU-Net's probabilities (what training sees on average);
- ``all p=1``: every transform applied to every sample (worst case).

The MONAI pipeline (dictionary transforms, one sample at a time, as a MONAI ``Dataset`` would run
them) mirrors nnU-Net's list step by step: RandRotated (±30° per axis) -> RandZoomd (0.7..1.4) ->
CenterSpatialCropd -> RandGaussianNoised -> RandGaussianSmoothd -> RandScaleIntensityd (brightness)
-> RandScaleIntensityFixedMeand (contrast, preserve range) -> RandSimulateLowResolutiond ->
RandAdjustContrastd (gamma, inverted, retain stats) -> RandAdjustContrastd (gamma, retain stats) ->
RandFlipd x 3. ``--monai-subset`` drops the three that have no counterpart in the short list
(contrast, low resolution, inverted gamma).

CUDA rows are added when ``torch.cuda.is_available()``.

    .venv/bin/python benchmarks/augmentation_throughput.py --quick      # patches 32^3, 64^3
    .venv/bin/python benchmarks/augmentation_throughput.py              # patches 64^3, 128^3
    .venv/bin/python benchmarks/augmentation_throughput.py --threads 2 --seconds 5
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import time
from collections.abc import Callable

import torch

from nnseg.training.augment import TrainingAugmentation

ALL_ON = dict(
    p_rotation=1.0,
    p_scaling=1.0,
    p_noise=1.0,
    p_blur=1.0,
    p_blur_per_channel=1.0,
    p_brightness=1.0,
    p_contrast=1.0,
    p_low_res=1.0,
    p_low_res_per_channel=1.0,
    p_gamma_inverted=1.0,
    p_gamma=1.0,
)


def monai_pipeline(patch: tuple[int, ...], all_on: bool, subset: bool, seed: int) -> Callable[[dict], dict]:
    """nnU-Net's default augmentation written with MONAI dictionary transforms (per sample)."""
    from monai import transforms as mt

    def p(value: float) -> float:
        return 1.0 if all_on else value

    keys = ["image", "label"]
    angle = math.pi / 6
    steps = [
        mt.RandRotated(
            keys,
            range_x=angle,
            range_y=angle,
            range_z=angle,
            prob=p(0.2),
            keep_size=True,
            mode=("bilinear", "nearest"),
            padding_mode=("zeros", "zeros"),
        ),
        mt.RandZoomd(
            keys,
            prob=p(0.2),
            min_zoom=0.7,
            max_zoom=1.4,
            mode=("trilinear", "nearest"),
            padding_mode=("constant", "constant"),
            keep_size=True,
        ),
        mt.CenterSpatialCropd(keys, roi_size=patch),
        mt.RandGaussianNoised("image", prob=p(0.1), std=0.1),
        mt.RandGaussianSmoothd("image", sigma_x=(0.5, 1.0), sigma_y=(0.5, 1.0), sigma_z=(0.5, 1.0), prob=p(0.2)),
        mt.RandScaleIntensityd("image", factors=0.25, prob=p(0.15)),
    ]
    if not subset:
        steps += [
            mt.RandScaleIntensityFixedMeand("image", factors=0.25, preserve_range=True, prob=p(0.15)),
            mt.RandSimulateLowResolutiond("image", prob=p(0.25), zoom_range=(0.5, 1.0)),
            mt.RandAdjustContrastd("image", prob=p(0.1), gamma=(0.7, 1.5), invert_image=True, retain_stats=True),
        ]
    steps += [mt.RandAdjustContrastd("image", prob=p(0.3), gamma=(0.7, 1.5), retain_stats=True)]
    steps += [mt.RandFlipd(keys, prob=0.5, spatial_axis=axis) for axis in range(len(patch))]
    pipeline = mt.Compose(steps)
    pipeline.set_random_state(seed=seed)
    return pipeline


def warm_up(step: Callable[[], None], seconds: float) -> None:
    """Run ``step`` for ``seconds`` (at least 3 times): with small probabilities a transform's first,
    slow call would otherwise land inside a timed round."""
    started = time.perf_counter()
    calls = 0
    while calls < 3 or time.perf_counter() - started < seconds:
        step()
        calls += 1


def time_round(step: Callable[[], None], samples_per_step: int, seconds: float, device: torch.device) -> float:
    """Samples per second of ``step`` over at least ``seconds`` (and at least 2 calls)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    calls = 0
    started = time.perf_counter()
    while calls < 2 or time.perf_counter() - started < seconds:
        step()
        calls += 1
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return calls * samples_per_step / (time.perf_counter() - started)


def compare(
    ours: Callable[[], None],
    theirs: Callable[[], None],
    samples_per_step: int,
    seconds: float,
    rounds: int,
    device: torch.device,
) -> tuple[float, float]:
    """Median samples/s of both, timed in alternating rounds so that load from other processes hits both alike."""
    warm_up(ours, seconds / 2)
    warm_up(theirs, seconds / 2)
    ours_rates, theirs_rates = [], []
    for _ in range(rounds):
        ours_rates.append(time_round(ours, samples_per_step, seconds / rounds, device))
        theirs_rates.append(time_round(theirs, samples_per_step, seconds / rounds, device))
    return statistics.median(ours_rates), statistics.median(theirs_rates)


def bench(
    patch: tuple[int, ...], batch: int, all_on: bool, device: torch.device, seconds: float, rounds: int, subset: bool
) -> tuple[tuple[int, ...], float, float]:
    aug = TrainingAugmentation.for_patch_size(patch, **(ALL_ON if all_on else {}))
    region = aug.sampling_patch_size
    source = torch.Generator().manual_seed(0)
    image = torch.randn((batch, 1, *region), generator=source).to(device)
    seg = torch.randint(0, 3, (batch, 1, *region), generator=source, dtype=torch.int16).to(device)
    generator = torch.Generator().manual_seed(1)  # CPU generator: parameters are tiny; no device syncs

    def torch_step() -> None:
        aug(image, seg, generator)

    pipeline = monai_pipeline(patch, all_on, subset, seed=1)
    samples = [{"image": image[b], "label": seg[b].float()} for b in range(batch)]

    def monai_step() -> None:
        for sample in samples:
            pipeline(dict(sample))

    return (region, *compare(torch_step, monai_step, batch, seconds, rounds, device))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="patches 32^3 and 64^3, shorter timing")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--seconds", type=float, default=None, help="timed seconds per pipeline and cell (default 6, quick 3)"
    )
    parser.add_argument("--rounds", type=int, default=3, help="alternating timing rounds; the median is printed")
    parser.add_argument(
        "--monai-subset", action="store_true", help="MONAI without contrast, low resolution and inverted gamma"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    sizes = [(32, 32, 32), (64, 64, 64)] if args.quick else [(64, 64, 64), (128, 128, 128)]
    seconds = args.seconds if args.seconds is not None else (3.0 if args.quick else 6.0)
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])

    import monai

    print(
        f"torch {torch.__version__}, MONAI {monai.__version__}, {torch.get_num_threads()} CPU threads, "
        f"batch {args.batch}, 1 channel, load average {os.getloadavg()[0]:.1f}"
        + (", MONAI subset" if args.monai_subset else "")
    )
    if torch.cuda.is_available():
        print(f"CUDA device: {torch.cuda.get_device_name(0)}")
    header = (
        f"{'device':>6} {'patch':>12} {'input':>12} {'probabilities':>13} {'nnseg/s':>9} {'MONAI/s':>9} {'ratio':>6}"
    )
    print(header)
    print("-" * len(header))
    for device in devices:
        for patch in sizes:
            for all_on in (False, True):
                region, ours, theirs = bench(patch, args.batch, all_on, device, seconds, args.rounds, args.monai_subset)
                print(
                    f"{device.type:>6} {'x'.join(map(str, patch)):>12} {'x'.join(map(str, region)):>12} "
                    f"{'all p=1' if all_on else 'nnU-Net p':>13} {ours:>9.2f} {theirs:>9.2f} {ours / theirs:>5.1f}x",
                    flush=True,
                )


if __name__ == "__main__":
    main()
