"""Reduced precision for ``nnseg export --format openvino``: ``--int8`` (NNCF post-training quantization) and
``--bf16`` (OpenVINO's bf16 inference on CPUs that have it), each checked by Dice.

Per fold: the fp32 IR (already checked against PyTorch) is quantized by :func:`nncf.quantize` on
preprocessed patches of the fold's training cases (the plan's patch size, a third of them centred on
foreground as training samples them, seeded), with NNCF's overflow fix on every layer (CPUs without
VNNI can saturate int8 accumulators, which leaky-ReLU networks reach). Then the fold's validation cases
(``splits.json``) are predicted from their raw images by the fp32 and by the int8 model through the
predictor of ``nnseg predict`` and scored as final validation scores them
(:func:`nnseg.inference.scoring.score_cases`). A mean Dice drop above ``max_dice_drop`` refuses the
export unless forced. ``--bf16`` keeps the fp32 IR and records ``precision: bf16`` in the manifest, so
OpenVINO runs it with ``INFERENCE_PRECISION_HINT=bf16``; it is checked the same way (no calibration).
What the manifest records per fold (``quantization``; for bf16 without the NNCF and calibration keys,
and ``bf16`` in place of ``int8``)::

    {"overflow_fix": "enable", "nncf_version": str,
     "calibration": {"cases": [...], "patches": n, "seed": s, "oversample_foreground": f},
     "validation_cases": [...],
     "dice": {"fp32": {"mean": x, "per_class": {...}}, "int8": {...}, "change": {"mean": d, "per_class": {...}}},
     "max_dice_drop": t, "forced": bool}
"""

from __future__ import annotations

import contextlib
import io
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from nnseg.deploy.settings import OVERSAMPLE_FOREGROUND, QuantizationSettings
from nnseg.errors import NnsegError
from nnseg.inference import backends
from nnseg.planning.plan import Plan
from nnseg.schema import read_json
from nnseg.workspace import Workspace


def require_nncf() -> Any:
    """Import NNCF (and OpenVINO), or raise an NnsegError with the pip command that installs them."""
    backends.require("openvino", "--int8")
    try:
        import nncf
    except ImportError:
        raise NnsegError("--int8 needs the nncf package: pip install 'nnseg[openvino]'") from None
    return nncf


def fold_cases(work: Path | None, fold: int | str, precision: str = "int8") -> tuple[Path, list[str], list[str]]:
    """(work folder, training cases, validation cases) of a cross-validation ``fold`` in ``work``'s splits.json."""
    if work is None:
        calibration = " and calibration its preprocessed training cases" if precision == "int8" else ""
        raise NnsegError(
            f"--{precision}: -m must be a work folder (or lie in one): the Dice check needs the fold's "
            f"validation cases (splits.json){calibration}"
        )
    if str(fold) == "all":
        raise NnsegError(
            f"--{precision}: fold_all has no validation cases to check the {precision} model's Dice on; export a "
            "cross-validation fold (-f 0 ...)"
        )
    path = Workspace(work).splits
    splits = read_json(path, "splits file")
    index = int(fold)
    if not isinstance(splits, list) or not 0 <= index < len(splits) or not isinstance(splits[index], dict):
        raise NnsegError(f"{path}: has no fold {fold}; the checkpoint's fold must be in the work folder's splits")
    train, val = list(splits[index].get("train", [])), list(splits[index].get("val", []))
    if not train or not val:
        raise NnsegError(f"{path}: fold {fold} needs training and validation cases for --{precision}")
    return work, train, val


def calibration_patches(
    work: Path, plan: Plan, configuration: str, case_ids: Sequence[str], count: int, seed: int
) -> tuple[list[str], np.ndarray]:
    """(case ids drawn, ``count`` patches ``(count, c, *patch)``) from the preprocessed cache, sampled as in
    training (uniform cases, a third centred on foreground) with ``seed``."""
    from nnseg.training.data import PatchSampler

    config = plan.configuration(configuration)
    sampler = PatchSampler(
        Workspace(work).preprocessed(config.data_identifier),
        sorted(case_ids),
        config.patch_size,
        count,
        oversample_foreground=OVERSAMPLE_FOREGROUND,
        dimensions=config.dimensions,
        seed=seed,
    )
    batch = sampler.next_batch()
    return list(batch.case_ids), batch.image


def quantize_ir(source: Path, target: Path, patches: np.ndarray) -> None:
    """Quantize the OpenVINO IR ``source`` to int8 on ``patches`` (one per calibration step) into ``target``."""
    nncf = require_nncf()
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, OverflowFix

    ov = backends.require("openvino", "--int8")
    model = ov.Core().read_model(str(source))
    dataset = nncf.Dataset([patches[i : i + 1] for i in range(len(patches))])
    with contextlib.redirect_stdout(io.StringIO()):  # NNCF's progress bars would mix with nnseg's output
        quantized = nncf.quantize(
            model,
            dataset,
            subset_size=len(patches),
            advanced_parameters=AdvancedQuantizationParameters(overflow_fix=OverflowFix.ENABLE),
        )
    backends.save_openvino(quantized, target)


