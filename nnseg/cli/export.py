"""``nnseg export``: trained folds to ONNX or OpenVINO IR, checked against PyTorch."""

from __future__ import annotations

import argparse
from pathlib import Path

from nnseg.cli.common import EXIT_OK, add_trained_model_options, warn
from nnseg.options import cli_type, positive_int


def add_export(sub: argparse._SubParsersAction) -> None:
    from nnseg.deploy.settings import (
        CALIBRATION_PATCHES,
        CALIBRATION_SEED,
        MAX_DICE_DROP,
        MIN_LABEL_AGREEMENT,
        TOLERANCE,
    )
    from nnseg.inference.config import EXPORT_FORMATS

    p = sub.add_parser(
        "export",
        help="export trained models to ONNX or OpenVINO IR",
        description="Write each fold's network (eval mode, no deep-supervision heads, windows of the plan's patch "
        "size with a dynamic batch axis) and manifest.json (plan, labels, postprocessing, weights sha256, "
        f"parity). Each file's logits must match PyTorch's within {TOLERANCE:g} of the logits' scale (max(1, max "
        f"|logit|)), with >= {MIN_LABEL_AGREEMENT:g} of the voxels labelled alike, on random and on preprocessed "
        "training patches, else nothing is written. Predict with nnseg predict -m OUT.",
    )
    p.add_argument(
        "-m", "--model", type=Path, required=True, help="work folder, models/<config> folder, fold folder or checkpoint"
    )
    add_trained_model_options(
        p, "folds to export (default: every cross-validation fold found; fold_all only when named or alone)"
    )
    # no argparse choices: an unknown format gets the same one-line NnsegError as from the Python API
    p.add_argument("--format", required=True, metavar="FORMAT", help=" | ".join(EXPORT_FORMATS))
    p.add_argument("-o", "--output", type=Path, required=True, help="export folder (created; an export is replaced)")
    q = p.add_argument_group("reduced precision (OpenVINO)")
    reduced = q.add_mutually_exclusive_group()
    reduced.add_argument(
        "--int8",
        action="store_true",
        help="quantize with NNCF (post-training, calibrated on the fold's preprocessed training patches) and "
        "check the Dice on the fold's validation cases against fp32; needs -m in a work folder",
    )
    reduced.add_argument(
        "--bf16",
        action="store_true",
        help="run in bf16 (CPUs with AVX512-BF16/AMX) after the same Dice check against fp32; needs -m in a work "
        "folder",
    )
    q.add_argument(
        "--calibration-patches",
        type=cli_type(positive_int, "--calibration-patches"),
        default=CALIBRATION_PATCHES,
        metavar="N",
        help=f"calibration patches per fold (default {CALIBRATION_PATCHES})",
    )
    q.add_argument(
        "--calibration-seed",
        type=int,
        default=CALIBRATION_SEED,
        metavar="S",
        help=f"seed of the calibration sampling (default {CALIBRATION_SEED})",
    )
    q.add_argument(
        "--max-dice-drop",
        type=float,
        default=MAX_DICE_DROP,
        metavar="D",
        help=f"refuse when the mean validation Dice drops by more than D (default {MAX_DICE_DROP:g})",
    )
    q.add_argument("--force", action="store_true", help="write the int8/bf16 export even when its Dice drops more")
    p.set_defaults(handler=_run_export)


def _run_export(args: argparse.Namespace) -> int:
    from nnseg.deploy.export import export_model
    from nnseg.deploy.settings import QuantizationSettings
    from nnseg.errors import NnsegError

    int8_options = [
        name
        for name, given in (
            ("--calibration-patches", args.calibration_patches != QuantizationSettings.calibration_patches),
            ("--calibration-seed", args.calibration_seed != QuantizationSettings.seed),
        )
        if given
    ]
    if int8_options and not args.int8:
        raise NnsegError(f"{', '.join(int8_options)}: only with --int8")
    checked_options = [
        name
        for name, given in (
            ("--max-dice-drop", args.max_dice_drop != QuantizationSettings.max_dice_drop),
            ("--force", args.force),
        )
        if given
    ]
    if checked_options and not (args.int8 or args.bf16):
        raise NnsegError(f"{', '.join(checked_options)}: only with --int8 or --bf16")
    precision = "int8" if args.int8 else "bf16" if args.bf16 else "fp32"
    settings = QuantizationSettings(args.calibration_patches, args.calibration_seed, args.max_dice_drop, args.force)
    manifest = export_model(
        args.model,
        args.output,
        format=args.format,
        folds=args.folds,
        configuration=args.config,
        precision=precision,
        quantization=settings,
        on_warning=warn,
    )
    for entry in manifest.folds:
        real = entry.parity["real"]
        figures = _parity_figures("random", entry.parity["random"])
        figures += f"; {_parity_figures('real', real)}" if real else "; no preprocessed cases"
        print(f"fold {entry.fold}: {args.output / entry.file} (max |logit diff| vs PyTorch: {figures})")
        if entry.quantization is not None:
            dice = entry.quantization["dice"]
            classes = ", ".join(f"{c} {v:+.4f}" for c, v in dice["change"]["per_class"].items())
            calibration = entry.quantization.get("calibration")
            print(
                f"fold {entry.fold}: {precision} mean Dice {dice[precision]['mean']:.4f} vs fp32 "
                f"{dice['fp32']['mean']:.4f} on {len(entry.quantization['validation_cases'])} validation case(s) "
                f"(change {dice['change']['mean']:+.4f}; {classes})"
                + (f", calibrated on {calibration['patches']} patches" if calibration else "")
            )
    print(f"wrote {manifest.describe(args.output)}; predict with: nnseg predict -m {args.output} -i IMAGES -o OUT")
    return EXIT_OK


def _parity_figures(name: str, figures: dict) -> str:
    """``random 3e-05 (4e-06 of scale 7.2), labels 100 %`` (older manifests lack the scale and agreement)."""
    text = f"{name} {figures['max_abs_diff']:.2g}"
    if "relative_diff" in figures:
        text += f" ({figures['relative_diff']:.2g} of scale {figures['logit_scale']:.3g}), labels "
        text += f"{100 * figures['label_agreement']:.4g} %"
    return text
