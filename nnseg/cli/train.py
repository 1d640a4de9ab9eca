"""``nnseg train`` and ``nnseg demo``."""

from __future__ import annotations

import argparse
from pathlib import Path

from nnseg.cli.common import EXIT_FAILED, EXIT_OK
from nnseg.options import (
    add_config_options,
    cli_type,
    config_from_args,
    device,
    positive_int,
    writable_folder,
)
from nnseg.workspace import Workspace


def add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train one fold (resumes automatically)",
        description="Train a U-Net for one configuration and fold on the preprocessed cache. "
        "Defaults are nnU-Net's schedule (1000 epochs x 250 iterations) and recipe; short runs and the cpu "
        "preset train with the small_budget recipe (--recipe), and --time-budget fits the epochs to a wall "
        "time. A rerun resumes from checkpoint_latest.pt in the same MLflow run. Multi-GPU/multi-node: "
        "torchrun --nproc_per_node N -m nnseg train ...",
    )
    from nnseg.training.config import TrainConfig

    p.add_argument("--work", type=Path, default=None, help="work folder (default ./nnseg_work)")
    add_config_options(p, TrainConfig)
    restart = p.add_mutually_exclusive_group()
    restart.add_argument("--fresh", action="store_true", help="ignore an existing checkpoint_latest.pt and start over")
    restart.add_argument("--resume", action="store_true", help="resume (the default when a checkpoint exists)")
    p.set_defaults(handler=_run_train)


def _run_train(args: argparse.Namespace) -> int:
    from nnseg.training.config import TrainConfig
    from nnseg.training.loop import train

    writable_folder("--work", Workspace.at(args.work).root)
    config = config_from_args(TrainConfig, args)
    result = train(args.work, config, resume=not args.fresh)
    print(
        f"trained {config.configuration} {config.fold_name}: {result.epochs_done} epoch(s), EMA pseudo-Dice "
        f"{result.ema_pseudo_dice:.4f} -> {result.fold_dir}"
    )
    if result.validation is not None:
        print(
            f"validation mean Dice {result.validation['mean_dice']:.4f} "
            f"({', '.join(f'{k} {v:.4f}' for k, v in result.validation['mean_dice_per_class'].items())})"
        )
    if result.run_id:
        from nnseg.tracking import default_tracking_uri, ui_hint

        uri = config.tracking_uri or default_tracking_uri(Workspace.at(args.work).root)
        print(f"MLflow run {result.run_id}: {ui_hint(uri)}")
    return EXIT_OK


def add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="run the pipeline end to end on built-in phantom data",
        description="synth -> check -> plan -> preprocess -> train -> predict -> evaluate on a small "
        "phantom dataset, in minutes on a CPU.",
    )
    p.add_argument("--out", type=Path, default=Path("demo"), help="working folder (default ./demo)")
    p.add_argument("--cases", type=cli_type(positive_int, "--cases"), default=10, help="training cases (default 10)")
    p.add_argument("--epochs", type=cli_type(positive_int, "--epochs"), default=12, help="training epochs (default 12)")
    p.add_argument("--iters-per-epoch", type=cli_type(positive_int, "--iters-per-epoch"), default=25)
    p.add_argument("--device", type=cli_type(device, "--device"), default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(handler=_run_demo)


def _run_demo(args: argparse.Namespace) -> int:
    from nnseg.demo import run_demo

    ok = run_demo(
        args.out,
        num_cases=args.cases,
        epochs=args.epochs,
        iters_per_epoch=args.iters_per_epoch,
        seed=args.seed,
        device=args.device,
    )
    return EXIT_OK if ok else EXIT_FAILED
