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
from nnseg.options import (
    add_config_options,
    cli_type,
    config_from_args,
    device,
    non_negative_int,
    positive_float,
    positive_int,
    writable_folder,
)
from nnseg.workspace import Workspace

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error (exit 2) instead of the whole usage block."""

    def error(self, message: str):
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


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
    p = sub.add_parser(
        "synth",
        help="generate a phantom dataset (nnU-Net layout)",
        description="Write a realistic synthetic dataset: sample data for demos and tests.",
    )
    p.add_argument("out", type=Path, help="destination folder (new or empty)")
    p.add_argument("--cases", type=cli_type(positive_int, "--cases"), default=8, help="training cases (default 8)")
    p.add_argument(
        "--test-cases",
        type=cli_type(non_negative_int, "--test-cases"),
        default=0,
        help="extra cases in imagesTs/labelsTs (default 0)",
    )
    p.add_argument("--shape", type=_triple(int), default=(40, 48, 48), help="nominal shape k,j,i (default 40,48,48)")
    p.add_argument(
        "--spacing",
        type=_triple(float),
        default=(1.5, 1.2, 1.2),
        help="nominal voxel size in mm k,j,i (default 1.5,1.2,1.2)",
    )
    p.add_argument("--modality", choices=["CT", "MR"], default="CT")
    p.add_argument("--channels", type=cli_type(positive_int, "--channels"), default=1, help="channels (MR only for >1)")
    p.add_argument("--anisotropic", action="store_true", help="thick slices along k (3.5-5 mm)")
    p.add_argument("--no-oblique", dest="oblique", action="store_false", help="identity directions")
    p.add_argument("--file-ending", default=".nii.gz", choices=[".nii.gz", ".nii", ".mha", ".nrrd"])
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(handler=_run_synth)


def _run_synth(args: argparse.Namespace) -> int:
    from nnseg.synth import SynthConfig, generate_dataset

    config = SynthConfig(
        num_cases=args.cases,
        num_test=args.test_cases,
        shape=args.shape,
        spacing=args.spacing,
        modality=args.modality,
        channels=args.channels,
        anisotropic=args.anisotropic,
        oblique=args.oblique,
        seed=args.seed,
        file_ending=args.file_ending,
    )
    out = generate_dataset(args.out, config)
    print(f"wrote {config.num_cases} training + {config.num_test} test phantom case(s) to {out}")
    return EXIT_OK


def _add_check(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "check",
        help="verify a dataset and list every problem",
        description="Check a dataset (nnU-Net or MSD layout). Exit 0 when clean (warnings "
        "allowed), 2 on any error. Never writes into the dataset.",
    )
    p.add_argument("dataset", type=Path, help="dataset folder holding dataset.json")
    p.add_argument("--json", action="store_true", help="print a machine-readable JSON report")
    p.add_argument(
        "--workers", type=cli_type(positive_int, "--workers"), default=1, help="parallel reader processes (default 1)"
    )
    p.set_defaults(handler=_run_check)


def _run_check(args: argparse.Namespace) -> int:
    from nnseg.dataset import check_dataset

    report = check_dataset(args.dataset, workers=args.workers, show_progress=not args.json)
    print(report.to_json() if args.json else report.summary())
    return EXIT_OK if report.ok else EXIT_BAD_INPUT


def _add_plan(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "plan",
        help="fingerprint a dataset and plan the experiment",
        description="Check the dataset, write <work>/fingerprint.json and <work>/plans.json "
        "(2d, 3d_fullres and, when needed, 3d_lowres), and print a summary.",
    )
    p.add_argument("dataset", type=Path, help="dataset folder holding dataset.json")
    p.add_argument("--work", type=Path, default=None, help="work folder (default ./nnseg_work)")
    p.add_argument(
        "--preset",
        default="default",
        help="planner preset: a name from plans/ (default, cpu, ...) or a path to a preset .json",
    )
    p.add_argument(
        "--gpu-memory-gb",
        type=cli_type(positive_float, "--gpu-memory-gb"),
        default=None,
        help="plan for this much GPU memory",
    )
    p.add_argument(
        "--workers",
        type=cli_type(positive_int, "--workers"),
        default=None,
        help="reader processes (default: from cores and free memory)",
    )
    p.add_argument(
        "--preprocess",
        action="store_true",
        help="also preprocess every configuration (nnU-Net's plan_and_preprocess in one step)",
    )
    p.set_defaults(handler=_run_plan)


def _run_plan(args: argparse.Namespace) -> int:
    from nnseg.api import plan
    from nnseg.planning.summary import plan_summary
    from nnseg.preprocessing.preprocess import preprocess_dataset

    result = plan(args.dataset, args.work, preset=args.preset, gpu_memory_gb=args.gpu_memory_gb, workers=args.workers)
    print(plan_summary(result.plan))
    print(f"wrote {result.fingerprint_path} and {result.plans_path}")
    if args.preprocess:
        _print_preprocess(preprocess_dataset(args.work, workers=args.workers))
    return EXIT_OK


def _add_preprocess(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "preprocess",
        help="crop, resample and normalize the training cases (resumable)",
        description="Preprocess every training case for the planned configurations into "
        "<work>/preprocessed/. Rerunning skips finished cases and redoes cases whose "
        "plan changed; an interrupted run resumes without loss.",
    )
    p.add_argument("--work", type=Path, default=None, help="work folder holding plans.json (default ./nnseg_work)")
    p.add_argument("--config", nargs="+", default=None, help="configurations (default: all planned)")
    p.add_argument("--dataset", type=Path, default=None, help="raw dataset folder (default: the one in plans.json)")
    p.add_argument(
        "--workers",
        type=cli_type(positive_int, "--workers"),
        default=None,
        help="processes (default: from cores and free memory)",
    )
    p.set_defaults(handler=_run_preprocess)


def _run_preprocess(args: argparse.Namespace) -> int:
    from nnseg.preprocessing.preprocess import preprocess_dataset

    _print_preprocess(
        preprocess_dataset(args.work, configurations=args.config, dataset_root=args.dataset, workers=args.workers)
    )
    return EXIT_OK


def _print_preprocess(summaries) -> None:
    for s in summaries:
        print(f"preprocessed {s.configuration}: {s.processed} case(s) written, {s.skipped} already done -> {s.folder}")


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train one fold (resumes automatically)",
        description="Train a U-Net for one configuration and fold on the preprocessed cache. "
        "Defaults are nnU-Net's recipe (1000 epochs x 250 iterations); a rerun resumes "
        "from checkpoint_latest.pt in the same MLflow run. Multi-GPU/multi-node: "
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


def _add_predict(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "predict",
        help="segment images with trained models",
        description="Segment a folder (nnU-Net _0000 naming or single-channel files) or one image. "
        "Label maps are written with the input's geometry; the softmax is averaged over "
        "the folds. Cases already predicted are skipped unless --overwrite.",
    )
    p.add_argument("-i", "--input", type=Path, required=True, help="image folder or file")
    p.add_argument("-o", "--output", type=Path, required=True, help="output folder")
    p.add_argument(
        "-m", "--model", type=Path, required=True, help="work folder, models/<config> folder, or a checkpoint file"
    )
    from nnseg.inference.config import PredictConfig

    add_config_options(p, PredictConfig)
    p.set_defaults(handler=_run_predict)


def _model_location(model: Path, config: str) -> tuple[Path, Path | None]:
    """(checkpoint file or folder with fold_*, work folder when known)."""
    if not model.exists():
        raise NnsegError(
            f"-m {model}: not found; give a work folder (holding plans.json and models/), a "
            "models/<config> folder, a fold_<k> folder or a checkpoint file"
        )
    work = Workspace.containing(model)
    if work is not None and work.root == model:
        if not work.models(config).is_dir():
            raise NnsegError(
                f"-m {model}: no trained {config} model in it (no {work.models(config)}); train it "
                f"first (nnseg train --work {model} --config {config}) or choose another -c"
            )
        return work.models(config), model
    if work is not None and work.models(model.name) == model:
        return model, work.root
    return model, None


def _warn(message: str) -> None:
    from nnseg.progress import write_line

    write_line(f"nnseg: warning: {message}", error=True)


def _run_predict(args: argparse.Namespace) -> int:
    from nnseg.inference.batch import predict_folder
    from nnseg.inference.config import PredictConfig
    from nnseg.inference.predictor import Predictor

    config = config_from_args(PredictConfig, args)
    writable_folder("-o", args.output)
    location, work = _model_location(args.model, config.configuration)
    postprocess = None
    if work is not None and config.postprocess:
        postprocess = _load_postprocessing(work, config.configuration)
    predictor = Predictor.from_checkpoints(
        location,
        folds=config.folds,
        device=config.device,
        mirror=config.mirror,
        step_size=config.step_size,
        window_batch=config.window_batch,
    )
    predictor.on_warning = _warn
    for source in predictor.sources:
        print(f"using {source.describe()}")
        if source.warning:
            _warn(source.warning)
    report = predict_folder(
        predictor,
        args.input,
        args.output,
        overwrite=config.overwrite,
        save_probabilities=config.save_probabilities,
        postprocess=postprocess,
        overlay=config.overlay,
    )
    print(
        f"predicted {len(report.written)} case(s) into {args.output}"
        + (f", skipped {len(report.skipped)} already predicted (use --overwrite)" if report.skipped else "")
    )
    print(f"time per stage: {predictor.times.summary()}")
    for case_id, message in report.failed.items():
        print(f"nnseg: error: {case_id}: {message}", file=sys.stderr)
    return EXIT_BAD_INPUT if report.failed else EXIT_OK


def _load_postprocessing(work: Path, config: str):
    """The postprocessing rule chosen by find-best for this configuration, or None."""
    from nnseg.ensembling import InferenceChoice

    path = Workspace.at(work).inference_choice
    if not path.is_file():
        return None
    choice = InferenceChoice.load(path)
    return choice.postprocessing.apply if config in choice.configurations else None


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="score predictions against reference label maps",
        description="Per case and class: Dice, IoU, HD95 (mm), normalized surface Dice, volume "
        "difference. Writes metrics.json and metrics.csv and prints a summary table.",
    )
    p.add_argument("--pred", type=Path, required=True, help="folder of predicted label maps")
    p.add_argument("--ref", type=Path, required=True, help="folder of reference label maps")
    p.add_argument("--dataset-json", type=Path, default=None, help="take label names from this dataset.json")
    p.add_argument("--nsd-tolerance-mm", type=cli_type(positive_float, "--nsd-tolerance-mm"), default=1.0)
    p.add_argument("--out", type=Path, default=None, help="where to write metrics.json/csv (default: --pred)")
    p.add_argument("--workers", type=cli_type(positive_int, "--workers"), default=1)
    p.set_defaults(handler=_run_evaluate)


def _run_evaluate(args: argparse.Namespace) -> int:
    from nnseg.evaluation import evaluate_folders

    labels = None
    if args.dataset_json is not None:
        from nnseg.dataset.spec import read_labels

        labels = read_labels(args.dataset_json)
    writable_folder("--out", args.out or args.pred)
    summary = evaluate_folders(
        args.pred, args.ref, labels, nsd_tolerance_mm=args.nsd_tolerance_mm, workers=args.workers
    )
    json_path, csv_path = summary.write(args.out or args.pred)
    print(summary.table())
    for warning in summary.warnings:
        _warn(warning)
    print(f"wrote {json_path} and {csv_path}")
    return EXIT_OK


def _add_ensemble(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "ensemble",
        help="average the saved probabilities of several prediction folders",
        description="Average <case>.npz probabilities (nnseg predict --save-probabilities) of two or "
        "more folders and write the argmax label maps with the inputs' geometry.",
    )
    p.add_argument("-i", "--input", type=Path, nargs="+", required=True, help="prediction folders")
    p.add_argument("-o", "--output", type=Path, required=True)
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(handler=_run_ensemble)


def _run_ensemble(args: argparse.Namespace) -> int:
    from nnseg.ensembling import ensemble_folders

    writable_folder("-o", args.output)
    written = ensemble_folders(args.input, args.output, overwrite=args.overwrite)
    print(f"wrote {len(written)} ensembled case(s) to {args.output}")
    return EXIT_OK


def _add_find_best(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "find-best",
        help="pick the best configuration/ensemble and postprocessing by CV Dice",
        description="Score every trained configuration and pair ensemble on the cross-validation "
        "predictions, decide per class whether keeping the largest connected component "
        "helps, and write <work>/inference.json (applied by nnseg predict).",
    )
    p.add_argument("--work", type=Path, default=None)
    p.add_argument("--configs", nargs="+", default=None, help="configurations to consider (default: all trained)")
    p.set_defaults(handler=_run_find_best)


def _run_find_best(args: argparse.Namespace) -> int:
    from nnseg.ensembling import find_best

    result = find_best(args.work, configurations=args.configs)
    for name, value in sorted(result["candidates"].items(), key=lambda item: -item[1]):
        print(f"{name:<30} mean CV Dice {value:.4f}")
    print(
        f"best: {' + '.join(result['configurations'])} ({result['mean_dice']:.4f} over {result['num_cases']} "
        f"cases); postprocessing: {result['postprocessing']}"
    )
    return EXIT_OK


def _add_postprocess(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("postprocess", help="apply inference.json's postprocessing to a folder of label maps")
    p.add_argument("-i", "--input", type=Path, required=True)
    p.add_argument("-o", "--output", type=Path, required=True)
    p.add_argument("--work", type=Path, default=None, help="work folder holding inference.json")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(handler=_run_postprocess)


def _run_postprocess(args: argparse.Namespace) -> int:
    from nnseg.ensembling import InferenceChoice
    from nnseg.postprocessing import postprocess_folder

    rule = InferenceChoice.load(Workspace.at(args.work).inference_choice).postprocessing
    writable_folder("-o", args.output)
    written = postprocess_folder(args.input, args.output, rule, overwrite=args.overwrite)
    print(f"postprocessed {len(written)} case(s) into {args.output} ({rule.describe()})")
    return EXIT_OK


def _add_demo(sub: argparse._SubParsersAction) -> None:
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


def build_parser() -> argparse.ArgumentParser:
    """The ``nnseg`` argument parser with every subcommand."""
    from nnseg import __version__

    parser = _Parser(prog="nnseg", description="Self-configuring 3D medical image segmentation.")
    parser.add_argument("--version", action="version", version=f"nnseg {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in (
        _add_synth,
        _add_check,
        _add_plan,
        _add_preprocess,
        _add_train,
        _add_predict,
        _add_evaluate,
        _add_ensemble,
        _add_find_best,
        _add_postprocess,
        _add_demo,
    ):
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
    except OSError as exc:  # a folder that cannot be written, a full disk: the user's environment, not a bug
        where = f"{exc.filename}: " if exc.filename else ""
        print(
            f"nnseg: error: {where}{exc.strerror or exc}; check the path, its permissions and free space",
            file=sys.stderr,
        )
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("nnseg: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
