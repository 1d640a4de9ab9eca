"""Fine-tuning against training from scratch at the same small budget (``nnseg train --pretrained``).

Source: CT-like phantoms, 1 channel, 3 classes (background, organ, lesion), ``--source-cases`` cases, pretrained for
``--pretrain-iterations`` with the ``cpu`` preset. Target: MR-like phantoms, 2 channels, 4 classes (organ, lesion and
a new ``cyst``), few training cases (``--cases``), planned with ``--transfer-plan`` so that the source's weights fit.
For each budget in ``--iterations`` and each training seed, fold ``all`` of the target is trained twice with the
same schedule: from scratch, and from the source's checkpoint (first conv adapted 1 -> 2 channels, head rows of
background/organ/lesion kept, cyst new). The held-out cases are predicted from the raw images and scored per class.

    .venv/bin/python benchmarks/finetune.py                                  # full size (CPU: about an hour)
    .venv/bin/python benchmarks/finetune.py --iterations 100 300 --seeds 1 2 3 --out /tmp/nnseg_finetune
    .venv/bin/python benchmarks/finetune.py --tiny --out /tmp/nnseg_finetune_tiny   # smoke test, ~1 min
    .venv/bin/python benchmarks/finetune.py --iterations 50 --seeds 1 2 3 --ablation   # what each part adds

``--ablation`` adds a fine-tuned run whose new input channels start as plain copies of the source's kernels
(without the zero-sum fresh kernels that tell them apart), as nnseg did before.

``--out`` holds the datasets and work folders (made on the first run, reused after; one folder per setting).
Prints a table (per-class and mean Dice, train wall time) and writes ``results.json`` into ``--out``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np

import nnseg
from nnseg.evaluation.evaluate import evaluate_folders
from nnseg.inference.batch import predict_folder
from nnseg.inference.predictor import Predictor
from nnseg.preprocessing.preprocess import preprocess_dataset
from nnseg.synth import Structure, SynthConfig, generate_dataset
from nnseg.training import pretrained
from nnseg.training.config import TrainConfig
from nnseg.training.loop import train
from nnseg.workspace import Workspace

SOURCE_STRUCTURES = ("organ:1200", "lesion:100")
TARGET_STRUCTURES = ("organ:1200", "lesion:100", "cyst:60x2")


def _triple(text: str, kind: type) -> tuple:
    return tuple(kind(v) for v in text.split(","))


def prepare(args: argparse.Namespace) -> tuple[Path, Path, Path, Path]:
    """Datasets, the source's pretrained checkpoint and the target's transferred plan (each made once)."""
    shape, spacing = _triple(args.shape, int), _triple(args.spacing, float)
    source_raw, target_raw = args.out / "source_raw", args.out / "target_raw"
    source_work, target_work = args.out / "source_work", args.out / "target_work"
    if not (source_raw / "dataset.json").is_file():
        shutil.rmtree(source_raw, ignore_errors=True)
        config = SynthConfig(
            num_cases=args.source_cases,
            shape=shape,
            spacing=spacing,
            modality="CT",
            structures=tuple(Structure.parse(s) for s in SOURCE_STRUCTURES),
            seed=args.seed,
        )
        generate_dataset(source_raw, config, show_progress=False)
    if not (target_raw / "dataset.json").is_file():
        shutil.rmtree(target_raw, ignore_errors=True)
        config = SynthConfig(
            num_cases=args.cases,
            num_test=args.test_cases,
            shape=shape,
            spacing=spacing,
            modality="MR",
            channels=2,
            structures=tuple(Structure.parse(s) for s in TARGET_STRUCTURES),
            seed=args.seed + 1,
        )
        generate_dataset(target_raw, config, show_progress=False)
    source_final = Workspace.at(source_work).fold_paths("3d_fullres", "all").final
    if not source_final.is_file():
        nnseg.plan(source_raw, source_work, preset="cpu", show_progress=False)
        preprocess_dataset(source_work, configurations=["3d_fullres"], show_progress=False)
        started = time.perf_counter()
        train(source_work, _config(args, args.pretrain_iterations, args.seeds[0]), resume=False, show_progress=False)
        print(
            f"pretrained on {args.source_cases} CT cases for {args.pretrain_iterations} it in "
            f"{time.perf_counter() - started:.0f} s -> {source_final}",
            flush=True,
        )
    if not Workspace.at(target_work).plans.is_file():
        nnseg.plan(target_raw, target_work, transfer_plan=source_work, show_progress=False)
        preprocess_dataset(target_work, configurations=["3d_fullres"], show_progress=False)
    return source_final, target_raw, target_work, args.out / "predictions"


def _config(args: argparse.Namespace, iterations: int, seed: int, **fields: Any) -> TrainConfig:
    return TrainConfig(
        fold="all",
        epochs=max(1, iterations // args.iters_per_epoch),
        iters_per_epoch=args.iters_per_epoch,
        val_iters=1,
        device=args.device,
        tracking=False,
        final_validation=False,
        seed=seed,
        **fields,
    )


#: --ablation: the fine-tuned run with plain channel copies
PLAIN_COPIES = "fine-tuned, plain copies"


@contextlib.contextmanager
def _plain_copies(on: bool) -> Iterator[None]:
    """New input channels as plain copies of the source's kernels for one run (the library has no switch)."""
    if not on:
        yield
        return
    plain = pretrained.adapt_input_channels
    with mock.patch.object(
        pretrained, "adapt_input_channels", lambda weight, channels, fresh=None: plain(weight, channels)
    ):
        yield


