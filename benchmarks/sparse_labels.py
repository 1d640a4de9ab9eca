"""Sparse labels (the ignore label) against dense labels, same images, same schedule, same test set.

Data: ``nnseg synth`` phantoms (MR, organ + lesion; or ``--regions``: the BraTS-like set, region
training) generated twice from one seed: once with dense training labels, once with only
``--fraction`` of the slices along the first array axis (k, through-plane) annotated and the rest set
to the ``ignore`` label (``nnseg synth --sparse``). Images and the dense held-out test labels
(labelsTs) are identical in both. Each dataset is planned (preset ``cpu``), preprocessed and trained
on fold 0 for the same number of iterations (same recipe and seed); the test cases are predicted from
the raw images and scored per class (or region).

    .venv/bin/python benchmarks/sparse_labels.py [--iterations 500] [--fraction 0.2] [--regions] \\
        [--out /tmp/nnseg_sparse_labels]

Prints a table (Dice per class and mean, dense vs sparse, wall time) and writes ``results.json`` into ``--out``.
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
from nnseg.evaluation.evaluate import evaluate_folders
from nnseg.inference.batch import predict_folder
from nnseg.inference.predictor import Predictor
from nnseg.labels import LabelScheme
from nnseg.preprocessing.preprocess import preprocess_dataset
from nnseg.synth import SynthConfig, generate_dataset
from nnseg.training.config import TrainConfig
from nnseg.training.loop import train
from nnseg.workspace import Workspace

ITERS_PER_EPOCH = 25


def dataset_config(args: argparse.Namespace, sparse: float | None) -> SynthConfig:
    return SynthConfig(
        num_cases=args.cases,
        num_test=args.test_cases,
        shape=(40, 48, 48),
        modality="MR",
        channels=4 if args.regions else 2,
        regions=args.regions,
        sparse=sparse,
        seed=args.seed,
    )


def run(name: str, raw: Path, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    if not (work / "plans.json").is_file():
        nnseg.plan(raw, work, preset="cpu", show_progress=False)
        preprocess_dataset(work, configurations=["3d_fullres"], show_progress=False)
    epochs = max(1, args.iterations // ITERS_PER_EPOCH)
    config = TrainConfig(
        fold=0,
        epochs=epochs,
        iters_per_epoch=ITERS_PER_EPOCH,
        val_iters=2,
        device=args.device,
        tracking=False,
        final_validation=False,
        seed=args.train_seed,
    )
    started = time.perf_counter()
    train(work, config, resume=False, show_progress=False)
    train_s = time.perf_counter() - started
    predictor = Predictor.from_checkpoints(Workspace.at(work).models("3d_fullres"), folds=[0], device=args.device)
    out = args.out / f"predictions_{name}"
    shutil.rmtree(out, ignore_errors=True)
    predict_folder(predictor, raw / "imagesTs", out, show_progress=False)
    data = json.loads((raw / "dataset.json").read_text())
    scheme = LabelScheme.from_json(data["labels"], data.get("regions_class_order"))
    summary = evaluate_folders(out, raw / "labelsTs", scheme, show_progress=False).to_dict()
    dice = {k: float(v) for k, v in summary["mean_dice_per_class"].items()}
    return {
        "labels": name,
        "iterations": epochs * ITERS_PER_EPOCH,
        "dice": dice,
        "mean_dice": float(np.mean(list(dice.values()))),
        "train_s": train_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=500)
    parser.add_argument("--fraction", type=float, default=0.2, help="annotated fraction of the slices (0.2)")
    parser.add_argument("--regions", action="store_true", help="the BraTS-like region set (region training)")
    parser.add_argument("--cases", type=int, default=16)
    parser.add_argument("--test-cases", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0, help="dataset seed")
    parser.add_argument("--train-seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=Path("/tmp/nnseg_sparse_labels"))
    args = parser.parse_args()
    rows = []
    for name, sparse in (("dense", None), (f"sparse_{args.fraction:g}", args.fraction)):
        raw = args.out / f"raw_{name}"
        if not (raw / "dataset.json").is_file():
            shutil.rmtree(raw, ignore_errors=True)
            generate_dataset(raw, dataset_config(args, sparse), show_progress=False)
        rows.append(run(name, raw, args.out / f"work_{name}", args))
    classes = list(rows[0]["dice"])
    print(f"{'labels':<14}{'iters':>7}" + "".join(f"{c[:12]:>13}" for c in classes) + f"{'mean':>8}{'train s':>9}")
    for row in rows:
        cells = "".join(f"{row['dice'][c]:>13.3f}" for c in classes)
        print(f"{row['labels']:<14}{row['iterations']:>7}{cells}{row['mean_dice']:>8.3f}{row['train_s']:>9.0f}")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps({"args": vars(args) | {"out": str(args.out)}, "rows": rows}))


if __name__ == "__main__":
    main()
