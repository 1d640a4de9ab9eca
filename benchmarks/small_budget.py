"""Small structures on a small budget: the nnU-Net recipe against nnseg's small_budget recipe.

Data: MR-like phantoms of about 50^3 voxels at 2.8 mm holding three structure classes of about
1,200, 100 and 30 voxels (the smallest as three separate blobs per case); 16 training cases,
8 held-out test cases. Plan: preset ``cpu``. For each recipe and each budget (100, 300, 1,000
iterations as 25-iteration epochs, each a full run with its own schedule) fold 0 is trained, the
held-out cases predicted from the raw images (sliding window, mirroring) and scored per class.
Both recipes train the same network on the same patches, so equal iterations are equal wall
time; the step time column shows it.

    .venv/bin/python benchmarks/small_budget.py [--iterations 100 300 1000] [--out /tmp/nnseg_small_budget]
    .venv/bin/python benchmarks/small_budget.py --iterations 300 \\
        --variant adamw_1e-3:recipe=small_budget,initial_lr=0.001   # any TrainConfig fields
    .venv/bin/python benchmarks/small_budget.py --modality CT --shape 80,96,96 --spacing 1.5,1.2,1.2 \\
        --structure organ:8000 --structure nodule:300 --structure lesion:40x4 --out /tmp/nnseg_small_budget_ct

``--out`` holds one dataset (made on the first run, reused after); use one folder per dataset.

A run trained with class weights (small_budget) is scored twice: as ``nnseg predict`` runs it (with the
checkpoint's logit adjustment) and with the weights as trained (``unadjusted_dice``).

Prints a table (per-class and mean Dice, step time, wall time) and writes ``small_budget.png``
(Dice per class against iterations, one line per recipe) and ``results.json`` into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

import nnseg
from nnseg.checkpoint import Checkpoint
from nnseg.evaluation.evaluate import evaluate_folders
from nnseg.inference.batch import predict_folder
from nnseg.inference.predictor import Predictor
from nnseg.preprocessing.preprocess import preprocess_dataset
from nnseg.synth import Structure, SynthConfig, generate_dataset
from nnseg.training.config import TrainConfig
from nnseg.training.loop import train

ITERS_PER_EPOCH = 25
STRUCTURES = ("large:1200", "medium:100", "small:30x3")


def dataset_config(args: argparse.Namespace) -> SynthConfig:
    return SynthConfig(
        num_cases=16,
        num_test=8,
        shape=tuple(int(v) for v in args.shape.split(",")),  # type: ignore[arg-type]
        spacing=tuple(float(v) for v in args.spacing.split(",")),  # type: ignore[arg-type]
        modality=args.modality,
        anisotropic=args.anisotropic,
        structures=tuple(Structure.parse(s) for s in args.structure or STRUCTURES),
        seed=args.seed,
    )


def parse_variant(text: str) -> tuple[str, dict[str, Any]]:
    """``NAME:field=value,field=value`` -> (NAME, TrainConfig fields); a bare NAME is ``recipe=NAME``."""
    name, _, assignments = text.partition(":")
    fields: dict[str, Any] = {} if assignments else {"recipe": name}
    for item in filter(None, assignments.split(",")):
        key, _, value = item.partition("=")
        fields[key] = {"yes": True, "no": False}.get(value, value)
        if value.replace(".", "").replace("e-", "").isdigit():
            fields[key] = float(value)
    return name, fields


def run_one(work: Path, raw: Path, name: str, fields: dict[str, Any], iterations: int, seed: int) -> dict[str, Any]:
    epochs = max(1, iterations // ITERS_PER_EPOCH)
    config = TrainConfig(
        fold=0,
        epochs=epochs,
        iters_per_epoch=ITERS_PER_EPOCH,
        val_iters=2,
        device="cpu",
        tracking=False,
        final_validation=False,
        seed=seed,
        **fields,
    )
    started = time.perf_counter()
    train(work, config, resume=False, show_progress=False)
    train_s = time.perf_counter() - started
    models = work / "models" / "3d_fullres"
    per_class = score(Predictor.from_checkpoints(models, folds=[0], device="cpu"), raw, work, f"{name}_{iterations}")
    row = {
        "variant": name,
        "fields": fields,
        "iterations": epochs * ITERS_PER_EPOCH,
        "dice": per_class,
        "mean_dice": float(np.mean(list(per_class.values()))),
        "train_s": train_s,
        "step_s": train_s / (epochs * ITERS_PER_EPOCH),
    }
    checkpoint = Checkpoint.load(models / "fold_0" / "checkpoint_final.pt")
    if checkpoint.logit_adjustment is not None:  # what the logit adjustment changes: the weights as trained
        raw_weights = Predictor(
            checkpoint.plan,
            checkpoint.configuration,
            [checkpoint.network_state],
            device="cpu",
            deep_supervision_heads=checkpoint.deep_supervision,
        )
        unadjusted = score(raw_weights, raw, work, f"{name}_{iterations}_unadjusted")
        row["unadjusted_dice"] = unadjusted
        row["unadjusted_mean_dice"] = float(np.mean(list(unadjusted.values())))
    return row


def score(predictor: Predictor, raw: Path, work: Path, name: str) -> dict[str, float]:
    """Dice per class of ``predictor`` on the held-out cases."""
    out = work / "predictions" / name
    shutil.rmtree(out, ignore_errors=True)
    predict_folder(predictor, raw / "imagesTs", out, show_progress=False)
    labels = json.loads((raw / "dataset.json").read_text())["labels"]
    summary = evaluate_folders(out, raw / "labelsTs", labels, show_progress=False).to_dict()
    return {k: float(v) for k, v in summary["mean_dice_per_class"].items()}


def plot(results: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    classes = list(results[0]["dice"])
    figure, axes = plt.subplots(1, len(classes) + 1, figsize=(4 * (len(classes) + 1), 3.6), sharey=True)
    for variant in dict.fromkeys(r["variant"] for r in results):
        rows = sorted((r for r in results if r["variant"] == variant), key=lambda r: r["iterations"])
        x = [r["iterations"] for r in rows]
        for axis, cls in zip(axes, classes):
            axis.plot(x, [r["dice"][cls] for r in rows], marker="o", label=variant)
        axes[-1].plot(x, [r["mean_dice"] for r in rows], marker="o", label=variant)
    for axis, title in zip(axes, [*classes, "mean"]):
        axis.set_title(title)
        axis.set_xscale("log")
        axis.set_xlabel("training iterations")
        axis.grid(alpha=0.3)
    axes[0].set_ylabel("Dice, held-out cases")
    axes[0].set_ylim(0, 1)
    axes[-1].legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, nargs="+", default=[100, 300, 1000])
    parser.add_argument("--variant", action="append", help="NAME or NAME:field=value,... (default: both recipes)")
    parser.add_argument("--preset", default="cpu", help="planner preset (default cpu)")
    parser.add_argument("--shape", default="50,50,50", help="nominal image shape (default 50,50,50)")
    parser.add_argument("--spacing", default="2.8,2.8,2.8", help="nominal spacing, mm (default 2.8,2.8,2.8)")
    parser.add_argument("--modality", default="MR", choices=["MR", "CT"])
    parser.add_argument("--anisotropic", action="store_true")
    parser.add_argument("--structure", action="append", help=f"as nnseg synth (default {' '.join(STRUCTURES)})")
    parser.add_argument("--seed", type=int, default=11, help="dataset seed")
    parser.add_argument("--train-seed", type=int, default=12345)
    parser.add_argument("--out", type=Path, default=Path("/tmp/nnseg_small_budget"))
    args = parser.parse_args()
    variants = [parse_variant(v) for v in (args.variant or ["nnunet", "small_budget"])]
    raw, work = args.out / "raw", args.out / f"work_{args.preset}"
    if not (raw / "dataset.json").is_file():
        shutil.rmtree(raw, ignore_errors=True)
        generate_dataset(raw, dataset_config(args), show_progress=False)
    if not (work / "plans.json").is_file():
        nnseg.plan(raw, work, preset=args.preset, show_progress=False)
        preprocess_dataset(work, configurations=["3d_fullres"], show_progress=False)
    results = []
    for name, fields in variants:
        for iterations in args.iterations:
            row = run_one(work, raw, name, fields, iterations, args.train_seed)
            results.append(row)
            dice = " / ".join(f"{v:.3f}" for v in row["dice"].values())
            unadjusted = row.get("unadjusted_mean_dice")
            print(
                f"{name:<24} {row['iterations']:>5} it  Dice {dice}  mean {row['mean_dice']:.3f}  "
                + ("" if unadjusted is None else f"(without logit adjustment {unadjusted:.3f})  ")
                + f"step {row['step_s']:.3f} s  train {row['train_s']:.0f} s",
                flush=True,
            )
    classes = list(results[0]["dice"])
    print(
        f"\n| recipe | iterations | {' | '.join(classes)} | mean | mean without logit adjustment | step (s) "
        "| train wall (s) |"
    )
    print("|---" * (len(classes) + 6) + "|")
    for r in results:
        dice = " | ".join(f"{r['dice'][c]:.3f}" for c in classes)
        unadjusted = "—" if "unadjusted_mean_dice" not in r else f"{r['unadjusted_mean_dice']:.3f}"
        print(
            f"| {r['variant']} | {r['iterations']} | {dice} | {r['mean_dice']:.3f} | {unadjusted} "
            f"| {r['step_s']:.3f} | {r['train_s']:.0f} |"
        )
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    plot(results, args.out / "small_budget.png")
    print(f"\nwrote {args.out / 'small_budget.png'} and {args.out / 'results.json'}")


if __name__ == "__main__":
    main()
