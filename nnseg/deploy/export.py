"""``nnseg export``: trained folds as ONNX or OpenVINO IR files, checked against PyTorch.

    from nnseg.deploy.export import export_model
    manifest = export_model("nnseg_work", "exported", format="onnx")    # every cross-validation fold
    predictor = nnseg.open_model("exported").predictor()                # no checkpoint needed

An export folder holds, per fold, the network in eval mode without deep-supervision heads, for windows
``(N, channels, *patch)`` (N dynamic): ``fold_<k>.onnx`` or ``fold_<k>.xml`` + ``.bin``; and
``manifest.json``: nnseg version, format, precision, configuration, the plan (preprocessing and labels, so
prediction needs no checkpoint), the postprocessing of ``inference.json`` when the work folder has one,
each fold's weights sha256 (:func:`nnseg.inference.backends.weights_sha256`), the SHA-256 of each of its files, the
parity figures (the largest |logit difference| from PyTorch on random patches and on preprocessed training cases)
and a digest of the manifest's content; loading checks all of it (:mod:`nnseg.inference.exported`). A fold off by
more than the tolerance fails the export, and nothing is written (the folder is built aside and renamed; one
export into a folder at a time, :class:`nnseg.locks.FolderLock`).

``precision="int8"`` (``--format openvino --int8``): each fold's fp32 IR, once it passed the parity check
(its figures are the ones listed), is quantized by NNCF and checked by the Dice on the fold's validation
cases (:mod:`nnseg.deploy.quantize`); the fold's ``quantization`` entry records calibration and Dice.
``precision="bf16"`` (``--format openvino --bf16``, CPUs with bf16 only): the fp32 IR, run by OpenVINO in
bf16, Dice-checked the same way.
"""

from __future__ import annotations

import os
import shutil
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nnseg.atomic import remove_stale_temporaries
from nnseg.checkpoint import Checkpoint, CheckpointError, load_weights
from nnseg.deploy.quantize import fold_cases, reduce_precision, require_nncf
from nnseg.deploy.settings import MIN_LABEL_AGREEMENT, TOLERANCE, QuantizationSettings
from nnseg.digest import file_sha256
from nnseg.errors import NnsegError
from nnseg.inference import backends
from nnseg.inference.checkpoints import require_single_stage
from nnseg.inference.config import EXPORT_FORMATS, EXPORT_PRECISIONS
from nnseg.inference.exported import (
    MANIFEST_VERSION,
    FoldExport,
    Manifest,
    export_runner,
    is_export,
)
from nnseg.inference.model import open_trained
from nnseg.locks import FolderLock, lock_beside
from nnseg.networks.registry import build_network
from nnseg.schema import to_jsonable
from nnseg.version import __version__
from nnseg.workspace import Workspace, fold_folder_name


