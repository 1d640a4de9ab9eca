"""What the per-epoch validation costs at the ``cpu`` preset's short epochs, before and after its default changed.

Data: CT phantoms (``nnseg synth``), planned with ``--preset cpu`` and preprocessed once. For each setting of
``val_iters`` (default: 50, nnU-Net's and the old default, against ``auto``, one patch per 5 training iterations)
fold 0 of 3d_fullres trains ``--epochs`` epochs of ``--iters`` iterations (final validation off: it is the same
either way). The epoch's wall time is split into its training part and its validation part (the history's
``train_time_s`` / ``val_time_s``); the first epoch (warm-up) is left out of the means.

    .venv/bin/python benchmarks/validation_cost.py [--iters 25] [--epochs 4] [--out /tmp/nnseg_validation_cost]

Prints a table and writes ``results.json`` into ``--out``. Run it alone: two trainings at once on 2 cores make
both figures wrong.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np

import nnseg
from nnseg.checkpoint import Checkpoint
from nnseg.preprocessing.preprocess import preprocess_dataset
from nnseg.synth import SynthConfig, generate_dataset
from nnseg.training.config import TrainConfig
from nnseg.training.loop import train


def prepare(out: Path, cases: int) -> Path:
    """The planned and preprocessed work folder (made once, reused)."""
    work = out / "work"
    if not (work / "plans.json").is_file():
        raw = generate_dataset(out / "raw", SynthConfig(num_cases=cases, num_test=0, seed=11), show_progress=False)
        nnseg.plan(raw, work, preset="cpu", show_progress=False)
        preprocess_dataset(work, configurations=["3d_fullres"], show_progress=False)
    return work


def measure(work: Path, val_iters: int | None, iters: int, epochs: int) -> dict[str, Any]:
    fold = work / "models" / "3d_fullres" / "fold_0"
    shutil.rmtree(fold, ignore_errors=True)
    config = TrainConfig(
        fold=0,
        epochs=epochs,
        iters_per_epoch=iters,
        val_iters=val_iters,
        device="cpu",
        tracking=False,
        final_validation=False,
    )
    result = train(work, config, show_progress=False)
    state = Checkpoint.load(result.fold_dir / "checkpoint_latest.pt").training
    if state is None:
        raise RuntimeError(f"{result.fold_dir}: no training state in checkpoint_latest.pt")
    history = state.history[1:]  # the first epoch warms up
    epoch = float(np.mean([h["epoch_time_s"] for h in history]))
    validation = float(np.mean([h["val_time_s"] for h in history]))
    return {
        "val_iters": "auto" if val_iters is None else val_iters,
        "patches": config.validation_patches,
        "epoch_s": round(epoch, 2),
        "train_s": round(epoch - validation, 2),
        "validation_s": round(validation, 2),
        "validation_share": round(validation / epoch, 3),
        "ema_pseudo_dice": round(float(history[-1]["ema_pseudo_dice"]), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--iters", type=int, default=25, help="training iterations per epoch (cpu preset runs: 25)")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--cases", type=int, default=8)
    parser.add_argument("--out", type=Path, default=Path("/tmp/nnseg_validation_cost"))
    args = parser.parse_args()
    work = prepare(args.out, args.cases)
    rows = [measure(work, setting, args.iters, args.epochs) for setting in (50, None)]
    header = f"{'val_iters':>9} {'patches':>7} {'epoch s':>8} {'train s':>8} {'val s':>7} {'val share':>9}"
    print(header)
    for row in rows:
        print(
            f"{row['val_iters']!s:>9} {row['patches']:>7} {row['epoch_s']:>8.2f} {row['train_s']:>8.2f} "
            f"{row['validation_s']:>7.2f} {row['validation_share']:>9.1%}"
        )
    (args.out / "results.json").write_text(json.dumps({"iters": args.iters, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
