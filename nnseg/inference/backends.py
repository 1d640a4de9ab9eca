"""Inference backends: what runs the network on one batch of sliding windows.

A :class:`WindowRunner` is any callable ``(batch (n, c, *patch) float32 tensor) -> logits (n, classes, *patch)``;
``predict_sliding_window`` calls it per batch of windows. Implementations:

* :class:`TorchRunner`: an ``nn.Module`` (a network built from a checkpoint);
* :class:`OnnxRuntimeRunner`: an ONNX file in an onnxruntime ``InferenceSession`` (CPU provider);
* :class:`OpenVinoRunner`: an OpenVINO model compiled for the CPU, in fp32 unless asked otherwise
  (OpenVINO's own default on CPUs with AMX/AVX512-BF16 is bf16, which changes labels).

The converters (:func:`write_onnx`, :func:`convert_openvino`) are shared by
``nnseg export`` and by the conversion cache of checkpoints (:func:`cached_runner`): a checkpoint predicted
with ``--backend openvino`` is converted once and kept as ``<fold>/.nnseg_cache/openvino_<key>.xml`` (+ .bin).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import io
import json
import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol

import numpy as np
import torch

from nnseg.atomic import atomic_path
from nnseg.digest import file_sha256, mismatched_file
from nnseg.errors import NnsegError
from nnseg.inference.config import BACKENDS, CPU_BACKENDS

#: backends that run on the CPU only
#: OpenVINO ``INFERENCE_PRECISION_HINT`` values nnseg accepts
OPENVINO_PRECISIONS = ("f32", "bf16", "f16")
_PACKAGES = {
    "openvino": ("openvino", "openvino"),
    "onnxruntime": ("onnxruntime", "onnx"),
    "onnx": ("onnx", "onnx"),
    "onnxscript": ("onnxscript", "onnx"),
}


class WindowRunner(Protocol):
    """Runs the network on a batch of windows: ``(n, c, *patch)`` -> logits ``(n, classes, *patch)``."""

    def __call__(self, batch: torch.Tensor) -> torch.Tensor: ...


def available(package: str) -> bool:
    """Whether an optional runtime (``openvino``, ``onnxruntime``, ``onnx``) can be imported."""
    try:
        importlib.import_module(package)
    except ImportError:
        return False
    return True


def require(package: str, option: str) -> ModuleType:
    """Import an optional runtime, or raise an NnsegError naming ``option`` and the pip command that fixes it."""
    module, extra = _PACKAGES[package]
    try:
        return importlib.import_module(module)
    except ImportError:
        raise NnsegError(f"{option} needs the {module} package: pip install 'nnseg[{extra}]'") from None


def resolve_backend(name: str, device: str) -> tuple[str, str]:
    """(backend, device) for ``--backend`` and ``--device`` as given.

    ``auto``: OpenVINO on the CPU when it is installed (it is several times faster than PyTorch there),
    PyTorch on CUDA/MPS or without OpenVINO. OpenVINO and onnxruntime run on the CPU: an ``auto`` device
    becomes ``cpu``, another device is refused.
    """
    if name not in BACKENDS:
        raise NnsegError(f"--backend must be one of {', '.join(BACKENDS)}, got {name!r}")
    if name == "auto":
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        return ("openvino" if device == "cpu" and available("openvino") else "torch"), device
    if name in CPU_BACKENDS:
        if device not in ("auto", "cpu"):
            raise NnsegError(f"--backend {name} runs on the CPU; use --device cpu, or --backend torch for {device}")
        return name, "cpu"
    return name, device


def _numpy(batch: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(batch.detach().to("cpu", torch.float32).numpy())


class TorchRunner:
    """A PyTorch module (mixed precision on CUDA, as training validates)."""

    def __init__(self, network: torch.nn.Module, device: torch.device) -> None:
        self.network = network
        self.device = device

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            if self.device.type == "cuda":
                with torch.autocast("cuda", dtype=torch.float16):
                    return self.network(batch)
            return self.network(batch)


class OnnxRuntimeRunner:
    """An ONNX file run by onnxruntime on the CPU."""

    def __init__(self, path: str | os.PathLike) -> None:
        ort = require("onnxruntime", "--backend onnxruntime")
        self.session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.session.run(None, {self.input_name: _numpy(batch)})[0])


def openvino_has_bf16() -> bool:
    """Whether OpenVINO runs bf16 natively on this CPU (AVX512-BF16 or AMX)."""
    ov = require("openvino", "--bf16")
    return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


class OpenVinoRunner:
    """An OpenVINO model (``ov.Model`` or an IR ``.xml`` path) compiled for the CPU.

    ``precision="bf16"`` on a CPU without bf16 runs in f32 (at least as accurate, slower) with a warning.
    """

    def __init__(self, model: Any, *, precision: str = "f32") -> None:
        if precision not in OPENVINO_PRECISIONS:
            raise NnsegError(f"OpenVINO precision must be one of {', '.join(OPENVINO_PRECISIONS)}, got {precision!r}")
        ov = require("openvino", "--backend openvino")
        core = ov.Core()
        if precision == "bf16" and not openvino_has_bf16():
            warnings.warn("this CPU has no bf16 support in OpenVINO: the bf16 export runs in f32", stacklevel=2)
            precision = "f32"
        if isinstance(model, (str, os.PathLike)):
            model = core.read_model(str(model))
        self.compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": precision})
        self.output = self.compiled.output(0)

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        # the result is a view of the infer request's buffer, reused by the next call: copy it
        return torch.from_numpy(np.array(self.compiled(_numpy(batch))[self.output], copy=True))


def example_input(channels: int, patch_size: Sequence[int], batch: int = 1) -> torch.Tensor:
    """A deterministic input of the network's window shape (tracing only needs the shape)."""
    generator = torch.Generator().manual_seed(0)
    return torch.randn((batch, channels, *patch_size), generator=generator)


