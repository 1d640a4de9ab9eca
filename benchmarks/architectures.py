"""Every registered architecture through the whole pipeline, on equal terms.

Data: MR-like phantoms of about 50^3 voxels at 2.8 mm holding three structure classes of about 1,200, 100
and 30 voxels (the smallest as three separate blobs per case), 16 training and 8 held-out test cases (the
small_budget benchmark's set). For each architecture: ``nnseg plan --preset P --architecture A`` (the preset
fits patch and batch to that architecture's own footprint or FLOPs), preprocess, ``nnseg train`` fold 0 for
the same number of iterations with the same recipe and seed, ``nnseg predict`` the held-out cases from the
raw images (sliding window, mirroring), score per class. Training and prediction run as their own processes,
so wall time and peak RSS (of the process tree) are the commands' own. UNet++ is also predicted at every
pruning depth (``--prune L``).

    .venv/bin/python benchmarks/architectures.py [--iterations 300] [--preset cpu] \\
        [--architectures unet,resenc_unet,...] [--out /tmp/nnseg_architectures]

Prints a markdown table (per-class and mean Dice, parameters, forward GFLOP per patch, patch and batch, step
time (median epoch time / iterations), the whole ``nnseg train`` command's wall time and peak RSS, predict
s/case and peak RSS) and writes ``architectures.png`` and ``results.json``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from _rss import run_measured

import nnseg
from nnseg.checkpoint import Checkpoint
from nnseg.evaluation.evaluate import evaluate_folders
from nnseg.networks import available_architectures
from nnseg.planning import Plan
from nnseg.planning.planner import estimate_footprint
from nnseg.preprocessing.preprocess import preprocess_dataset
from nnseg.synth import Structure, SynthConfig, generate_dataset
from nnseg.workspace import Workspace

ITERS_PER_EPOCH = 25
STRUCTURES = ("large:1200", "medium:100", "small:30x3")
NNSEG = [sys.executable, "-m", "nnseg"]


def dataset_config(seed: int) -> SynthConfig:
    return SynthConfig(
        num_cases=16,
        num_test=8,
        shape=(50, 50, 50),
        spacing=(2.8, 2.8, 2.8),
        modality="MR",
        structures=tuple(Structure.parse(s) for s in STRUCTURES),
        seed=seed,
    )


def score(prediction: Path, raw: Path) -> dict[str, float]:
    labels = json.loads((raw / "dataset.json").read_text())["labels"]
    summary = evaluate_folders(prediction, raw / "labelsTs", labels, show_progress=False).to_dict()
    return {k: float(v) for k, v in summary["mean_dice_per_class"].items()}


def predict(work: Path, raw: Path, out: Path, *extra: str) -> tuple[dict[str, float], float, float]:
    """(Dice per class, seconds per case, peak RSS MiB) of one ``nnseg predict`` process."""
    shutil.rmtree(out, ignore_errors=True)
    cases = len(list((raw / "imagesTs").glob("*_0000.nii.gz")))
    measured = run_measured(
        [*NNSEG, "predict", "-i", str(raw / "imagesTs"), "-o", str(out), "-m", str(work), "--device", "cpu", *extra]
    )
    return score(out, raw), measured.seconds / cases, measured.peak_mib


def run_architecture(architecture: str, raw: Path, root: Path, args: argparse.Namespace) -> list[dict[str, Any]]:
    work = root / f"work_{args.preset}_{architecture}"
    if not (work / "plans.json").is_file():
        nnseg.plan(raw, work, preset=args.preset, architecture=architecture, show_progress=False)
        preprocess_dataset(work, configurations=["3d_fullres"], show_progress=False)
    plan = Plan.load(Workspace.at(work).plans)
    config = plan.configurations["3d_fullres"]
    channels = len(plan.channel_names)
    footprint = estimate_footprint(config.network, config.patch_size, channels, plan.num_classes)
    epochs = max(1, args.iterations // ITERS_PER_EPOCH)
    shutil.rmtree(work / "models", ignore_errors=True)
    trained = run_measured(
        [
            *NNSEG,
            "train",
            "--work",
            str(work),
            "--fold",
            "0",
            "--epochs",
            str(epochs),
            "--iters-per-epoch",
            str(ITERS_PER_EPOCH),
            "--val-iters",
            "2",
            "--device",
            "cpu",
            "--no-tracking",
            "--no-final-validation",
            "--seed",
            str(args.train_seed),
            "--fresh",
        ]
    )
    latest = Checkpoint.load(Workspace.at(work).fold_paths("3d_fullres", 0).latest)
    epoch_times = [record["epoch_time_s"] for record in latest.training.history] if latest.training else []
    dice, predict_s, predict_mib = predict(work, raw, root / "predictions" / architecture)
    row = {
        "architecture": architecture,
        "variant": architecture,
        "dice": dice,
        "mean_dice": float(np.mean(list(dice.values()))),
        "parameters": footprint.parameters,
        "gflops_per_patch": footprint.flops / 1e9,
        "patch": list(config.patch_size),
        "batch": config.batch_size,
        "iterations": epochs * ITERS_PER_EPOCH,
        "train_s": trained.seconds,
        "step_s": float(np.median(epoch_times)) / ITERS_PER_EPOCH,  # an epoch's 25 steps + 2 validation patches
        "train_peak_mib": trained.peak_mib,
        "predict_s_per_case": predict_s,
        "predict_peak_mib": predict_mib,
    }
    rows = [row]
    if architecture == "unetpp":  # the pruning trade-off: shallower sub-networks at inference
        for level in range(1, config.network.n_stages - 1):
            dice, predict_s, predict_mib = predict(
                work, raw, root / "predictions" / f"unetpp_L{level}", "--prune", str(level)
            )
            pruned = replace(config.network, prune_level=level)
            rows.append(
                {
                    **row,
                    "variant": f"unetpp --prune {level}",
                    "dice": dice,
                    "mean_dice": float(np.mean(list(dice.values()))),
                    "gflops_per_patch": estimate_footprint(pruned, config.patch_size, channels, plan.num_classes).flops
                    / 1e9,
                    "predict_s_per_case": predict_s,
                    "predict_peak_mib": predict_mib,
                }
            )
    return rows


def _ordered(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    order = available_architectures()
    return sorted(rows, key=lambda r: order.index(r["architecture"]) if r["architecture"] in order else len(order))


def table(results: list[dict[str, Any]]) -> str:
    classes = list(results[0]["dice"])
    lines = [
        f"| architecture | {' | '.join(classes)} | mean Dice | parameters | GFLOP/patch | patch x batch | step (s) "
        "| train (s) | train peak RSS (MiB) | predict (s/case) | predict peak RSS (MiB) |",
        "|---" * (len(classes) + 10) + "|",
    ]
    for r in results:
        dice = " | ".join(f"{r['dice'][c]:.3f}" for c in classes)
        patch = "x".join(str(p) for p in r["patch"])
        lines.append(
            f"| {r['variant']} | {dice} | {r['mean_dice']:.3f} | {r['parameters'] / 1e6:.2f} M "
            f"| {r['gflops_per_patch']:.1f} | {patch} x {r['batch']} | {r['step_s']:.2f} | {r['train_s']:.0f} "
            f"| {r['train_peak_mib']:.0f} | {r['predict_s_per_case']:.2f} | {r['predict_peak_mib']:.0f} |"
        )
    return "\n".join(lines)


def plot(results: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    classes = list(results[0]["dice"])
    names = [r["variant"] for r in results]
    figure, (left, right) = plt.subplots(1, 2, figsize=(13, 4.2))
    width = 0.8 / (len(classes) + 1)
    x = np.arange(len(results))
    for index, cls in enumerate([*classes, "mean"]):
        values = [r["mean_dice"] if cls == "mean" else r["dice"][cls] for r in results]
        left.bar(x + (index - len(classes) / 2) * width, values, width, label=cls)
    left.set_xticks(x, names, rotation=30, ha="right")
    left.set_ylabel("Dice, held-out cases")
    left.set_ylim(0, 1)
    left.legend(fontsize=8, loc="lower left", ncol=4)
    left.set_title(f"equal iterations ({results[0]['iterations']})")
    for r in results:
        right.scatter(r["predict_s_per_case"], r["mean_dice"])
        right.annotate(r["variant"], (r["predict_s_per_case"], r["mean_dice"]), fontsize=8)
    right.set_xlabel("predict, s/case (CPU, mirroring)")
    right.set_ylabel("mean Dice")
    right.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--architectures", default=",".join(available_architectures()))
    parser.add_argument("--seed", type=int, default=11, help="dataset seed")
    parser.add_argument("--train-seed", type=int, default=12345)
    parser.add_argument("--out", type=Path, default=Path("/tmp/nnseg_architectures"))
    args = parser.parse_args()
    raw = args.out / "raw"
    if not (raw / "dataset.json").is_file():
        shutil.rmtree(raw, ignore_errors=True)
        generate_dataset(raw, dataset_config(args.seed), show_progress=False)
    chosen = args.architectures.split(",")
    saved = args.out / "results.json"
    # rows of architectures not rerun now stay (rerun one with: --architectures NAME, after deleting its work_*)
    kept = [r for r in json.loads(saved.read_text()) if r["architecture"] not in chosen] if saved.is_file() else []
    results: list[dict[str, Any]] = []
    for architecture in chosen:
        for row in run_architecture(architecture, raw, args.out, args):
            results.append(row)
            dice = " / ".join(f"{v:.3f}" for v in row["dice"].values())
            print(
                f"{row['variant']:<20} Dice {dice}  mean {row['mean_dice']:.3f}  step {row['step_s']:.2f} s  "
                f"predict {row['predict_s_per_case']:.2f} s/case",
                flush=True,
            )
            saved.write_text(json.dumps(_ordered(kept + results), indent=2))
    results = _ordered(kept + results)
    print("\n" + table(results))
    plot(results, args.out / "architectures.png")
    print(f"\nwrote {args.out / 'architectures.png'} and {args.out / 'results.json'}")


if __name__ == "__main__":
    main()
