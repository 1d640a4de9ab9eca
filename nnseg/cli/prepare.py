"""``nnseg synth | check | plan | preprocess``: data in, plans and the preprocessed cache out."""

from __future__ import annotations

import argparse
import textwrap
from dataclasses import replace
from pathlib import Path

from nnseg.cli.common import EXIT_BAD_INPUT, EXIT_OK, add_shard_options, launch_shard, triple
from nnseg.options import (
    cli_type,
    non_negative_int,
    positive_float,
    positive_int,
)


def add_synth(sub: argparse._SubParsersAction) -> None:
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
    p.add_argument("--shape", type=triple(int), default=(40, 48, 48), help="nominal shape k,j,i (default 40,48,48)")
    p.add_argument(
        "--spacing",
        type=triple(float),
        default=(1.5, 1.2, 1.2),
        help="nominal voxel size in mm k,j,i (default 1.5,1.2,1.2)",
    )
    p.add_argument("--modality", choices=["CT", "MR"], default=None, help="CT (default) or MR (--regions: MR)")
    p.add_argument(
        "--channels",
        type=cli_type(positive_int, "--channels"),
        default=None,
        help="channels (MR only for >1; default 1, --regions: 4)",
    )
    p.add_argument("--anisotropic", action="store_true", help="thick slices along k (3.5-5 mm)")
    p.add_argument("--no-oblique", dest="oblique", action="store_false", help="identity directions")
    p.add_argument("--file-ending", default=".nii.gz", choices=[".nii.gz", ".nii", ".mha", ".nrrd"])
    p.add_argument(
        "--structure",
        dest="structures",
        action="append",
        type=_structure,
        metavar="NAME:VOXELS[xCOUNT]",
        help="a labelled structure class: COUNT blobs (default 1) of about VOXELS voxels per case; repeat for "
        "more classes, labelled 1, 2, ... in order (default: an organ with a lesion inside), e.g. "
        "--structure organ:1000 --structure nodule:100 --structure lesion:30x4",
    )
    p.add_argument(
        "--regions",
        action="store_true",
        help="a BraTS-like brain-tumour set: 4 MR channels (T1, T1ce, T2, FLAIR), labels 1 edema, 2 non-enhancing "
        "core, 3 enhancing, declared as nested regions whole_tumor > tumor_core > enhancing (region training)",
    )
    p.add_argument(
        "--sparse",
        type=float,
        default=None,
        metavar="FRACTION",
        help="keep the training labels of only this fraction of the slices along the first array axis (k, "
        "through-plane), chosen at random per case; the rest becomes the 'ignore' label. labelsTs stays dense",
    )
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(handler=_run_synth)


def _structure(text: str):
    from nnseg.errors import NnsegError
    from nnseg.synth import Structure

    try:
        return Structure.parse(text)
    except NnsegError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("--structure").lstrip(": ")) from None


def _run_synth(args: argparse.Namespace) -> int:
    from nnseg.synth import SynthConfig, generate_dataset

    config = SynthConfig(
        num_cases=args.cases,
        num_test=args.test_cases,
        shape=args.shape,
        spacing=args.spacing,
        modality=args.modality or ("MR" if args.regions else "CT"),
        channels=args.channels or (4 if args.regions else 1),
        anisotropic=args.anisotropic,
        oblique=args.oblique,
        seed=args.seed,
        file_ending=args.file_ending,
        structures=tuple(args.structures or ()),
        regions=args.regions,
        sparse=args.sparse,
    )
    out = generate_dataset(args.out, config)
    print(f"wrote {config.num_cases} training + {config.num_test} test phantom case(s) to {out}")
    return EXIT_OK


def add_check(sub: argparse._SubParsersAction) -> None:
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


def add_plan(sub: argparse._SubParsersAction) -> None:
    from nnseg.networks.plans import NETWORK_PLANS
    from nnseg.planning.presets import preset_summaries

    def listing(title: str, lines: dict[str, str]) -> str:
        width = max(len(name) for name in lines) + 2
        wrapped = [
            textwrap.fill(text, 100, initial_indent=f"  {name:<{width}}", subsequent_indent=" " * (width + 2))
            for name, text in lines.items()
        ]
        return title + "\n" + "\n".join(wrapped)

    p = sub.add_parser(
        "plan",
        help="fingerprint a dataset and plan the experiment",
        description="Check the dataset, write <work>/fingerprint.json and <work>/plans.json "
        "(2d, 3d_fullres and, when needed, 3d_lowres), and print a summary.",
        epilog=listing("architectures (--architecture):", {n: c.summary for n, c in NETWORK_PLANS.items()})
        + "\n\n"
        + listing("presets (--preset):", preset_summaries()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("dataset", type=Path, help="dataset folder holding dataset.json")
    p.add_argument("--work", type=Path, default=None, help="work folder (default ./nnseg_work)")
    p.add_argument(
        "--preset",
        default=None,
        help="planner preset: a name from plans/ (default, cpu, ...) or a path to a preset .json (default: "
        "default; with --transfer-plan, the preset the source was planned with)",
    )
    p.add_argument(
        "--transfer-plan",
        type=Path,
        default=None,
        metavar="OTHER_WORK",
        help="take each configuration's network, patch and batch from the plan in this work folder (another "
        "dataset's), so that its checkpoints fit `nnseg train --pretrained`; spacing and normalization stay "
        "this dataset's",
    )
    p.add_argument(
        "--architecture",
        choices=list(NETWORK_PLANS),
        default=None,
        help="network to plan (default: the preset's, unet for nnU-Net's presets); patch and batch are fitted "
        "to this architecture's own footprint",
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

    result = plan(
        args.dataset,
        args.work,
        preset=args.preset,
        architecture=args.architecture,
        gpu_memory_gb=args.gpu_memory_gb,
        workers=args.workers,
        transfer_plan=args.transfer_plan,
    )
    print(plan_summary(result.plan))
    for note in result.transfer_notes:
        print(f"transfer: {note}")
    print(f"wrote {result.fingerprint_path} and {result.plans_path}")
    if args.preprocess:
        _print_preprocess(preprocess_dataset(args.work, workers=args.workers))
    return EXIT_OK


def add_preprocess(sub: argparse._SubParsersAction) -> None:
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
    add_shard_options(p)
    p.set_defaults(handler=_run_preprocess)


def _run_preprocess(args: argparse.Namespace) -> int:
    from nnseg.preprocessing.preprocess import preprocess_dataset

    shard, context = launch_shard(args)
    try:
        summaries = preprocess_dataset(
            args.work,
            configurations=args.config,
            dataset_root=args.dataset,
            workers=args.workers,
            show_progress=context.is_main,
            shard=shard,
        )
        gathered = context.gather(summaries)
    finally:
        context.close()
    if context.is_main:
        for rank_summaries in zip(*gathered):  # per configuration, every rank's summary
            first = rank_summaries[0]
            processed = sum(s.processed for s in rank_summaries)
            skipped = sum(s.skipped for s in rank_summaries)
            _print_preprocess([replace(first, processed=processed, skipped=skipped)])
    return EXIT_OK


def _print_preprocess(summaries) -> None:
    for s in summaries:
        print(f"preprocessed {s.configuration}: {s.processed} case(s) written, {s.skipped} already done -> {s.folder}")