def write_onnx(network: torch.nn.Module, example: torch.Tensor, path: Path) -> None:
    """ONNX (opset 18) with a dynamic batch axis, by torch's ``torch.export``-based exporter (``dynamo=True``; the
    TorchScript-based one is deprecated). Its diagnostics (optional torchvision ops, pytree notices) stay quiet."""
    require("onnx", "--format onnx")
    require("onnxscript", "--format onnx")
    registration = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = registration.level
    registration.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore", FutureWarning)
            warnings.filterwarnings("ignore", message=".*instance_norm.*", category=UserWarning)
            torch.onnx.export(
                network,
                (example,),
                str(path),
                dynamo=True,
                input_names=["image"],
                output_names=["logits"],
                dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=4096)},),
                opset_version=18,
                verbose=False,
                external_data=False,
            )
    finally:
        registration.setLevel(level)


def convert_openvino(network: torch.nn.Module, example: torch.Tensor) -> Any:
    """An ``ov.Model`` of ``network`` with a dynamic batch axis (weights kept in fp32), by OpenVINO's PyTorch
    frontend. It traces with TorchScript inside, whose deprecation notices are OpenVINO's to act on and are kept
    quiet here; its ``torch.export`` input gave logits up to 0.14 off PyTorch's on nnseg's instance-norm U-Nets
    (OpenVINO 2026.4), so the traced path, checked by every export's parity test, stays."""
    ov = require("openvino", "--backend openvino")
    shape = ov.PartialShape([-1, *example.shape[1:]])
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        return ov.convert_model(network, example_input=example, input=[shape])


def save_openvino(model: Any, xml: Path) -> None:
    """Write IR ``xml`` + ``.bin`` with fp32 weights (``save_model`` would compress them to fp16)."""
    ov = require("openvino", "--format openvino")
    ov.save_model(model, str(xml), compress_to_fp16=False)


# ---------------------------------------------------------------------------------------------- weights and cache


def weights_sha256(state: dict[str, torch.Tensor]) -> str:
    """sha256 of a state dict: names, dtypes, shapes and bytes in name order (independent of file layout)."""
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().to("cpu").contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def cache_key(weights_sha: str, graph: Any, input_shape: Sequence[int], backend: str) -> str:
    """16 hex digits naming a converted model: the weights' hash, the network plan, the window shape, the
    runtime's version (anything that changes the converted graph)."""
    module = importlib.import_module(_PACKAGES[backend][0])
    text = json.dumps([weights_sha, graph, list(input_shape), backend, getattr(module, "__version__", "")])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def cached_runner(
    network: torch.nn.Module,
    example: torch.Tensor,
    *,
    backend: str,
    cache_dir: Path | None,
    key: str,
    precision: str = "f32",
) -> WindowRunner:
    """A CPU runner of ``network`` via ``backend``, converting only when ``cache_dir`` has no copy for ``key``.

    The converted model is written to a temporary folder and renamed into place, then its record
    ``<name>.json`` (the key and every file's SHA-256) is written: a copy is used only when its files match its
    record, so an interrupted conversion, a damaged file or another model's files copied in are never run; such a
    copy is converted again, with a warning saying so. ``cache_dir`` None (weights not from a file) or unwritable:
    converted in memory every time.
    """
    option = f"--backend {backend}"
    require(backend, option)
    if backend == "openvino":
        final = None if cache_dir is None else cache_dir / f"openvino_{key}.xml"
        if final is not None and _cached(final, key, (".bin", ".xml")):
            try:
                return OpenVinoRunner(final, precision=precision)
            except Exception as exc:  # noqa: BLE001 - a file the runtime cannot read: converted again
                _rebuilt(final, f"OpenVINO cannot read it ({exc})")
        model = convert_openvino(network, example)
        if final is not None:
            _store(final, key, lambda path: save_openvino(model, path), (".bin", ".xml"))
        return OpenVinoRunner(model, precision=precision)
    final = None if cache_dir is None else cache_dir / f"onnx_{key}.onnx"
    if final is not None and (
        _cached(final, key, (".onnx",))
        or _store(final, key, lambda path: write_onnx(network, example, path), (".onnx",))
    ):
        try:
            return OnnxRuntimeRunner(final)
        except Exception as exc:  # noqa: BLE001
            _rebuilt(final, f"ONNX Runtime cannot read it ({exc})")
    with tempfile.TemporaryDirectory(prefix="nnseg_onnx_") as scratch:  # the session keeps the model in memory
        write_onnx(network, example, Path(scratch) / "model.onnx")
        return OnnxRuntimeRunner(Path(scratch) / "model.onnx")