def export_model(
    model: str | os.PathLike,
    output: str | os.PathLike,
    *,
    format: str,
    folds: Sequence[int | str] | None = None,
    configuration: str | None = None,
    precision: str = "fp32",
    tolerance: float | None = None,
    random_patches: int = 2,
    real_cases: int = 2,
    quantization: QuantizationSettings | None = None,
    on_warning: Callable[[str], None] | None = None,
) -> Manifest:
    """Export the folds of ``model`` (work folder, ``models/<config>``, fold folder or checkpoint, opened by
    :func:`nnseg.inference.model.open_model`; ``configuration`` of a work folder, default 3d_fullres) to ``output``.

    ``precision="int8"`` (OpenVINO only; ``model`` in a work folder) quantizes with ``quantization`` (default
    :class:`~nnseg.deploy.quantize.QuantizationSettings`); ``on_warning`` gets the warning of a forced export
    (default :func:`warnings.warn`).

    Raises:
        NnsegError: an unknown format or precision, a missing runtime package, no model, ``output`` a file or
            a non-empty folder that is not an export, a fold whose logits differ from PyTorch's by more than
            ``tolerance``, or an int8 fold whose mean Dice drops more than allowed and not forced (nothing is
            written then).
    """
    if format not in EXPORT_FORMATS:
        raise NnsegError(f"--format must be one of {', '.join(EXPORT_FORMATS)}, got {format!r}")
    if precision not in EXPORT_PRECISIONS:
        raise NnsegError(f"--precision must be one of {', '.join(EXPORT_PRECISIONS)}, got {precision!r}")
    if precision != "fp32" and format != "openvino":
        raise NnsegError(f"--{precision} applies to --format openvino only, not --format {format}")
    if precision == "int8":
        require_nncf()
    if precision == "bf16" and not backends.openvino_has_bf16():
        raise NnsegError(
            "--bf16: this CPU has no bf16 support in OpenVINO (OPTIMIZATION_CAPABILITIES lacks BF16), so the Dice "
            "check cannot run in bf16; export fp32 (or --int8)"
        )
    tolerance = TOLERANCE if tolerance is None else tolerance
    settings = quantization or QuantizationSettings()
    settings.check()
    warn = on_warning or _warn
    option = f"--format {format}"
    if format == "onnx":
        backends.require("onnx", option)
        backends.require("onnxruntime", option)  # the parity check runs the file
    elif format == "openvino":
        backends.require("openvino", option)
    output = _check_output(Path(output))
    opened = open_trained(model, configuration, folds, command="export")
    files = [source.path for source in opened.checkpoints]
    checkpoints = [source.checkpoint for source in opened.checkpoints]
    first = checkpoints[0]
    require_single_stage(first, "an export")
    containing = Workspace.containing(Path(model))
    work = None if containing is None else containing.root  # its splits and preprocessed cases
    config_plan = first.plan.configuration(first.configuration)
    if precision != "fp32":
        for checkpoint in checkpoints:
            fold_cases(work, checkpoint.fold, precision)  # a fold without splits fails before any conversion
    channels = len(first.plan.channel_names)
    samples = {"random": _random_patches(random_patches, channels, config_plan.patch_size)}
    real = _real_patches(work, config_plan.data_identifier, config_plan.patch_size, real_cases)
    lock = FolderLock(lock_beside(output), f"export folder {output}").acquire()  # one export into it at a time
    remove_stale_temporaries(output.parent, targets={output.name})  # what a killed export left beside it
    scratch = output.parent / f".{output.name}.{os.getpid()}.tmp"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    try:
        exported = []
        for path, checkpoint in zip(files, checkpoints):
            network, reference = _networks(checkpoint, path)
            example = backends.example_input(channels, config_plan.patch_size)
            folder = scratch / ".fp32" if precision == "int8" else scratch
            folder.mkdir(exist_ok=True)
            name = _write(format, network, example, folder / fold_folder_name(checkpoint.fold))
            runner = export_runner(format, folder / name, "fp32")
            parity = _parity(reference, runner, samples["random"], real, tolerance, checkpoint.fold, format)
            quantized = None
            if precision != "fp32":
                quantized = reduce_precision(
                    precision,
                    folder / name,
                    scratch / name,
                    work=work,
                    plan=first.plan,
                    configuration=first.configuration,
                    fold=checkpoint.fold,
                    settings=settings,
                    on_warning=warn,
                )
            sha = backends.weights_sha256(checkpoint.inference_state(path))
            fold_files = [name, str(Path(name).with_suffix(".bin"))] if format == "openvino" else [name]
            hashes = {f: file_sha256(scratch / f) for f in fold_files}
            exported.append(FoldExport(checkpoint.fold, name, str(path), sha, parity, quantized, hashes))
        shutil.rmtree(scratch / ".fp32", ignore_errors=True)
        manifest = Manifest(
            manifest_version=MANIFEST_VERSION,
            nnseg_version=__version__,
            format=format,
            precision=precision,
            configuration=first.configuration,
            input_shape=("N", channels, *config_plan.patch_size),
            plan=to_jsonable(first.plan),
            labels=to_jsonable(first.plan.labels),
            postprocessing=None if opened.postprocessing is None else opened.postprocessing.to_dict(),
            folds=tuple(exported),
        )
        manifest.save(scratch)
        _replace_folder(scratch, output)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        lock.release()
    return manifest


# ---------------------------------------------------------------------------------------------- helpers


def _warn(message: str) -> None:
    warnings.warn(message, UserWarning, stacklevel=3)


def _check_output(output: Path) -> Path:
    if output.is_file():
        raise NnsegError(f"-o {output}: is a file; give a folder for the export (it is created)")
    if output.is_dir() and any(output.iterdir()) and not is_export(output):
        raise NnsegError(
            f"-o {output}: folder exists and is not an nnseg export; give a new or empty folder "
            "(an earlier export is replaced)"
        )
    return output


def _networks(checkpoint: Checkpoint, path: Path) -> tuple[torch.nn.Module, torch.nn.Module]:
    """(the network to export: eval mode, no deep-supervision heads; the network as the predictor runs it)."""
    plan, config = checkpoint.plan, checkpoint.plan.configuration(checkpoint.configuration)
    channels, classes = len(plan.channel_names), plan.num_classes
    reference = build_network(config.network, channels, classes, deep_supervision=checkpoint.deep_supervision)
    state = checkpoint.inference_state(path)  # with the logit adjustment, as nnseg predict runs it
    load_weights(reference, state, path)
    network = build_network(config.network, channels, classes, deep_supervision=False)
    wanted = network.state_dict()
    missing = sorted(set(wanted) - set(state))
    if missing:
        raise CheckpointError(f"{path}: the weights lack {missing[0]}; retrain, or export with the nnseg that wrote it")
    load_weights(network, {k: v for k, v in state.items() if k in wanted}, path)
    return network.eval(), reference.eval()


