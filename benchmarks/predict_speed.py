"""Inference on this CPU: ``nnUNetv2_predict`` against ``nnseg predict``, trained models, same held-out volumes.

One CT phantom dataset (``--cases`` training cases, ``--test-cases`` held-out cases with labels). The
held-out cases get a scanner's field of view: ``--pad`` voxels of air (-1000 HU) each side (k, j, i)
around the body, which keeps the scale the models were trained on (both tools predict, and are scored
on, the same padded volumes).
Both tools train fold 0 for the same budget (``--epochs`` x ``--iters`` iterations; nnU-Net through
a trainer class this script writes into the nnU-Net install, ``nnUNetTrainer_nnsegBench<E>x<I>``,
which changes only the schedule's length) on nnU-Net's default 3d_fullres plan, which
``nnseg plan`` reproduces (the script checks patch and topology). nnseg also trains the ``cpu``
preset's model for the same budget. Then every command predicts the held-out images, on the CPU:

- nnUNetv2_predict: its default plan, TTA (all mirror axes), its defaults otherwise;
- nnseg, same plan, torch, TTA full (the same work as nnU-Net);
- nnseg, same plan, OpenVINO fp32, TTA full;
- nnseg, same plan, OpenVINO int8 (``nnseg export --int8``, Dice-checked at export), TTA full;
- nnseg, same plan, OpenVINO bf16 (``nnseg export --bf16``), TTA full, where the CPU has bf16;
- nnseg, ``cpu`` preset model, every default (``nnseg predict -m WORK -i -o``);
- the ``cpu`` model with ``--tta fast`` and with ``--skip-air`` (the Dice cost of each).

Each command runs twice; the table gives the second run (OpenVINO's compiled model cached, files
in the page cache), whole command (start-up, reading, writing), seconds per case, peak RSS of the
process tree, and Dice per class on the held-out labels. The first run's seconds are in
``results.json``.

    .venv/bin/python benchmarks/predict_speed.py --nnunet-python /tmp/nnunet-venv/bin/python \\
        [--out /tmp/nnseg_predict_speed] [--phase train|predict|all] [--epochs 12] [--iters 25]

``--out`` keeps the dataset, the trained models and the exports: a second call re-uses them
(``--phase predict`` measures only). Train while the machine is busy if you must; measure on a
quiet one.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _nnunet  # noqa: E402
from _rss import run_measured  # noqa: E402
from predict_work import padded_cases  # noqa: E402

from nnseg.api import plan  # noqa: E402
from nnseg.evaluation import evaluate_folders  # noqa: E402
from nnseg.io import read_volume, write_volume  # noqa: E402
from nnseg.preprocessing.preprocess import preprocess_dataset  # noqa: E402
from nnseg.synth import SynthConfig, generate_dataset  # noqa: E402
from nnseg.training.config import TrainConfig  # noqa: E402
from nnseg.training.loop import train  # noqa: E402

DATASET_ID = 998
DATASET = f"Dataset{DATASET_ID}_PredictSpeed"


@dataclass
class Row:
    name: str
    seconds: float
    first_seconds: float
    peak_mib: float
    dice: dict[str, float]


def nnunet_env(out: Path) -> dict[str, str]:
    env = _nnunet.nnunet_env(out, augmentation_workers=2)
    env["OMP_NUM_THREADS"] = str(os.cpu_count() or 1)
    return env


def run(command: list[str], env: dict[str, str] | None = None) -> float:
    started = time.perf_counter()
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}")
    return time.perf_counter() - started


def make_dataset(out: Path, args: argparse.Namespace) -> Path:
    raw = out / "raw"
    if not (raw / "dataset.json").is_file():
        shape = tuple(int(s) for s in args.shape.split(","))
        generate_dataset(
            raw,
            SynthConfig(num_cases=args.cases, num_test=args.test_cases, shape=shape, seed=args.seed),  # type: ignore[arg-type]
            show_progress=False,
        )
    return raw


def train_nnunet(out: Path, raw: Path, args: argparse.Namespace) -> tuple[Path, float | None]:
    """nnU-Net's fold 0 at the benchmark's budget; (model folder, training seconds or None when reused)."""
    env = nnunet_env(out)
    bin_dir = Path(args.nnunet_python).parent
    link = out / "nnunet" / "nnUNet_raw" / DATASET
    if not link.exists():
        link.symlink_to(raw.resolve())
    trainer = _nnunet.install_trainer(args.nnunet_python, "nnUNetTrainer_nnsegBench", args.epochs, args.iters)
    model = out / "nnunet" / "nnUNet_results" / DATASET / f"{trainer}__nnUNetPlans__3d_fullres"
    if (model / "fold_0" / "checkpoint_final.pth").is_file():
        return model, None
    preprocessed = out / "nnunet" / "nnUNet_preprocessed" / DATASET / "nnUNetPlans_3d_fullres"
    if not preprocessed.is_dir():
        run(
            [str(bin_dir / "nnUNetv2_plan_and_preprocess"), "-d", str(DATASET_ID), "-c", "3d_fullres", "-np", "2"],
            env,
        )
    started = time.perf_counter()
    run([str(bin_dir / "nnUNetv2_train"), str(DATASET_ID), "3d_fullres", "0", "-tr", trainer, "-device", "cpu"], env)
    return model, time.perf_counter() - started


def train_nnseg(raw: Path, work: Path, preset: str, args: argparse.Namespace) -> float | None:
    """nnseg's fold 0 at the benchmark's budget; training seconds, or None when reused."""
    if (work / "models" / "3d_fullres" / "fold_0" / "checkpoint_final.pt").is_file():
        return None
    if not (work / "plans.json").is_file():
        plan(raw, work, preset=preset, show_progress=False)
    preprocess_dataset(work, configurations=["3d_fullres"], show_progress=False)
    started = time.perf_counter()
    train(
        work,
        TrainConfig(fold=0, epochs=args.epochs, iters_per_epoch=args.iters, val_iters=5, device="cpu", tracking=False),
        show_progress=False,
    )
    return time.perf_counter() - started


def check_same_plan(out: Path, work: Path) -> str:
    """nnseg's default plan must equal nnU-Net's (patch, batch, kernels, strides, features); a one-line description."""
    theirs = json.loads((out / "nnunet" / "nnUNet_preprocessed" / DATASET / "nnUNetPlans.json").read_text())
    config = theirs["configurations"]["3d_fullres"]
    ours = json.loads((work / "plans.json").read_text())["configurations"]["3d_fullres"]
    kwargs = config["architecture"]["arch_kwargs"]
    pairs = {
        "patch": (ours["patch_size"], config["patch_size"]),
        "batch": (ours["batch_size"], config["batch_size"]),
        "kernels": (ours["network"]["kernel_sizes"], kwargs["kernel_sizes"]),
        "strides": (ours["network"]["strides"], kwargs["strides"]),
        "features": (ours["network"]["features_per_stage"], kwargs["features_per_stage"]),
    }
    differ = {k: v for k, v in pairs.items() if v[0] != v[1]}  # both read from JSON: lists and ints
    if differ:
        raise RuntimeError(f"nnseg's default plan differs from nnU-Net's: {differ}")
    return (
        f"patch {config['patch_size']}, batch {config['batch_size']}, "
        f"features {kwargs['features_per_stage'][0]}..{kwargs['features_per_stage'][-1]}"
    )


def held_out(raw: Path, out: Path, pad: tuple[int, int, int]) -> tuple[Path, Path]:
    """(images, labels) folders of the held-out cases padded with air by ``pad`` voxels each side."""
    images, labels = out / "images", out / "labels"
    labels.mkdir(parents=True, exist_ok=True)
    for image_path, reference in padded_cases(raw, images, pad):
        target = labels / image_path.name.replace("_0000", "")
        if not target.is_file():
            write_volume(target, reference, read_volume(image_path).geometry, is_label=True)
    return images, labels


def dice(predictions: Path, raw: Path, references: Path) -> dict[str, float]:
    labels = json.loads((raw / "dataset.json").read_text())["labels"]
    summary = evaluate_folders(predictions, references, {k: v for k, v in labels.items() if v}, show_progress=False)
    per_class = summary.mean_dice_per_class
    return {**per_class, "mean": sum(per_class.values()) / len(per_class)}


def measure(
    name: str, command: list[str], output: Path, raw: Path, references: Path, env: dict[str, str] | None = None
) -> Row:
    """Run ``command`` twice into a fresh ``output``; the second run counts."""
    times = []
    peak = 0.0
    for _ in range(2):
        shutil.rmtree(output, ignore_errors=True)
        measured = run_measured(command, env)
        times.append(measured.seconds)
        peak = measured.peak_mib
    row = Row(name, times[1], times[0], peak, dice(output, raw, references))
    print(f"  {name}: {row.seconds:.1f} s (first {row.first_seconds:.1f} s), {peak:.0f} MiB, ", end="")
    print(f"Dice {row.dice['mean']:.4f}")
    return row


def bf16_supported() -> bool:
    try:
        import openvino as ov
    except ImportError:
        return False
    return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def predict_all(out: Path, raw: Path, nnunet_model: Path, args: argparse.Namespace) -> list[Row]:
    nnseg_bin = str(Path(sys.executable).with_name("nnseg"))
    same, cpu = out / "nnseg_same_plan", out / "nnseg_cpu"
    pad = tuple(int(v) for v in args.pad.split(","))
    images, references = held_out(raw, out / f"held_out_pad_{'_'.join(map(str, pad))}", pad)  # type: ignore[arg-type]
    pred = out / "predictions"
    exports = out / "exports"
    int8, bf16 = exports / "int8", exports / "bf16"
    export = [nnseg_bin, "export", "-m", str(same), "-f", "0", "--format", "openvino", "--force", "-o"]
    refused: dict[str, str] = {}
    for folder, flag in ((int8, "--int8"), (bf16, "--bf16")):
        if flag == "--bf16" and not bf16_supported():
            refused[flag] = "this CPU has no bf16"
        elif not (folder / "manifest.json").is_file():
            try:
                print(run_measured([*export, str(folder), flag]).stdout.strip())
            except RuntimeError as error:  # e.g. the export's parity check refused the model
                refused[flag] = str(error).strip().splitlines()[-1]
                print(f"  no {flag} row: {refused[flag]}")
    nnunet_cmd = [
        str(Path(args.nnunet_python).parent / "nnUNetv2_predict"),
        "-i", str(images), "-o", str(pred / "nnunet"), "-d", str(DATASET_ID), "-c", "3d_fullres", "-f", "0",
        "-tr", nnunet_model.name.split("__")[0], "-device", "cpu", "--disable_progress_bar",
    ]  # fmt: skip

    def ours(model: Path, folder: str, *extra: str) -> list[str]:
        return [nnseg_bin, "predict", "-m", str(model), "-i", str(images), "-o", str(pred / folder), *extra]

    rows = [
        measure("nnUNetv2_predict (default plan, TTA)", nnunet_cmd, pred / "nnunet", raw, references, nnunet_env(out))
    ]
    variants = [
        ("nnseg same plan, torch fp32, TTA full", ours(same, "same_torch", "--backend", "torch"), "same_torch"),
        ("nnseg same plan, OpenVINO fp32, TTA full", ours(same, "same_ov", "--backend", "openvino"), "same_ov"),
    ]
    if "--int8" not in refused:
        variants.append(("nnseg same plan, OpenVINO int8, TTA full", ours(int8, "same_int8"), "same_int8"))
    if "--bf16" not in refused:
        variants.append(("nnseg same plan, OpenVINO bf16, TTA full", ours(bf16, "same_bf16"), "same_bf16"))
    variants += [
        ("nnseg default: cpu preset, every default", ours(cpu, "cpu_default"), "cpu_default"),
        ("nnseg cpu preset, --tta fast", ours(cpu, "cpu_fast", "--tta", "fast"), "cpu_fast"),
        ("nnseg cpu preset, --skip-air", ours(cpu, "cpu_skip", "--skip-air"), "cpu_skip"),
    ]
    rows += [measure(name, command, pred / folder, raw, references) for name, command, folder in variants]
    return rows


def table(rows: list[Row], cases: int) -> str:
    classes = [c for c in rows[0].dice if c != "mean"]
    base = rows[0].seconds
    dice_columns = " | ".join(f"Dice {c}" for c in classes)
    lines = [
        f"| command | s / case | speed-up vs nnU-Net | peak RSS (MiB) | {dice_columns} | mean Dice |",
        "|---|---:|---:|---:|" + "---:|" * (len(classes) + 1),
    ]
    for row in rows:
        figures = " | ".join(f"{row.dice[c]:.4f}" for c in [*classes, "mean"])
        lines.append(
            f"| {row.name} | {row.seconds / cases:.2f} | {base / row.seconds:.2f}x | {row.peak_mib:.0f} | {figures} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nnunet-python", required=True, help="python of a venv with nnunetv2 installed")
    parser.add_argument("--out", type=Path, default=Path("/tmp/nnseg_predict_speed"))
    parser.add_argument("--phase", choices=("train", "predict", "all"), default="all")
    parser.add_argument("--cases", type=int, default=12)
    parser.add_argument("--test-cases", type=int, default=4)
    parser.add_argument("--shape", default="56,64,64")
    parser.add_argument("--pad", default="12,16,16", help="air voxels added each side of the held-out cases (k,j,i)")
    parser.add_argument("--seed", type=int, default=41)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--iters", type=int, default=25)
    args = parser.parse_args()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    raw = make_dataset(out, args)
    results_file = out / "results.json"
    results = json.loads(results_file.read_text()) if results_file.is_file() else {}
    nnunet_model, seconds = train_nnunet(out, raw, args)
    results.setdefault("train_seconds", {})
    if seconds is not None:
        results["train_seconds"]["nnunet"] = seconds
    for name, preset in (("nnseg_same_plan", "default"), ("nnseg_cpu", "cpu")):
        seconds = train_nnseg(raw, out / name, preset, args)
        if seconds is not None:
            results["train_seconds"][name] = seconds
    results["plan"] = check_same_plan(out, out / "nnseg_same_plan")
    results["budget"] = f"{args.epochs} x {args.iters} iterations, fold 0"
    results_file.write_text(json.dumps(results, indent=2))
    print(f"trained ({results['budget']}); default plan {results['plan']}; training seconds {results['train_seconds']}")
    if args.phase == "train":
        return 0
    cases = len(list((raw / "imagesTs").glob("*_0000.nii.gz")))
    rows = predict_all(out, raw, nnunet_model, args)
    results["rows"] = [asdict(r) for r in rows]
    results["cases"] = cases
    results_file.write_text(json.dumps(results, indent=2))
    print(
        f"\n{cases} held-out CT phantoms of ~{args.shape} voxels, padded by {args.pad} voxels of air each side; "
        f"models trained {results['budget']}; "
        f"nnU-Net's default plan: {results['plan']}; CPU ({os.cpu_count()} cores); second of two runs, "
        "whole command\n"
    )
    print(table(rows, cases))
    return 0


if __name__ == "__main__":
    sys.exit(main())