def _cached(final: Path, key: str, suffixes: Sequence[str]) -> bool:
    """Whether a complete, intact copy of ``final`` (and its siblings) is cached: its record names ``key`` and
    every file's SHA-256 matches. Files present that fail the check are reported (they are converted again)."""
    names = {final.with_suffix(suffix).name for suffix in suffixes}
    record = final.with_suffix(".json")
    if not any((final.parent / name).exists() for name in [*names, record.name]):
        return False
    try:
        data = json.loads(record.read_text())
        files = data["files"]
        intact = data["key"] == key and set(files) == names and mismatched_file(final.parent, files) is None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        intact = False
    if not intact:
        _rebuilt(final, f"its files do not match their record {record.name} (replaced, damaged or unfinished)")
    return intact


def _rebuilt(final: Path, why: str) -> None:
    warnings.warn(
        f"{final}: converted-model cache not used: {why}; converting the checkpoint again (deleting "
        f"{final.parent} is always safe)",
        UserWarning,
        stacklevel=4,
    )
    for path in final.parent.glob(f"{final.stem}.*"):
        path.unlink(missing_ok=True)


def _store(final: Path, key: str, write: Any, suffixes: Sequence[str]) -> bool:
    """Write ``final`` (and its siblings with ``suffixes``) in a temporary folder beside it, move them into
    place, then write their record (key and SHA-256s); whether it is cached now. An unwritable cache folder is not
    an error: nothing is cached."""
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        scratch = final.parent / f".{final.stem}.{os.getpid()}.tmp"
        shutil.rmtree(scratch, ignore_errors=True)
        scratch.mkdir()
    except OSError:
        return False
    try:
        write(scratch / final.name)
        final.with_suffix(".json").unlink(missing_ok=True)  # no record while the files change
        for suffix in suffixes:
            os.replace(scratch / final.with_suffix(suffix).name, final.with_suffix(suffix))
        files = {final.with_suffix(suffix).name: file_sha256(final.with_suffix(suffix)) for suffix in suffixes}
        with atomic_path(final.with_suffix(".json")) as tmp:
            tmp.write_text(json.dumps({"key": key, "files": files}))
        return True
    except OSError:
        return False
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def window_runners(
    networks: Sequence[torch.nn.Module],
    states: Sequence[dict[str, torch.Tensor]],
    *,
    backend: str,
    device: torch.device,
    graph: Any,
    input_shape: Sequence[int],
    cache_dirs: Sequence[Path | None] | None = None,
    precision: str = "f32",
) -> list[WindowRunner]:
    """One runner per network (built from ``states``) for a resolved ``backend``.

    ``graph`` (the network plan as JSON) and ``input_shape`` ``(channels, *patch)`` key the conversion cache
    with the weights' hash; ``cache_dirs`` (one per network, or None) say where converted models are kept.
    """
    if backend == "torch":
        return [TorchRunner(network, device) for network in networks]
    require(backend, f"--backend {backend}")
    folders = list(cache_dirs) if cache_dirs is not None else [None] * len(networks)
    example = example_input(input_shape[0], input_shape[1:])
    return [
        cached_runner(
            network.to("cpu").eval(),
            example,
            backend=backend,
            cache_dir=folder,
            key=cache_key(weights_sha256(state), graph, input_shape, backend),
            precision=precision,
        )
        for network, state, folder in zip(networks, states, folders)
    ]
