"""Peak memory of ``nnseg predict`` on one large CT, as a multiple of the image's float32 size.

Writes a synthetic CT (default 512x512x600 int16 HU, ``.nii.gz``: body ellipse, organ,
spine, noise; air -1000 everywhere else, so the nonzero box is the whole volume as in real
CT), plans a tiny U-Net on a few small phantoms at ~5 mm (randomly initialised: memory does
not depend on the weights), and runs ``nnseg predict --device cpu --no-tta`` on the CT while
sampling the RSS of the whole process tree (``benchmarks/_rss.py``). The network sees the
image at 5 mm (about a million voxels, a few seconds on a CPU), so the peak comes from the
full-size steps around it: reading, cropping, normalizing, resampling down, resampling the
probabilities back up, argmax, uncropping and writing.

Prints image shape, float32 image bytes, peak RSS, peak / float32 image, wall and stage
times, and PASS/FAIL against ``--bound`` (exit status 1 on FAIL).

    .venv/bin/python benchmarks/predict_memory.py [--shape 600,512,512] [--bound 4.0] [--keep /tmp/nnseg_mem]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from _rss import run_measured

from nnseg import __version__
from nnseg.api import plan
from nnseg.checkpoint import Checkpoint
from nnseg.io import Geometry, read_geometry, write_volume
from nnseg.networks import build_network
from nnseg.synth import SynthConfig, generate_dataset

#: Voxel size of the large CT in mm, array order (k, j, i): 1 mm slices, 0.8 mm in plane.
CT_SPACING = (1.0, 0.8, 0.8)
#: Nominal voxel size of the phantoms the model is planned on (the network's grid); k coarsest, as in CT.
MODEL_SPACING = (5.5, 4.5, 4.5)


def write_ct(path: Path, shape: tuple[int, int, int], seed: int = 0) -> Path:
    """A CT-like int16 volume in HU, built slice by slice: air, body ellipse, organ ellipsoid, spine, noise."""
    rng = np.random.default_rng(seed)
    k, j, i = shape
    extent = np.array(shape) * np.array(CT_SPACING)
    y = ((np.arange(j) - (j - 1) / 2) * CT_SPACING[1])[:, None]
    x = ((np.arange(i) - (i - 1) / 2) * CT_SPACING[2])[None, :]
    volume = np.empty(shape, dtype=np.int16)
    for z in range(k):
        t = (z - (k - 1) / 2) / max(k / 2, 1)  # -1 .. 1 along the body
        taper = 1 - 0.15 * t**2
        body = (x / (0.42 * extent[2] * taper)) ** 2 + (y / (0.30 * extent[1] * taper)) ** 2 <= 1
        organ_r = 1 - ((t - 0.1) / 0.5) ** 2
        organ = ((x + 0.12 * extent[2]) / (0.16 * extent[2])) ** 2 + (y / (0.12 * extent[1])) ** 2 <= max(organ_r, 0)
        spine = np.hypot(x, y + 0.2 * extent[1]) <= 0.04 * extent[2]
        hu = np.full((j, i), -1000.0, dtype=np.float32)
        hu[body] = 30.0 + rng.normal(0, 18, int(body.sum()))
        hu[organ & body] += 45.0
        hu[spine & body] = 450.0
        volume[z] = np.clip(np.round(hu), -1024, 3071)
    affine = np.diag([-CT_SPACING[2], -CT_SPACING[1], CT_SPACING[0], 1.0])
    affine[:3, 3] = [0.5 * extent[2], 0.5 * extent[1], -0.5 * extent[0]]
    return write_volume(path, volume, Geometry(affine, shape, qform_code=1, sform_code=1))


def make_model(work: Path) -> tuple[Path, str]:
    """A randomly initialised 3d_fullres checkpoint planned (``cpu`` preset) on small phantoms at ~5 mm."""
    raw = work / "phantoms"
    if not (raw / "dataset.json").is_file():
        generate_dataset(
            raw, SynthConfig(num_cases=4, shape=(48, 64, 64), spacing=MODEL_SPACING, seed=5), show_progress=False
        )
    planned = plan(raw, work / "model", preset="cpu", workers=1, show_progress=False).plan
    config = planned.configuration("3d_fullres")
    torch.manual_seed(0)  # the same weights every run, so predictions can be compared between runs
    network = build_network(config.network, len(planned.channel_names), planned.num_classes)
    checkpoint = Checkpoint(
        plan=planned,
        configuration="3d_fullres",
        fold=0,
        network_state=network.state_dict(),
        deep_supervision=True,
        finished=True,
        epochs_trained=0,
        nnseg_version=__version__,
    )
    path = checkpoint.save(work / "model" / "models" / "3d_fullres" / "fold_0" / "checkpoint_final.pt")
    spacing = "x".join(f"{s:.2f}" for s in config.spacing)
    return (
        path,
        f"3d_fullres at {spacing} mm, patch {'x'.join(map(str, config.patch_size))}, "
        f"transpose {list(planned.transpose_forward)}",
    )


def stage_times(stdout: str) -> str:
    """The ``time per stage: ...`` line ``nnseg predict`` prints."""
    for line in stdout.splitlines():
        if line.startswith("time per stage:"):
            return line.split(":", 1)[1].strip()
    return "?"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", default="600,512,512", help="CT shape k,j,i (array order; default 600,512,512)")
    parser.add_argument("--bound", type=float, default=4.0, help="allowed peak RSS / float32 image bytes (4.0)")
    parser.add_argument(
        "--keep", type=Path, default=None, help="work folder to use and keep (the CT and model are reused when present)"
    )
    args = parser.parse_args()
    shape = tuple(int(s) for s in args.shape.split(","))
    if len(shape) != 3 or min(shape) < 16:
        parser.error(f"--shape needs three sizes >= 16, got {args.shape}")
    work = args.keep or Path(tempfile.mkdtemp(prefix="nnseg_predict_mem_"))
    try:
        image = work / "images" / f"ct_{'x'.join(map(str, shape))}_0000.nii.gz"
        if not image.is_file():
            write_ct(image, shape)
        checkpoint, model = make_model(work)
        nnseg = str(Path(sys.executable).with_name("nnseg"))
        run = run_measured(
            [
                nnseg,
                "predict",
                "-i",
                str(image),
                "-o",
                str(work / "predictions"),
                "-m",
                str(checkpoint),
                "--device",
                "cpu",
                "--no-tta",
                "--overwrite",
            ]
        )
        predicted, _ = read_geometry(work / "predictions" / image.name.replace("_0000", ""))
        if predicted.shape != shape:
            raise RuntimeError(f"prediction has shape {predicted.shape}, the image {shape}")
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    image_bytes = int(np.prod(shape)) * 4
    ratio = run.peak_mib * 2**20 / image_bytes
    verdict = "PASS" if ratio <= args.bound else "FAIL"
    print(f"nnseg predict, CPU, no TTA; model: {model}")
    print(
        "| image (k, j, i) | float32 image | peak RSS, process tree (MiB) | peak / image | wall (s) | stages | bound |"
    )
    print("|---|---:|---:|---:|---:|---|---|")
    print(
        f"| {'x'.join(map(str, shape))} int16 | {image_bytes:,} B ({image_bytes / 2**20:.0f} MiB) "
        f"| {run.peak_mib:.0f} | {ratio:.2f} | {run.seconds:.1f} | {stage_times(run.stdout)} "
        f"| {verdict} (<= {args.bound:g}x = {args.bound * image_bytes / 2**20:.0f} MiB) |"
    )
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
