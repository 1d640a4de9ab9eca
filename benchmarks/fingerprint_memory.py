"""Peak memory of ``nnseg plan`` (check + fingerprint + plan) for 5 vs 50 cases of the same kind.

Writes 50 phantom cases once, builds a 5-case view of the same files, and runs
``/usr/bin/time -v nnseg plan`` on each (1 and 2 workers), printing peak RSS and wall time.
Peak RSS from GNU time is the largest single process of the run (with 2 workers: the
largest of the main process and the workers).

    .venv/bin/python benchmarks/fingerprint_memory.py [--out /tmp/nnseg_fp_mem] [--shape 96,128,128]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path

from nnseg.synth import SynthConfig, generate_dataset


def subset_view(full: Path, out: Path, n_cases: int) -> Path:
    """A dataset folder holding symlinks to the first ``n_cases`` cases of ``full``."""
    if (out / "dataset.json").is_file():
        return out
    for folder in ("imagesTr", "labelsTr"):
        (out / folder).mkdir(parents=True)
    meta = json.loads((full / "dataset.json").read_text())
    for index in range(n_cases):
        case = f"case_{index:03d}"
        for path in (full / "imagesTr").glob(f"{case}_*"):
            os.symlink(path, out / "imagesTr" / path.name)
        os.symlink(full / "labelsTr" / f"{case}.nii.gz", out / "labelsTr" / f"{case}.nii.gz")
    meta["numTraining"] = n_cases
    (out / "dataset.json").write_text(json.dumps(meta))
    return out


def measure(dataset: Path, work: Path, workers: int) -> tuple[float, float]:
    """(peak RSS in MiB, wall seconds) of one ``nnseg plan`` run."""
    nnseg = Path(sys.executable).with_name("nnseg")
    result = subprocess.run(
        ["/usr/bin/time", "-v", str(nnseg), "plan", str(dataset), "--work", str(work), "--workers", str(workers)],
        capture_output=True,
        text=True,
        check=True,
    )
    rss_kib = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", result.stderr).group(1))
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)", result.stderr).group(1)
    seconds = sum(float(part) * 60**i for i, part in enumerate(reversed(wall.split(":"))))
    return rss_kib / 1024, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("/tmp/nnseg_fp_mem"))
    parser.add_argument("--shape", default="96,128,128")
    args = parser.parse_args()
    shape = tuple(int(s) for s in args.shape.split(","))
    full = args.out / "cases50"
    if not (full / "dataset.json").is_file():
        generate_dataset(full, SynthConfig(num_cases=50, shape=shape, seed=7), show_progress=False)
    few = subset_view(full, args.out / "cases5", 5)
    print("| cases | workers | peak RSS (MiB) | wall (s) |\n|------:|--------:|---------------:|---------:|")
    results = {}
    for workers in (1, 2):
        for name, dataset in (("5", few), ("50", full)):
            rss, seconds = measure(dataset, args.out / f"work_{name}_{workers}", workers)
            results[(name, workers)] = rss
            print(f"| {name:>5} | {workers:>7} | {rss:>14.0f} | {seconds:>8.1f} |")
    for workers in (1, 2):
        print(
            f"workers={workers}: peak RSS 50 cases / 5 cases = {results[('50', workers)] / results[('5', workers)]:.2f}"
        )


if __name__ == "__main__":
    main()
