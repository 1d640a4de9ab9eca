"""Run every bad-input probe of issue 10 against the ``nnseg`` CLI and print a table: exit code, traceback, message.

    python benchmarks/bad_input_probes.py                      # the installed nnseg
    python benchmarks/bad_input_probes.py --pythonpath OLD     # another checkout (e.g. a git worktree of main)

Builds a tiny phantom dataset and a 1-epoch model in a temporary folder (about a minute), then runs
each probe as a subprocess (``python -m nnseg ...``). The unit tests guard the same probes
(``tests/test_bad_input.py``); this script exists to print the before/after table for a note.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np


def _run(python: str, env: dict, args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([python, "-m", "nnseg", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=900)


def _message(result: subprocess.CompletedProcess) -> str:
    lines = [line for line in (result.stderr + result.stdout).splitlines() if line.strip()]
    errors = [line for line in lines if "error" in line.lower() or "warning" in line.lower() or "refus" in line.lower()]
    text = (errors or lines or [""])[-1].strip()
    return (text[:150] + "...") if len(text) > 150 else text


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument("--pythonpath", default=None, help="import nnseg from this checkout")
    parser.add_argument("--keep", type=Path, default=None, help="work folder to keep (default: a temp folder)")
    parser.add_argument("--only", default=None, help="run only the probes whose name contains this text")
    args = parser.parse_args()
    env = dict(os.environ)
    if args.pythonpath:
        env["PYTHONPATH"] = str(Path(args.pythonpath).resolve())
    root = args.keep or Path(tempfile.mkdtemp(prefix="nnseg_probes_"))
    root.mkdir(parents=True, exist_ok=True)

    def nnseg(*cli: str) -> subprocess.CompletedProcess:
        return _run(args.python, env, [str(c) for c in cli], root)

    raw, work = root / "raw", root / "work"
    setup = [
        ("synth", raw, "--cases", 4, "--test-cases", 2, "--shape", "20,24,24", "--seed", 1),
        ("plan", raw, "--work", work, "--preset", "cpu", "--preprocess", "--workers", 1),
        _train(work, "--val-iters", 1, "--loader-threads", 1, iters=2),
    ]
    for step in setup:
        result = nnseg(*step)
        if result.returncode:
            print(result.stderr, file=sys.stderr)
            return 1
    images = raw / "imagesTs"
    model = ["-m", work, "--device", "cpu", "--no-tta"]

    def image_with(name: str, change: Callable[[np.ndarray], np.ndarray]) -> Path:
        import nibabel as nib

        folder = root / name
        folder.mkdir(exist_ok=True)
        source = nib.load(sorted(images.glob("*_0000.nii.gz"))[0])
        data = change(np.asarray(source.dataobj).astype(np.float32))
        nib.save(nib.Nifti1Image(data, source.affine), folder / "case_0000.nii.gz")  # float32: NaN survives
        return folder

    def nan_voxel(a: np.ndarray) -> np.ndarray:
        a[a.shape[0] // 2, a.shape[1] // 2, a.shape[2] // 2] = np.nan
        return a

    def edited_plan(change: Callable[[dict], None]) -> Path:
        target = root / f"work_{len(list(root.glob('work_*')))}"
        shutil.copytree(work, target)
        plan = json.loads((target / "plans.json").read_text())
        change(plan["configurations"]["3d_fullres"])
        (target / "plans.json").write_text(json.dumps(plan))
        return target

    def inference_json(text: str) -> Path:
        target = root / f"inf_{len(list(root.glob('inf_*')))}"
        shutil.copytree(work, target)
        (target / "inference.json").write_text(text)
        return target

    def predictions(name: str, *extra: str) -> Path:
        out = root / name
        nnseg("predict", "-i", images, "-o", out, *model, *extra)
        return out

    def read_only_file() -> Path:
        path = root / "a_file"
        path.write_text("x")
        return path

    def truncated_cache() -> str:
        cache = work / "preprocessed" / "cpu_3d_fullres"
        npy = cache / "case_000.npy"
        npy.write_bytes(npy.read_bytes()[:200])
        return "preprocess"

    def stale_temp() -> Path:
        out = root / "stale"
        out.mkdir(exist_ok=True)
        (out / ".case_006.nii.gz.99999.tmp.nii.gz").write_bytes(b"half")
        return out

    def only_latest() -> Path:
        target = root / "latest_only"
        shutil.copytree(work, target)
        fold = target / "models" / "3d_fullres" / "fold_0"
        (fold / "checkpoint_final.pt").unlink()
        (fold / "checkpoint_best.pt").unlink(missing_ok=True)
        return target

    def pickle_bomb() -> Path:
        import pickle

        class Payload:
            def __reduce__(self):
                return (os.system, (f"touch {root / 'PWNED'}",))

        path = root / "bomb" / "fold_0" / "checkpoint_final.pt"
        path.parent.mkdir(parents=True, exist_ok=True)
        import torch

        torch.save({"format": 1, "x": Payload()}, path)
        del pickle
        return path.parent.parent

    probes: list[tuple[str, Callable[[], list]]] = [
        (
            "1 one NaN voxel in the input",
            lambda: ["predict", "-i", image_with("nan1", nan_voxel), "-o", root / "o_nan1", *model],
        ),
        (
            "1 all-NaN input",
            lambda: ["predict", "-i", image_with("nan_all", lambda a: a * np.nan), "-o", root / "o_nan_all", *model],
        ),
        ("2 --window-batch -1", lambda: ["predict", "-i", images, "-o", root / "o_wb", *model, "--window-batch", -1]),
        (
            "3 evaluate --dataset-json lab/custom.json",
            lambda: [
                "evaluate",
                "--pred",
                predictions("p_eval"),
                "--ref",
                raw / "labelsTs",
                "--dataset-json",
                _copy(raw / "dataset.json", root / "lab" / "custom.json"),
                "--out",
                root / "eval",
            ],
        ),
        (
            "4 ensemble -o A (an input) --overwrite",
            lambda: [
                "ensemble",
                "-i",
                predictions("A", "--save-probabilities"),
                predictions("B", "--save-probabilities"),
                "-o",
                root / "A",
                "--overwrite",
            ],
        ),
        (
            "5 resume after plans.json width changed",
            lambda: _train(
                edited_plan(
                    lambda c: c["network"].update(
                        features_per_stage=[f * 2 for f in c["network"]["features_per_stage"]]
                    )
                ),
                "--val-iters",
                1,
                epochs=2,
            ),
        ),
        (
            "5 resume after plans.json patch changed",
            lambda: _train(
                edited_plan(lambda c: c.update(patch_size=[p * 2 for p in c["patch_size"]])), "--val-iters", 1, epochs=2
            ),
        ),
        (
            "6 preprocess rerun after a truncated .npy",
            lambda: [truncated_cache(), "--work", work, "--workers", 1, "--config", "3d_fullres"],
        ),
        (
            "7 rerun with --save-probabilities",
            lambda: ["predict", "-i", images, "-o", predictions("p7"), *model, "--save-probabilities"],
        ),
        (
            "8 train --lr nan",
            lambda: _train(
                edited_plan(lambda c: None), "--lr", "nan", "--val-iters", 1, "--no-final-validation", iters=2
            ),
        ),
        (
            "9 only checkpoint_latest.pt",
            lambda: ["predict", "-i", images, "-o", root / "o9", "-m", only_latest(), "--device", "cpu", "--no-tta"],
        ),
        ("10 check: constant (all-zero) image", lambda: ["check", _constant_dataset(raw, root)]),
        (
            "-m path that does not exist",
            lambda: ["predict", "-i", images, "-o", root / "o_m", "-m", root / "nope", "--device", "cpu"],
        ),
        ("--max-hours -1", lambda: ["train", "--work", work, "--max-hours", -1, "--no-tracking", "--device", "cpu"]),
        (
            "--fresh --resume together",
            lambda: _train(work, "--fresh", "--resume"),
        ),
        (
            "input at 1/10 of the planned spacing",
            lambda: ["predict", "-i", _respaced(images, root, 0.1), "-o", root / "o_sp", *model],
        ),
        ("predict -o an existing file", lambda: ["predict", "-i", images, "-o", read_only_file(), *model]),
        ("predict -o a read-only folder (/sys)", lambda: ["predict", "-i", images, "-o", "/sys/nnseg_out", *model]),
        ("--step-size 0", lambda: ["predict", "-i", images, "-o", root / "o_s0", *model, "--step-size", 0]),
        ("--step-size -1", lambda: ["predict", "-i", images, "-o", root / "o_s1", *model, "--step-size", -1]),
        ("--step-size 2", lambda: ["predict", "-i", images, "-o", root / "o_s2", *model, "--step-size", 2]),
        ("--step-size nan", lambda: ["predict", "-i", images, "-o", root / "o_s3", *model, "--step-size", "nan"]),
        ("--window-batch 0", lambda: ["predict", "-i", images, "-o", root / "o_wb0", *model, "--window-batch", 0]),
        ("--device foo", lambda: ["predict", "-i", images, "-o", root / "o_dev", "-m", work, "--device", "foo"]),
        (
            "inference.json not JSON (predict)",
            lambda: ["predict", "-i", images, "-o", root / "o_i1", "-m", inference_json("{oops"), "--device", "cpu"],
        ),
        (
            "inference.json a list (predict)",
            lambda: ["predict", "-i", images, "-o", root / "o_i2", "-m", inference_json("[1, 2]"), "--device", "cpu"],
        ),
        (
            "inference.json missing key (postprocess)",
            lambda: [
                "postprocess",
                "-i",
                predictions("p_pp"),
                "-o",
                root / "o_pp",
                "--work",
                inference_json('{"configurations": ["3d_fullres"]}'),
            ],
        ),
        ("train --epochs 0", lambda: ["train", "--work", work, "--epochs", 0, "--no-tracking"]),
        ("train --fold -1", lambda: ["train", "--work", work, "--fold", -1, "--no-tracking"]),
        ("train --batch-size 0", lambda: ["train", "--work", work, "--batch-size", 0, "--no-tracking"]),
        ("train --lr -1", lambda: ["train", "--work", work, "--lr", -1, "--no-tracking"]),
        ("train --work a read-only folder (/sys)", lambda: ["train", "--work", "/sys", "--no-tracking"]),
        (
            "plans.json with a 4000^3 patch",
            lambda: _train(edited_plan(lambda c: c.update(patch_size=[4000, 4000, 4000]))),
        ),
        (
            "plans.json negative feature count",
            lambda: _train(
                edited_plan(
                    lambda c: c["network"].update(features_per_stage=[-f for f in c["network"]["features_per_stage"]])
                )
            ),
        ),
        (
            "plans.json NaN spacing",
            lambda: [
                "preprocess",
                "--work",
                edited_plan(lambda c: c.update(spacing=[float("nan")] * 3)),
                "--workers",
                1,
            ],
        ),
        ("stale temp file after kill -9", lambda: ["predict", "-i", images, "-o", stale_temp(), *model]),
        (
            "crafted checkpoint with a __reduce__ payload",
            lambda: [
                "predict",
                "-i",
                images,
                "-o",
                root / "o_bomb",
                "-m",
                pickle_bomb() / "fold_0" / "checkpoint_final.pt",
                "--device",
                "cpu",
            ],
        ),
    ]
    print("| probe | exit | traceback | message / outcome |")
    print("|---|---:|---|---|")
    for name, make in probes:
        if args.only and args.only not in name:
            continue
        try:
            command = make()
        except Exception as exc:  # a probe that cannot be set up with this version
            print(f"| {name} | - | - | setup failed: {exc} |")
            continue
        result = nnseg(*command)
        outcome = _message(result)
        if name.startswith("7 "):
            outcome += f" [npz written: {any((root / 'p7').glob('*.npz'))}]"
        if name.startswith("stale"):
            outcome += f" [temp left: {any((root / 'stale').glob('.*tmp*'))}]"
        if name.startswith("crafted"):
            outcome += f" [payload ran: {(root / 'PWNED').exists()}]"
        if name.startswith("4 "):
            outcome += f" [A's npz still there: {any((root / 'A').glob('*.npz'))}]"
        traceback = "yes" if "Traceback" in result.stderr else "no"
        print(f"| {name} | {result.returncode} | {traceback} | {outcome.replace('|', '/')} |", flush=True)
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)
    return 0


def _train(work: Path, *extra: object, epochs: int = 1, iters: int = 1) -> list:
    """``nnseg train`` of a tiny budget on the CPU without tracking, plus ``extra`` options."""
    return [
        "train",
        "--work",
        work,
        "--epochs",
        epochs,
        "--iters-per-epoch",
        iters,
        "--device",
        "cpu",
        "--no-tracking",
        *extra,
    ]


def _copy(source: Path, target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(source, target)
    return target


def _constant_dataset(raw: Path, root: Path) -> Path:
    import nibabel as nib

    target = root / "raw_constant"
    shutil.copytree(raw, target, dirs_exist_ok=True)
    image = sorted((target / "imagesTr").glob("*_0000.nii.gz"))[0]
    source = nib.load(image)
    nib.save(nib.Nifti1Image(np.zeros(source.shape, np.int16), source.affine, source.header), image)
    return target


def _respaced(images: Path, root: Path, factor: float) -> Path:
    import nibabel as nib

    folder = root / "respaced"
    folder.mkdir(exist_ok=True)
    source = nib.load(sorted(images.glob("*_0000.nii.gz"))[0])
    affine = source.affine.copy()
    affine[:3, :3] *= factor
    nib.save(nib.Nifti1Image(np.asarray(source.dataobj), affine), folder / "case_0000.nii.gz")
    return folder


if __name__ == "__main__":
    sys.exit(main())