def _dice(summary: Any) -> dict[str, Any]:
    return {"mean": summary.mean_dice, "per_class": dict(summary.mean_dice_per_class)}


def _defined(value: Any) -> Any:
    """``value`` with undefined (NaN) figures as None, for JSON."""
    if isinstance(value, dict):
        return {k: _defined(v) for k, v in value.items()}
    return None if isinstance(value, float) and not math.isfinite(value) else value


def _format(value: float) -> str:
    return f"{value:+.4f}" if math.isfinite(value) else "undefined"


def check_dice(
    plan: Plan,
    configuration: str,
    runners: dict[str, backends.WindowRunner],
    val_ids: Sequence[str],
    settings: QuantizationSettings,
    fold: int | str,
    on_warning: Callable[[str], None],
) -> dict[str, Any]:
    """Score ``runners`` (``{"fp32": ..., precision: ...}``) on ``val_ids`` through the same predictor; NnsegError
    (or, forced, a warning) when the reduced precision's mean Dice is more than ``settings.max_dice_drop`` below."""
    from nnseg.inference.predictor import Predictor
    from nnseg.inference.scoring import score_cases

    (reduced,) = (name for name in runners if name != "fp32")
    figures = {}
    for name, runner in runners.items():
        predictor = Predictor(plan, configuration, [], backend="openvino", device="cpu", runners=[runner])
        summary = score_cases(predictor, plan, list(val_ids), desc=f"fold {fold} {name} Dice", show_progress=False)
        figures[name] = _dice(summary)
    change = {
        "mean": figures[reduced]["mean"] - figures["fp32"]["mean"],
        "per_class": {c: figures[reduced]["per_class"][c] - v for c, v in figures["fp32"]["per_class"].items()},
    }
    figures["change"] = change
    drop = -change["mean"]
    classes = ", ".join(f"{c} {_format(v)}" for c, v in change["per_class"].items())
    text = (
        f"fold {fold}: the {reduced} model's mean Dice on {len(val_ids)} validation case(s) is "
        f"{figures[reduced]['mean']:.4f} against fp32's {figures['fp32']['mean']:.4f} (change {_format(-drop)}; "
        f"per class {classes}), more than --max-dice-drop {settings.max_dice_drop:g} below"
    )
    if not drop <= settings.max_dice_drop:  # NaN (no Dice defined) is not a pass either
        if not settings.force:
            raise NnsegError(f"{text}; nothing was exported. Export fp32, raise --max-dice-drop, or pass --force")
        on_warning(f"{text}; written anyway (--force)")
    return _defined(figures)


def _checked(dice: dict[str, Any], val_ids: Sequence[str], settings: QuantizationSettings) -> dict[str, Any]:
    """The manifest entries of a Dice check."""
    change = dice["change"]["mean"]
    return {
        "validation_cases": list(val_ids),
        "dice": dice,
        "max_dice_drop": settings.max_dice_drop,
        "forced": settings.force and not (change is not None and -change <= settings.max_dice_drop),
    }


def reduce_precision(
    precision: str,
    fp32: Path,
    target: Path,
    *,
    work: Path | None,
    plan: Plan,
    configuration: str,
    fold: int | str,
    settings: QuantizationSettings,
    on_warning: Callable[[str], None],
) -> dict[str, Any]:
    """One fold in ``precision`` checked against its fp32 IR by Dice; returns the manifest's ``quantization``.

    ``int8``: ``fp32`` quantized into ``target``. ``bf16``: ``fp32`` itself, run with the bf16 hint (``target``
    unused: the export keeps the fp32 IR).
    """
    if precision == "bf16":
        _, _, val_ids = fold_cases(work, fold, "bf16")
        runners: dict[str, backends.WindowRunner] = {
            "fp32": backends.OpenVinoRunner(fp32),
            "bf16": backends.OpenVinoRunner(fp32, precision="bf16"),
        }
        dice = check_dice(plan, configuration, runners, val_ids, settings, fold, on_warning)
        return {"inference_precision_hint": "bf16", **_checked(dice, val_ids, settings)}
    nncf = require_nncf()
    work, train_ids, val_ids = fold_cases(work, fold)
    drawn, patches = calibration_patches(
        work, plan, configuration, train_ids, settings.calibration_patches, settings.seed
    )
    quantize_ir(fp32, target, patches)
    runners = {"fp32": backends.OpenVinoRunner(fp32), "int8": backends.OpenVinoRunner(target)}
    dice = check_dice(plan, configuration, runners, val_ids, settings, fold, on_warning)
    return {
        "overflow_fix": "enable",
        "nncf_version": str(nncf.__version__),
        "calibration": {
            "cases": sorted(set(drawn)),
            "patches": len(patches),
            "seed": settings.seed,
            "oversample_foreground": OVERSAMPLE_FOREGROUND,
        },
        **_checked(dice, val_ids, settings),
    }
