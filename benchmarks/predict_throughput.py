"""Throughput on many cases: ``nnseg predict`` over 20 small CT phantoms, s/case and peak RSS of the process tree.

Rows: one process without overlap (read -> network -> write, one after the other), one process
with overlap (case i+1 read and case i-1 written while the network runs on case i; the default),
two processes by ``--num-parts 2`` (each with one intra-op thread, as torchrun gives its ranks),
and ``torchrun --nproc_per_node 2``. Every row predicts the same cases into a fresh folder from
the same model (cpu preset, a few training iterations: the weights do not change the cost), and
the label maps of all rows are checked to be identical.

    .venv/bin/python benchmarks/predict_throughput.py [--cases 20] [--shape 64,96,96] [--out /tmp/nnseg_throughput]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _rss import run_measured  # noqa: E402

import nnseg  # noqa: E402
from nnseg.preprocessing.preprocess import preprocess_dataset  # noqa: E402
from nnseg.synth import SynthConfig, generate_dataset  # noqa: E402
from nnseg.training.config import TrainConfig  # noqa: E402
from nnseg.training.loop import train  # noqa: E402


def prepare(out: Path, cases: int, shape: tuple[int, int, int]) -> tuple[Path, Path]:
    raw, work = out / "raw", out / "work"
    if not (raw / "dataset.json").is_file():
        generate_dataset(raw, SynthConfig(num_cases=6, num_test=cases, shape=shape, seed=8), show_progress=False)
    if not (work / "models" / "3d_fullres" / "fold_0" / "checkpoint_final.pt").is_file():
        nnseg.plan(raw, work, preset="cpu", show_progress=False)
        preprocess_dataset(work, configurations=["3d_fullres"], show_progress=False)
        config = TrainConfig(fold=0, epochs=1, iters_per_epoch=5, val_iters=1, device="cpu", tracking=False)
        train(work, config, show_progress=False)
    return raw / "imagesTs", work


def digest(folder: Path) -> str:
    sha = hashlib.sha256()
    for path in sorted(folder.glob("*.nii.gz")):
        sha.update(path.name.encode() + path.read_bytes())
    return sha.hexdigest()[:12]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=20)
    parser.add_argument("--shape", default="64,96,96")
    parser.add_argument("--out", type=Path, default=Path("/tmp/nnseg_throughput"))
    args = parser.parse_args()
    images, work = prepare(args.out, args.cases, tuple(int(v) for v in args.shape.split(",")))  # type: ignore[arg-type]
    base = [sys.executable, "-m", "nnseg", "predict", "-i", str(images), "-m", str(work), "--device", "cpu"]
    one_thread = {**os.environ, "OMP_NUM_THREADS": "1"}
    rows = []
    for name in ("1 process, no overlap", "1 process, overlap", "2 processes (--num-parts 2)", "torchrun, 2 ranks"):
        folder = args.out / "predictions" / name.split(",")[0].replace(" ", "_") / name[-7:].replace(" ", "_")
        subprocess.run(["rm", "-rf", str(folder)], check=True)
        if name.startswith("1 process"):
            extra = ["--no-overlap"] if "no overlap" in name else []
            measured = run_measured([*base, "-o", str(folder), *extra])
            seconds, peak = measured.seconds, measured.peak_mib
        elif name.startswith("2 processes"):
            started = time.perf_counter()
            parts = [
                subprocess.Popen(
                    [*base, "-o", str(folder), "--num-parts", "2", "--part-id", str(part)],
                    env=one_thread,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                )
                for part in (0, 1)
            ]
            for process in parts:
                if process.wait() != 0:
                    raise RuntimeError(process.stderr.read().decode()[-2000:] if process.stderr else "failed")
            seconds, peak = time.perf_counter() - started, float("nan")
        else:
            launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
            measured = run_measured([*launcher, *base[1:], "-o", str(folder)])
            seconds, peak = measured.seconds, measured.peak_mib
        rows.append((name, seconds, peak, digest(folder)))
        print(f"{name:<30} {seconds:7.1f} s  {seconds / args.cases:6.2f} s/case  peak {peak:7.0f} MiB", flush=True)
    baseline = rows[0][1]
    print(f"\n{args.cases} CT phantoms of about {args.shape} voxels, 2-core CPU\n")
    print("| run | wall (s) | s/case | speed-up | peak RSS, process tree (MiB) | label maps |")
    print("|---|---|---|---|---|---|")
    for name, seconds, peak, sha in rows:
        same = "identical" if sha == rows[0][3] else f"DIFFER ({sha})"
        mib = "-" if peak != peak else f"{peak:.0f}"
        print(f"| {name} | {seconds:.1f} | {seconds / args.cases:.2f} | {baseline / seconds:.2f}x | {mib} | {same} |")


if __name__ == "__main__":
    main()
