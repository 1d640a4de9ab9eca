"""The ``nnseg`` command: thin subcommands over the Python API.

Every subcommand parses its options, calls one library function and prints the
result. Errors caused by the input (:class:`nnseg.errors.NnsegError`) are printed as
one readable message and exit with code 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from nnseg.errors import NnsegError

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2


def _triple(kind: type) -> Callable[[str], tuple]:
    def parse(text: str) -> tuple:
        parts = text.replace("x", ",").split(",")
        if len(parts) != 3:
            raise argparse.ArgumentTypeError(f"expected three values like 40,48,48, got {text!r}")
        try:
            return tuple(kind(p) for p in parts)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected three numbers like 40,48,48, got {text!r}") from None
    return parse


def _add_synth(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("synth", help="generate a phantom dataset (nnU-Net layout)",
                       description="Write a realistic synthetic dataset: sample data for demos and tests.")
    p.add_argument("out", type=Path, help="destination folder (new or empty)")
    p.add_argument("--cases", type=int, default=8, help="training cases (default 8)")
    p.add_argument("--test-cases", type=int, default=0, help="extra cases in imagesTs/labelsTs (default 0)")
    p.add_argument("--shape", type=_triple(int), default=(40, 48, 48), help="nominal shape k,j,i (default 40,48,48)")
    p.add_argument("--spacing", type=_triple(float), default=(1.5, 1.2, 1.2),
                   help="nominal voxel size in mm k,j,i (default 1.5,1.2,1.2)")
    p.add_argument("--modality", choices=["CT", "MR"], default="CT")
    p.add_argument("--channels", type=int, default=1, help="channels (MR only for >1)")
    p.add_argument("--anisotropic", action="store_true", help="thick slices along k (3.5-5 mm)")
    p.add_argument("--no-oblique", dest="oblique", action="store_false", help="identity directions")
    p.add_argument("--file-ending", default=".nii.gz", choices=[".nii.gz", ".nii", ".mha", ".nrrd"])
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(handler=_run_synth)


def _run_synth(args: argparse.Namespace) -> int:
    from nnseg.synth import SynthConfig, generate_dataset

    config = SynthConfig(
        num_cases=args.cases, num_test=args.test_cases, shape=args.shape, spacing=args.spacing,
        modality=args.modality, channels=args.channels, anisotropic=args.anisotropic,
        oblique=args.oblique, seed=args.seed, file_ending=args.file_ending,
    )
    out = generate_dataset(args.out, config)
    print(f"wrote {config.num_cases} training + {config.num_test} test phantom case(s) to {out}")
    return EXIT_OK


def _add_check(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("check", help="verify a dataset and list every problem",
                       description="Check a dataset (nnU-Net or MSD layout). Exit 0 when clean (warnings "
                                   "allowed), 2 on any error. Never writes into the dataset.")
    p.add_argument("dataset", type=Path, help="dataset folder holding dataset.json")
    p.add_argument("--json", action="store_true", help="print a machine-readable JSON report")
    p.add_argument("--workers", type=int, default=1, help="parallel reader processes (default 1)")
    p.set_defaults(handler=_run_check)


def _run_check(args: argparse.Namespace) -> int:
    from nnseg.dataset import check_dataset

    report = check_dataset(args.dataset, workers=args.workers, show_progress=not args.json)
    print(report.to_json() if args.json else report.summary())
    return EXIT_OK if report.ok else EXIT_BAD_INPUT


def _add_plan(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plan", help="fingerprint a dataset and plan the experiment",
                       description="Check the dataset, write <work>/fingerprint.json and <work>/plans.json "
                                   "(2d, 3d_fullres and, when needed, 3d_lowres), and print a summary.")
    p.add_argument("dataset", type=Path, help="dataset folder holding dataset.json")
    p.add_argument("--work", type=Path, default=None, help="work folder (default ./nnseg_work)")
    p.add_argument("--preset", default="default",
                   help="planner preset: a name from plans/ (default, cpu, ...) or a path to a preset .json")
    p.add_argument("--gpu-memory-gb", type=float, default=None, help="plan for this much GPU memory")
    p.add_argument("--workers", type=int, default=None, help="reader processes (default: from cores and free memory)")
    p.add_argument("--preprocess", action="store_true", help="also preprocess every configuration (nnU-Net's "
                                                               "plan_and_preprocess in one step)")
    p.set_defaults(handler=_run_plan)


def _run_plan(args: argparse.Namespace) -> int:
    from nnseg.api import plan
    from nnseg.planning.summary import plan_summary
    from nnseg.preprocessing.preprocess import preprocess_dataset

    result = plan(args.dataset, args.work, preset=args.preset, gpu_memory_gb=args.gpu_memory_gb,
                  workers=args.workers)
    print(plan_summary(result.plan))
    print(f"wrote {result.fingerprint_path} and {result.plans_path}")
    if args.preprocess:
        _print_preprocess(preprocess_dataset(args.work, workers=args.workers))
    return EXIT_OK


def _add_preprocess(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("preprocess", help="crop, resample and normalize the training cases (resumable)",
                       description="Preprocess every training case for the planned configurations into "
                                   "<work>/preprocessed/. Rerunning skips finished cases and redoes cases whose "
                                   "plan changed; an interrupted run resumes without loss.")
    p.add_argument("--work", type=Path, default=None, help="work folder holding plans.json (default ./nnseg_work)")
    p.add_argument("--config", nargs="+", default=None, help="configurations (default: all planned)")
    p.add_argument("--dataset", type=Path, default=None, help="raw dataset folder (default: the one in plans.json)")
    p.add_argument("--workers", type=int, default=None, help="processes (default: from cores and free memory)")
    p.set_defaults(handler=_run_preprocess)


def _run_preprocess(args: argparse.Namespace) -> int:
    from nnseg.preprocessing.preprocess import preprocess_dataset

    _print_preprocess(preprocess_dataset(args.work, configurations=args.config, dataset_root=args.dataset,
                                         workers=args.workers))
    return EXIT_OK


def _print_preprocess(summaries) -> None:
    for s in summaries:
        print(f"preprocessed {s.configuration}: {s.processed} case(s) written, {s.skipped} already done -> {s.folder}")


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train one fold (resumes automatically)",
                       description="Train a U-Net for one configuration and fold on the preprocessed cache. "
                                   "Defaults are nnU-Net's recipe (1000 epochs x 250 iterations); a rerun resumes "
                                   "from checkpoint_latest.pt in the same MLflow run. Multi-GPU/multi-node: "
                                   "torchrun --nproc_per_node N -m nnseg train ...")
    p.add_argument("--work", type=Path, default=None, help="work folder (default ./nnseg_work)")
    p.add_argument("--config", default="3d_fullres", help="plan configuration (default 3d_fullres)")
    p.add_argument("--fold", default="0", help="fold index (0-4) or 'all' (default 0)")
    p.add_argument("--epochs", type=int, default=1000)
    p.add_argument("--iters-per-epoch", type=int, default=250)
    p.add_argument("--val-iters", type=int, default=50)
    p.add_argument("--batch-size", type=int, default=None, help="override the plan's batch size")
    p.add_argument("--lr", type=float, default=0.01, help="initial learning rate (default 0.01)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--no-amp", action="store_true", help="disable fp16 autocast on CUDA")
    p.add_argument("--compile", action="store_true", help="torch.compile the network")
    p.add_argument("--max-hours", type=float, default=None, help="stop after the epoch that crosses this budget")
    p.add_argument("--loader-threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=12345)
    p.add_argument("--fresh", action="store_true", help="ignore an existing checkpoint_latest.pt and start over")
    p.add_argument("--resume", action="store_true", help="resume (the default when a checkpoint exists)")
    p.add_argument("--tracking-uri", default=None,
                   help="MLflow URI (default: MLFLOW_TRACKING_URI or sqlite:///<work>/mlflow.db)")
    p.add_argument("--experiment", default=None, help="MLflow experiment (default: the dataset name)")
    p.add_argument("--no-tracking", action="store_true", help="do not log to MLflow")
    p.add_argument("--no-final-validation", action="store_true", help="skip the sliding-window validation")
    p.set_defaults(handler=_run_train)


def _run_train(args: argparse.Namespace) -> int:
    from nnseg.training.config import TrainConfig
    from nnseg.training.loop import train

    fold: int | str = args.fold if args.fold == "all" else _fold_index(args.fold)
    config = TrainConfig(
        configuration=args.config, fold=fold, epochs=args.epochs, iters_per_epoch=args.iters_per_epoch,
        val_iters=args.val_iters, batch_size=args.batch_size, initial_lr=args.lr, device=args.device,
        mixed_precision=not args.no_amp, compile=args.compile,
        max_wall_time_s=None if args.max_hours is None else args.max_hours * 3600,
        loader_threads=args.loader_threads, seed=args.seed, tracking_uri=args.tracking_uri,
        experiment=args.experiment, tracking=not args.no_tracking, final_validation=not args.no_final_validation,
    )
    result = train(args.work, config, resume=not args.fresh)
    print(f"trained {args.config} {config.fold_name}: {result.epochs_done} epoch(s), EMA pseudo-Dice "
          f"{result.ema_pseudo_dice:.4f} -> {result.fold_dir}")
    if result.validation is not None:
        print(f"validation mean Dice {result.validation['mean_dice']:.4f} "
              f"({', '.join(f'{k} {v:.4f}' for k, v in result.validation['mean_dice_per_class'].items())})")
    if result.run_id:
        from nnseg.tracking import default_tracking_uri, ui_hint

        print(f"MLflow run {result.run_id}: {ui_hint(args.tracking_uri or default_tracking_uri(args.work or Path('nnseg_work')))}")
    return EXIT_OK


def _fold_index(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise NnsegError(f"--fold must be a fold index or 'all', got {text!r}") from None


def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run the pipeline end to end on built-in phantom data",
                       description="synth -> check -> ... on a small phantom dataset, in minutes on a CPU.")
    p.add_argument("--out", type=Path, default=Path("demo"), help="working folder (default ./demo)")
    p.add_argument("--cases", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(handler=_run_demo)


def _run_demo(args: argparse.Namespace) -> int:
    from nnseg.demo import run_demo

    return EXIT_OK if run_demo(args.out, num_cases=args.cases, seed=args.seed) else EXIT_FAILED


def build_parser() -> argparse.ArgumentParser:
    """The ``nnseg`` argument parser with every subcommand."""
    from nnseg import __version__

    parser = argparse.ArgumentParser(prog="nnseg", description="Self-configuring 3D medical image segmentation.")
    parser.add_argument("--version", action="version", version=f"nnseg {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in (_add_synth, _add_check, _add_plan, _add_preprocess, _add_train, _add_demo):
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``nnseg`` console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "handler", None) is None:
        parser.print_help()
        return EXIT_BAD_INPUT
    try:
        return int(args.handler(args))
    except NnsegError as exc:
        print(f"nnseg: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("nnseg: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
