"""``nnseg export``: trained folds to ONNX, OpenVINO IR or TorchScript, checked against PyTorch."""

from __future__ import annotations

import argparse
from pathlib import Path

from nnseg.cli.common import EXIT_OK
from nnseg.options import cli_type, fold


def add_export(sub: argparse._SubParsersAction) -> None:
    from nnseg.deploy.export import FORMATS, TOLERANCE

    p = sub.add_parser(
        "export",
        help="export trained models to ONNX, OpenVINO IR or TorchScript",
        description="Write each fold's network (eval mode, no deep-supervision heads, windows of the plan's patch "
        "size with a dynamic batch axis) and manifest.json (plan, labels, postprocessing, weights sha256, "
        f"parity). Each file's logits must match PyTorch's within {TOLERANCE:g} on random and on preprocessed "
        "training patches, else nothing is written. Predict with nnseg predict -m OUT.",
    )
    p.add_argument(
        "-m", "--model", type=Path, required=True, help="work folder, models/<config> folder, fold folder or checkpoint"
    )
    p.add_argument("-c", "--config", default="3d_fullres", metavar="NAME", help="configuration (default 3d_fullres)")
    p.add_argument(
        "-f",
        "--folds",
        nargs="+",
        type=cli_type(fold, "--folds"),
        default=None,
        metavar="K",
        help="folds to export (default: every cross-validation fold found; fold_all only when named or alone)",
    )
    # no argparse choices: an unknown format gets the same one-line NnsegError as from the Python API
    p.add_argument("--format", required=True, metavar="FORMAT", help=" | ".join(FORMATS))
    p.add_argument("-o", "--output", type=Path, required=True, help="export folder (created; an export is replaced)")
    p.set_defaults(handler=_run_export)


def _run_export(args: argparse.Namespace) -> int:
    from nnseg.deploy.export import export_model

    manifest = export_model(args.model, args.output, format=args.format, folds=args.folds, configuration=args.config)
    for entry in manifest.folds:
        real = entry.parity["real"]
        figures = f"random {entry.parity['random']['max_abs_diff']:.2g}"
        figures += f", real {real['max_abs_diff']:.2g}" if real else ", no preprocessed cases"
        print(f"fold {entry.fold}: {args.output / entry.file} (max |logit diff| vs PyTorch: {figures})")
    print(f"wrote {manifest.describe(args.output)}; predict with: nnseg predict -m {args.output} -i IMAGES -o OUT")
    return EXIT_OK