def run_one(
    args: argparse.Namespace, work: Path, raw: Path, out: Path, mode: str, iterations: int, seed: int, source: Path
) -> dict[str, Any]:
    fields = {"pretrained": str(source)} if mode.startswith("fine-tuned") else {}
    config = _config(args, iterations, seed, **fields)
    started = time.perf_counter()
    with _plain_copies(mode == PLAIN_COPIES):
        train(work, config, resume=False, show_progress=False)
    train_s = time.perf_counter() - started
    predictor = Predictor.from_checkpoints(Workspace.at(work).models("3d_fullres"), folds=["all"], device=args.device)
    predictions = out / f"{mode.replace(', ', '_').replace(' ', '-')}_{iterations}_{seed}"
    shutil.rmtree(predictions, ignore_errors=True)
    predict_folder(predictor, raw / "imagesTs", predictions, show_progress=False)
    labels = json.loads((raw / "dataset.json").read_text())["labels"]
    summary = evaluate_folders(predictions, raw / "labelsTs", labels, show_progress=False).to_dict()
    per_class = {k: float(v) for k, v in summary["mean_dice_per_class"].items()}
    return {
        "mode": mode,
        "iterations": config.epochs * config.iters_per_epoch,
        "seed": seed,
        "dice": per_class,
        "mean_dice": float(np.mean(list(per_class.values()))),
        "train_s": train_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, nargs="+", default=[50, 150, 300], help="target budgets")
    parser.add_argument("--pretrain-iterations", type=int, default=1000)
    parser.add_argument("--iters-per-epoch", type=int, default=25)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2], help="training seeds per budget")
    parser.add_argument("--source-cases", type=int, default=16)
    parser.add_argument("--cases", type=int, default=6, help="target training cases (few: where transfer helps)")
    parser.add_argument("--test-cases", type=int, default=8)
    parser.add_argument("--shape", default="50,50,50", help="nominal image shape (default 50,50,50)")
    parser.add_argument("--spacing", default="2.8,2.8,2.8", help="nominal spacing, mm (default 2.8,2.8,2.8)")
    parser.add_argument("--seed", type=int, default=21, help="dataset seed")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--ablation", action="store_true", help="also fine-tune with plain channel copies")
    parser.add_argument("--tiny", action="store_true", help="a smoke test: 3+3 cases of 20x24x24, a few iterations")
    parser.add_argument("--out", type=Path, default=Path("/tmp/nnseg_finetune"))
    args = parser.parse_args()
    if args.tiny:
        args.iterations, args.pretrain_iterations, args.iters_per_epoch, args.seeds = [2], 4, 2, [1]
        args.source_cases, args.cases, args.test_cases, args.shape = 3, 3, 1, "20,24,24"
    source, raw, work, out = prepare(args)
    modes = ("scratch", "fine-tuned", *((PLAIN_COPIES,) if args.ablation else ()))
    results = []
    for iterations in args.iterations:
        for seed in args.seeds:
            for mode in modes:
                row = run_one(args, work, raw, out, mode, iterations, seed, source)
                results.append(row)
                dice = " / ".join(f"{v:.3f}" for v in row["dice"].values())
                print(
                    f"{mode:<24} {row['iterations']:>5} it seed {seed}  Dice {dice}  mean {row['mean_dice']:.3f}  "
                    f"train {row['train_s']:.0f} s",
                    flush=True,
                )
    classes = list(results[0]["dice"])
    print(f"\n| start | iterations | {' | '.join(classes)} | mean (± sd over seeds) | train wall (s) |")
    print("|---" * (len(classes) + 4) + "|")
    for iterations in dict.fromkeys(r["iterations"] for r in results):
        for mode in modes:
            rows = [r for r in results if r["iterations"] == iterations and r["mode"] == mode]
            dice = " | ".join(f"{np.mean([r['dice'][c] for r in rows]):.3f}" for c in classes)
            means = [r["mean_dice"] for r in rows]
            print(
                f"| {mode} | {iterations} | {dice} | {np.mean(means):.3f} ± {np.std(means):.3f} "
                f"| {np.mean([r['train_s'] for r in rows]):.0f} |"
            )
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    (args.out / "results.json").write_text(json.dumps({"settings": settings, "results": results}, indent=2))
    print(f"\nwrote {args.out / 'results.json'}")


if __name__ == "__main__":
    main()
