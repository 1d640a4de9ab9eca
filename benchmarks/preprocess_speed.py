"""Wall time and peak memory of plan + preprocess: nnseg vs nnU-Net v2 on the same phantom dataset.

nnseg runs ``nnseg plan RAW --work W --preprocess --workers N`` (which also checks the
dataset). nnU-Net runs ``nnUNetv2_plan_and_preprocess -d ID`` from the venv given with
``--nnunet-python`` (its defaults: 8 fingerprint processes, 8/4/8 preprocessing
processes), or with ``-npfp N -np N N N`` when ``--nnunet-np N`` is given. Peak memory is the
largest total RSS of the whole process tree (main + workers), sampled every 50 ms (``benchmarks/_rss.py``).

    .venv/bin/python benchmarks/preprocess_speed.py --nnunet-python /path/to/nnunet-venv/bin/python \\
        [--cases 12] [--shape 110,122,134] [--workers 2] [--nnunet-np 2]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

from _rss import run_measured

from nnseg.synth import SynthConfig, generate_dataset


def nnunet_command(raw: Path, scratch: Path, python: str, np_: int | None) -> tuple[list[str], dict[str, str]]:
    env = dict(os.environ)
    for key in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        (scratch / key).mkdir(parents=True, exist_ok=True)
        env[key] = str(scratch / key)
    link = scratch / "nnUNet_raw" / "Dataset999_Bench"
    if not link.exists():
        link.symlink_to(raw.resolve())
    shutil.rmtree(scratch / "nnUNet_preprocessed" / "Dataset999_Bench", ignore_errors=True)
    command = [str(Path(python).with_name("nnUNetv2_plan_and_preprocess")), "-d", "999", "--no_pbar"]
    if np_:
        command += ["-npfp", str(np_), "-np", str(np_), str(np_), str(np_)]
    return command, env


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nnunet-python", default=None)
    parser.add_argument("--nnunet-np", type=int, default=None, help="processes for nnU-Net (default: its own)")
    parser.add_argument("--cases", type=int, default=12)
    parser.add_argument("--shape", default="110,122,134")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="nnseg_pp_bench_"))
    raw = out / "raw"
    shape = tuple(int(s) for s in args.shape.split(","))
    if not (raw / "dataset.json").is_file():
        generate_dataset(
            raw, SynthConfig(num_cases=args.cases, shape=shape, spacing=(1.0, 1.0, 1.0), seed=31), show_progress=False
        )
    work = out / "nnseg_work"
    shutil.rmtree(work, ignore_errors=True)
    nnseg_bin = str(Path(sys.executable).with_name("nnseg"))
    ours = run_measured(
        [nnseg_bin, "plan", str(raw), "--work", str(work), "--preprocess", "--workers", str(args.workers)]
    )
    rows = [("nnseg plan --preprocess", ours.seconds, ours.peak_mib)]
    if args.nnunet_python:
        command, env = nnunet_command(raw, out / "nnunet", args.nnunet_python, args.nnunet_np)
        theirs = run_measured(command, env)
        rows.append(("nnUNetv2_plan_and_preprocess", theirs.seconds, theirs.peak_mib))
    print(f"{args.cases} CT phantoms of ~{'x'.join(map(str, shape))} voxels, 2d + 3d_fullres (+3d_lowres if planned)")
    print("| tool | wall (s) | peak RSS, process tree (MiB) |\n|---|---:|---:|")
    for name, seconds, rss in rows:
        print(f"| {name} | {seconds:.1f} | {rss:.0f} |")
    if len(rows) == 2:
        print(f"nnU-Net / nnseg: wall {rows[1][1] / rows[0][1]:.2f}x, peak RSS {rows[1][2] / rows[0][2]:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
