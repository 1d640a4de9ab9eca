"""The cascade (3d_lowres -> 3d_cascade_fullres) against 3d_fullres on images much larger than the patch.

Data: ``nnseg synth`` CT phantoms (organ + lesion) of ``--shape`` at ``--spacing`` (default 128 x 160 x 160 at
1 mm: the cpu preset's 3d_fullres patch covers < 25 % of them; on a GPU use ``--preset default --shape
256,256,256``). The preset is used as it is, plus ``3d_lowres`` in its configurations when it lacks it (the cpu
preset does), so that the cascade is planned. Same budget per network: every network trains ``--iterations``
iterations with the same recipe and seed: 3d_fullres fold 0; 3d_lowres on every fold of a ``--folds``-fold split
(its cross-validation predictions are the cascade's training input); 3d_cascade_fullres fold 0. The held-out test
cases (imagesTs) are predicted from the raw images (3d_fullres and the cascade by fold 0; the cascade's first
stage by every lowres fold, as ``nnseg predict -c 3d_cascade_fullres`` does) and scored per class.

    .venv/bin/python benchmarks/cascade.py [--iterations 500] [--cases 10] [--test-cases 4] [--folds 5] \\
        [--shape 128,160,160] [--spacing 1,1,1] [--preset cpu] [--device cpu] [--out /tmp/nnseg_cascade]

Prints a table (Dice per class and mean, training and prediction wall time per configuration) and writes
``results.json`` into ``--out``. Training time of the cascade includes all its lowres folds.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np

import nnseg
from nnseg.evaluation.evaluate import evaluate_folders
from nnseg.inference.batch import predict_folder
from nnseg.inference.predictor import Predictor
from nnseg.labels import LabelScheme
from nnseg.planning.plan import CASCADE_CONFIGURATION, LOWRES_CONFIGURATION, Plan
from nnseg.planning.presets import load_preset
from nnseg.planning.splits import make_splits
from nnseg.preprocessing.preprocess import preprocess_dataset
from nnseg.schema import to_jsonable
from nnseg.synth import SynthConfig, generate_dataset
from nnseg.training.config import TrainConfig
from nnseg.training.loop import train
from nnseg.workspace import Workspace

ITERS_PER_EPOCH = 25


def _triple(text: str, kind: type) -> tuple:
    values = tuple(kind(v) for v in text.split(","))
    if len(values) != 3:
        raise argparse.ArgumentTypeError(f"expected three comma-separated values, got {text!r}")
    return values


def prepare(args: argparse.Namespace) -> tuple[Path, Path]:
    """Synthesize, plan (the preset with 3d_lowres) and preprocess once; a rerun reuses them."""
    raw, work = args.out / "raw", args.out / "work"
    if not (raw / "dataset.json").is_file():
        shutil.rmtree(raw, ignore_errors=True)
        config = SynthConfig(
            num_cases=args.cases, num_test=args.test_cases, shape=args.shape, spacing=args.spacing, seed=args.seed
        )
        generate_dataset(raw, config, show_progress=False)
    if not (work / "plans.json").is_file():
        preset = load_preset(args.preset)
        if LOWRES_CONFIGURATION not in preset.configurations:
            preset = replace(preset, configurations=(*preset.configurations, LOWRES_CONFIGURATION))
        preset_file = args.out / f"{preset.name}_with_lowres.json"
        preset_file.write_text(json.dumps(to_jsonable(asdict(preset))))
        nnseg.plan(raw, work, preset=preset_file, show_progress=False)
    plan = Plan.load(Workspace(work).plans)
    if CASCADE_CONFIGURATION not in plan.configurations:
        raise SystemExit(
            f"the plan has no cascade for {args.shape} voxels at {args.spacing} mm with preset {args.preset}: the "
            "3d_fullres patch covers >= 25 % of the images; choose a larger --shape"
        )
    preprocess_dataset(work, configurations=[LOWRES_CONFIGURATION, "3d_fullres"], show_progress=False)
    splits = Workspace(work).splits
    if not splits.is_file():  # --folds folds, so that the lowres folds cover every training case
        cases = [f"case_{i:03d}" for i in range(args.cases)]
        splits.write_text(json.dumps(make_splits(cases, args.folds)))
    return raw, work


def train_fold(work: Path, configuration: str, fold: int, args: argparse.Namespace) -> float:
    epochs = max(1, args.iterations // ITERS_PER_EPOCH)
    config = TrainConfig(
        configuration=configuration,
        fold=fold,
        epochs=epochs,
        iters_per_epoch=ITERS_PER_EPOCH,
        val_iters=2,
        device=args.device,
        tracking=False,
        final_validation=configuration == LOWRES_CONFIGURATION,  # writes the cascade's input
        seed=args.train_seed,
    )
    started = time.perf_counter()
    train(work, config, resume=False, show_progress=False)
    return time.perf_counter() - started


def score(raw: Path, work: Path, configuration: str, folds: list[int] | None, args: argparse.Namespace) -> dict:
    predictor = Predictor.from_checkpoints(Workspace(work).models(configuration), folds=folds, device=args.device)
    out = args.out / f"predictions_{configuration}"
    shutil.rmtree(out, ignore_errors=True)
    started = time.perf_counter()
    predict_folder(predictor, raw / "imagesTs", out, show_progress=False)
    predict_s = time.perf_counter() - started
    data = json.loads((raw / "dataset.json").read_text())
    scheme = LabelScheme.from_json(data["labels"], data.get("regions_class_order"))
    summary = evaluate_folders(out, raw / "labelsTs", scheme, show_progress=False).to_dict()
    dice = {k: float(v) for k, v in summary["mean_dice_per_class"].items()}
    return {"dice": dice, "mean_dice": float(np.mean(list(dice.values()))), "predict_s": predict_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=500, help="training iterations per network (500)")
    parser.add_argument("--cases", type=int, default=10)
    parser.add_argument("--test-cases", type=int, default=4)
    parser.add_argument("--folds", type=int, default=5, help="folds of the lowres stage's cross-validation (5)")
    parser.add_argument("--shape", type=lambda t: _triple(t, int), default=(128, 160, 160))
    parser.add_argument("--spacing", type=lambda t: _triple(t, float), default=(1.0, 1.0, 1.0))
    parser.add_argument("--preset", default="cpu", help="planner preset (3d_lowres is added when it lacks it)")
    parser.add_argument("--seed", type=int, default=0, help="dataset seed")
    parser.add_argument("--train-seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=Path("/tmp/nnseg_cascade"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    raw, work = prepare(args)
    folds = list(range(len(json.loads(Workspace(work).splits.read_text()))))

    rows: list[dict[str, Any]] = []
    fullres_s = train_fold(work, "3d_fullres", 0, args)
    rows.append({"configuration": "3d_fullres", "train_s": fullres_s, **score(raw, work, "3d_fullres", [0], args)})
    lowres_s = sum(train_fold(work, LOWRES_CONFIGURATION, fold, args) for fold in folds)
    rows.append(
        {"configuration": "3d_lowres (all folds)", "train_s": lowres_s, **score(raw, work, "3d_lowres", None, args)}
    )
    cascade_s = lowres_s + train_fold(work, CASCADE_CONFIGURATION, 0, args)
    rows.append(
        {
            "configuration": CASCADE_CONFIGURATION,
            "train_s": cascade_s,
            **score(raw, work, CASCADE_CONFIGURATION, [0], args),
        }
    )

    classes = list(rows[0]["dice"])
    print(
        f"{'configuration':<24}" + "".join(f"{c[:12]:>13}" for c in classes) + f"{'mean':>8}{'train s':>9}{'pred s':>8}"
    )
    for row in rows:
        cells = "".join(f"{row['dice'][c]:>13.3f}" for c in classes)
        print(
            f"{row['configuration']:<24}{cells}{row['mean_dice']:>8.3f}{row['train_s']:>9.0f}{row['predict_s']:>8.1f}"
        )
    result = {"args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}, "rows": rows}
    (args.out / "results.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