def _write(format: str, network: torch.nn.Module, example: torch.Tensor, stem: Path) -> str:
    """Write one fold in ``format``; returns the file name the manifest lists."""
    if format == "onnx":
        backends.write_onnx(network, example, stem.with_suffix(".onnx"))
        return stem.name + ".onnx"
    if format == "openvino":
        backends.save_openvino(backends.convert_openvino(network, example), stem.with_suffix(".xml"))
        return stem.name + ".xml"
    raise NnsegError(f"--format must be one of {', '.join(EXPORT_FORMATS)}, got {format!r}")


def _random_patches(count: int, channels: int, patch: Sequence[int]) -> torch.Tensor:
    return torch.randn((count, channels, *patch), generator=torch.Generator().manual_seed(1))


def _real_patches(
    work: Path | None, data_identifier: str, patch: Sequence[int], count: int
) -> tuple[list[str], torch.Tensor] | None:
    """Centre windows of up to ``count`` preprocessed training cases (zero-padded to the patch), or None."""
    if work is None:
        return None
    folder = Workspace(work).preprocessed(data_identifier)
    files = sorted(p for p in folder.glob("*.npy") if not p.stem.endswith(("_seg", "_locations")))[:count]
    if not files:
        return None
    windows = []
    for file in files:
        data = np.load(file, mmap_mode="r")
        starts = [max(0, (s - p) // 2) for s, p in zip(data.shape[1:], patch)]
        crop = np.asarray(data[(slice(None), *(slice(a, a + p) for a, p in zip(starts, patch)))], np.float32)
        padding = [(0, 0)] + [(0, p - s) for s, p in zip(crop.shape[1:], patch)]
        windows.append(np.pad(crop, padding))
    return [f.stem for f in files], torch.from_numpy(np.stack(windows))


def _parity(
    reference: torch.nn.Module,
    runner: backends.WindowRunner,
    random: torch.Tensor,
    real: tuple[list[str], torch.Tensor] | None,
    tolerance: float,
    fold: int | str,
    format: str,
) -> dict[str, Any]:
    """|logit difference| of ``runner`` from ``reference`` and label agreement per sample set.

    Raises NnsegError when the difference exceeds ``tolerance`` x max(1, max |logit|), or fewer than
    :data:`MIN_LABEL_AGREEMENT` of the voxels get PyTorch's label.
    """
    result: dict[str, Any] = {"tolerance": tolerance, "random": None, "real": None}
    sets: list[tuple[str, torch.Tensor, dict[str, Any]]] = [("random", random, {"patches": len(random)})]
    if real is not None:
        sets.append(("real", real[1], {"cases": real[0]}))
    for name, batch, info in sets:
        with torch.no_grad():
            expected = reference(batch).float()
        got = runner(batch).float()
        difference = float((got - expected).abs().max())
        scale = max(1.0, float(expected.abs().max()))
        agreement = float((got.argmax(1) == expected.argmax(1)).float().mean())
        result[name] = {
            **info,
            "max_abs_diff": difference,
            "logit_scale": scale,
            "relative_diff": difference / scale,
            "label_agreement": agreement,
        }
        if not difference <= tolerance * scale:  # NaN fails too
            raise NnsegError(
                f"fold {fold}: the {format} export's logits differ from PyTorch's by up to {difference:.3g} on "
                f"{name} patches, {difference / scale:.3g} of the logits' scale {scale:.3g} (tolerance {tolerance:g}); "
                "nothing was exported. Report this with the model's architecture, or export another --format"
            )
        if not agreement >= MIN_LABEL_AGREEMENT:
            raise NnsegError(
                f"fold {fold}: the {format} export gives {100 * (1 - agreement):.3g} % of the voxels of {name} "
                f"patches another label than PyTorch (at most {100 * (1 - MIN_LABEL_AGREEMENT):.3g} % allowed); "
                "nothing was exported. Report this with the model's architecture, or export another --format"
            )
    return result


def _replace_folder(scratch: Path, output: Path) -> None:
    """Move the finished export into place; an earlier export there is replaced only once the new one is whole."""
    old = output.parent / f".{output.name}.{os.getpid()}.old"
    if output.exists():
        os.replace(output, old)
    try:
        os.replace(scratch, output)
    except OSError:
        if old.exists():
            os.replace(old, output)
        raise
    shutil.rmtree(old, ignore_errors=True)
