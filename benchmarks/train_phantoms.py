"""A short CPU training on phantoms: does the recipe learn? Prints the final validation Dice.

synth (CT phantoms) -> plan (preset cpu) -> preprocess -> train fold 0 -> sliding-window
validation of the fold's held-out cases in their original geometry.

    .venv/bin/python benchmarks/train_phantoms.py [--cases 20] [--epochs 20] [--iters 25] [--out /tmp/nnseg_train]
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

import nnseg
from nnseg.preprocessing.preprocess import preprocess_dataset
from nnseg.synth import SynthConfig, generate_dataset
from nnseg.training.config import TrainConfig
from nnseg.training.loop import train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=20)
    parser.add_argument("--shape", default="40,48,48")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--iters", type=int, default=25)
    parser.add_argument("--val-iters", type=int, default=5)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--out", type=Path, default=Path("/tmp/nnseg_train"))
    args = parser.parse_args()
    raw, work = args.out / "raw", args.out / "work"
    if not (raw / "dataset.json").is_file():
        shape = tuple(int(s) for s in args.shape.split(","))
        generate_dataset(raw, SynthConfig(num_cases=args.cases, shape=shape, seed=3), show_progress=False)
    shutil.rmtree(work, ignore_errors=True)
    started = time.perf_counter()
    result = nnseg.plan(raw, work, preset=args.preset, show_progress=False)
    preprocess_dataset(work, configurations=["3d_fullres"], show_progress=False)
    config = result.plan.configuration("3d_fullres")
    print(
        f"plan {args.preset}: patch {config.patch_size}, batch {config.batch_size}, "
        f"features {config.network.features_per_stage}; setup {time.perf_counter() - started:.0f} s"
    )
    started = time.perf_counter()
    trained = train(
        work,
        TrainConfig(
            fold=0,
            epochs=args.epochs,
            iters_per_epoch=args.iters,
            val_iters=args.val_iters,
            initial_lr=args.lr,
            device="cpu",
        ),
        show_progress=False,
    )
    seconds = time.perf_counter() - started
    validation = trained.validation or {}
    print(
        f"trained {args.epochs} x {args.iters} iterations in {seconds:.0f} s "
        f"({seconds / (args.epochs * args.iters):.2f} s/iteration incl. validation)"
    )
    print("| class | mean validation Dice |\n|---|---:|")
    for name, value in validation.get("mean_dice_per_class", {}).items():
        print(f"| {name} | {value:.4f} |")
    print(f"| **mean** | **{validation.get('mean_dice', float('nan')):.4f}** |")


if __name__ == "__main__":
    main()
