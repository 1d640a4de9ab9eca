"""``nnseg predict | evaluate | ensemble | find-best | postprocess``: models in, label maps and scores out."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from nnseg.cli.common import EXIT_BAD_INPUT, EXIT_OK, add_shard_options, launch_shard, warn
from nnseg.options import (
    add_config_options,
    cli_type,
    config_from_args,
    positive_float,
    positive_int,
    writable_folder,
)
from nnseg.workspace import Workspace


def add_predict(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "predict",
        help="segment images with trained models",
        description="Segment a folder (nnU-Net _0000 naming, single-channel files, DICOM series folders) or one "
        "image or DICOM series folder. "
        "Label maps are written with the input's geometry; the softmax is averaged over "
        "the folds. Cases already predicted are skipped unless --overwrite.",
    )
    p.add_argument("-i", "--input", type=Path, required=True, help="image folder or file")
    p.add_argument("-o", "--output", type=Path, required=True, help="output folder")
    p.add_argument(
        "-m",
        "--model",
        required=True,
        help="work folder, models/<config> folder, checkpoint file, export folder (nnseg export), or a registered "
        "model: models:/NAME/VERSION or models:/NAME@ALIAS (nnseg register)",
    )
    p.add_argument(
        "--tracking-uri",
        default=None,
        metavar="URI",
        help="MLflow server or store holding -m models:/... (default: the embedded store, as nnseg train)",
    )
    from nnseg.inference.config import PredictConfig

    add_config_options(p, PredictConfig)
    add_shard_options(p)
    p.set_defaults(handler=_run_predict)


def _run_predict(args: argparse.Namespace) -> int:
    from nnseg.inference.batch import predict_folder
    from nnseg.inference.config import PredictConfig
    from nnseg.inference.model import open_model

    config = config_from_args(PredictConfig, args)
    writable_folder("-o", args.output)
    model = open_model(args.model, config.configuration, config.folds, args.tracking_uri)
    shard, context = launch_shard(args)
    try:
        predictor = model.predictor(postprocess=config.postprocess, context=context, **config.predictor_settings())
        predictor.on_warning = warn
        if context.is_main:
            if model.manifest is not None:
                print(f"using {model.manifest.describe(model.location)}")
            for source in predictor.sources:  # a cascade's first-stage checkpoints included
                print(f"using {source.describe()}")
                if source.warning:
                    warn(source.warning)
        report = predict_folder(
            predictor,
            args.input,
            args.output,
            overwrite=config.overwrite,
            save_probabilities=config.save_probabilities,
            overlay=config.overlay,
            show_progress=context.is_main,
            shard=shard,
            output_format=config.output_format,
            series_uid=config.series,
            overlap=config.overlap,
        )
        reports = context.gather((report, predictor.times.summary()))
    finally:
        context.close()
    if not context.is_main:
        return EXIT_BAD_INPUT if report.failed else EXIT_OK
    written = sum(len(r.written) for r, _ in reports)
    skipped = sum(len(r.skipped) for r, _ in reports)
    failed = {case: message for r, _ in reports for case, message in r.failed.items()}
    where = f" by {len(reports)} processes" if len(reports) > 1 else ""
    part = "" if shard.is_whole or context.enabled else f" (part {args.part_id} of {args.num_parts})"
    print(
        f"predicted {written} case(s) into {args.output}{where}{part}"
        + (f", skipped {skipped} already predicted (use --overwrite)" if skipped else "")
    )
    for rank, (_, times) in enumerate(reports):
        print(f"time per stage{f' (rank {rank})' if len(reports) > 1 else ''}: {times}")
    for case_id, message in failed.items():
        print(f"nnseg: error: {case_id}: {message}", file=sys.stderr)
    return EXIT_BAD_INPUT if failed else EXIT_OK


def add_evaluate(sub: argparse._SubParsersAction) -> None:
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
        warn(warning)
    print(f"wrote {json_path} and {csv_path}")
    return EXIT_OK


def add_ensemble(sub: argparse._SubParsersAction) -> None:
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


def add_find_best(sub: argparse._SubParsersAction) -> None:
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


def add_postprocess(sub: argparse._SubParsersAction) -> None:
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
