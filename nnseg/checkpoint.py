"""Typed, safe checkpoints: a model (weights + everything needed to use them) and, optionally, training state.

A checkpoint alone is enough to rebuild the network and preprocess new images
(``Predictor.from_checkpoints``); it never needs the trainer or the work folder.

Safety: model files are shared between sites (an MLflow registry, a colleague's folder), and
unpickling can run arbitrary code. Every checkpoint is therefore stored as tensors, numbers,
strings, lists and dicts only (the plan as JSON text), and loaded with
``torch.load(weights_only=True)``: a file that holds pickled Python objects is refused, and
its payload never runs. The refusal names what the file would have imported (read from the
pickle's opcodes, nothing executed), so an old nnseg checkpoint (format 1, which pickled
numpy RNG state) is told apart from a crafted one.

Format 2 on disk (a dict)::

    format, nnseg_version, configuration, fold, plan (JSON text), deep_supervision,
    network_state (tensors), finished, epochs_trained, training (TrainingState as a dict, or None),
    logit_adjustment (optional: {"biases": [state keys], "offsets": [float per output], "strength": float},
    or None)

``network_state`` holds the weights as trained. A network trained with a class-weighted cross-entropy
learns the weighted posteriors; its ``logit_adjustment`` (strength x -log of each class's weight, added to the
segmentation heads' biases) moves them towards the unweighted ones, and :meth:`Checkpoint.inference_state`
is the state every prediction, export and validation uses.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import pickletools
import random
import zipfile
from dataclasses import MISSING, asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nnseg.atomic import atomic_path
from nnseg.errors import NnsegError
from nnseg.networks.plans import NetworkPlan
from nnseg.planning.plan import Plan
from nnseg.schema import SchemaError, flatten_json, load_dataclass, to_jsonable
from nnseg.version import __version__

CHECKPOINT_FORMAT = 2


class CheckpointError(NnsegError):
    """A checkpoint file is missing, damaged, unsafe or not ours."""


@dataclass(frozen=True)
class LogitAdjustment:
    """Offsets added to the segmentation heads' biases (state keys ``biases``) for inference.

    A cross-entropy weighted by ``w_c`` is minimised by p(c|x) w_c / sum_k p(k|x) w_k, so its argmax moves
    the boundaries towards the up-weighted classes (on CT phantoms, 300 iterations of the small_budget recipe:
    organ false positives 3-10x nnU-Net's). Adding -log w_c to the logits gives back p(c|x) (logit adjustment,
    Menon et al., ICLR 2021): there organ Dice 0.885 -> 0.923, lesion 0.906 -> 0.923. But a network stopped
    early has not learnt p(c|x) yet, and the full offset erases what the weights taught it (MR phantoms, 100
    iterations: 30-voxel structures 0.84 -> 0.56 Dice). So the run picks the ``strength`` (offsets =
    strength x -log w_c) on its validation patches (:func:`nnseg.recipes.choose_adjustment_strength`).
    """

    biases: tuple[str, ...]
    offsets: tuple[float, ...]
    strength: float = 1.0

    def scaled(self, strength: float) -> LogitAdjustment | None:
        """This adjustment (at strength 1) at ``strength``; None at 0."""
        if strength == 0:
            return None
        return LogitAdjustment(self.biases, tuple(strength * o for o in self.offsets), strength)

    def check(self, state: dict[str, torch.Tensor], source: str | os.PathLike) -> None:
        """CheckpointError unless every listed bias is in ``state`` with one value per offset."""
        for key in self.biases:
            bias = state.get(key)
            if bias is None or tuple(bias.shape) != (len(self.offsets),):
                raise CheckpointError(
                    f"{source}: damaged checkpoint (logit_adjustment names {key}, which is not a bias of "
                    f"{len(self.offsets)} outputs in network_state)"
                )

    def apply(self, state: dict[str, torch.Tensor], source: str | os.PathLike) -> dict[str, torch.Tensor]:
        """A copy of ``state`` with the offsets added to each listed bias (checked first)."""
        self.check(state, source)
        adjusted = dict(state)
        for key in self.biases:
            bias = state[key]
            adjusted[key] = bias + torch.tensor(self.offsets, dtype=bias.dtype, device=bias.device)
        return adjusted


@dataclass(frozen=True)
class TrainingState:
    """What a resumed training needs beyond the weights (every value loads with ``weights_only=True``).

    Attributes:
        epoch: last completed epoch.
        history: one record (numbers and lists) per completed epoch.
        ema / best_ema: pseudo-Dice moving average now and at its best.
        run_id: the MLflow run to continue.
        optimizer: ``optimizer.state_dict()`` (tensors and numbers).
        scaler: ``GradScaler.state_dict()`` or None without mixed precision.
        rng: random states of python, numpy, torch (and CUDA), see :func:`capture_rng_state`.
        generator: state of the augmentation generator.
        train_config: the trainer options (``asdict(TrainConfig)``).
        recipe: the recipe the run trains with (``asdict(Recipe)``; a resumed run keeps it).
        planned_epochs: the run's length (``--epochs``, or what ``--time-budget`` fitted).
        elapsed_s: wall time spent training so far (a time budget counts it on resume).
    """

    epoch: int
    history: list[dict[str, Any]]
    ema: float | None
    best_ema: float
    run_id: str | None
    optimizer: dict[str, Any]
    scaler: dict[str, Any] | None
    rng: dict[str, Any]
    generator: torch.Tensor
    train_config: dict[str, Any]
    recipe: dict[str, Any] | None = None
    planned_epochs: int | None = None
    elapsed_s: float = 0.0


@dataclass(frozen=True)
class Checkpoint:
    """A trained network for one configuration and fold.

    Attributes:
        plan: the plan it was trained with (preprocessing, labels, channels, network spec).
        configuration: the plan configuration ("3d_fullres", "2d", ...).
        fold: fold index or "all".
        network_state: the weights.
        deep_supervision: the weights include the deep-supervision heads.
        finished: training reached its last epoch (False for ``checkpoint_latest.pt`` of an unfinished run).
        epochs_trained: completed epochs.
        nnseg_version: nnseg version that wrote it.
        training: resumable training state (only in ``checkpoint_latest.pt``).
        logit_adjustment: offsets for the heads' biases at inference (class-weighted training), or None.
    """

    plan: Plan
    configuration: str
    fold: int | str
    network_state: dict[str, torch.Tensor]
    deep_supervision: bool
    finished: bool
    epochs_trained: int
    nnseg_version: str
    training: TrainingState | None = None
    logit_adjustment: LogitAdjustment | None = None

    def inference_state(self, source: str | os.PathLike = "checkpoint") -> dict[str, torch.Tensor]:
        """The weights as prediction uses them: ``network_state`` with the logit adjustment applied."""
        if self.logit_adjustment is None:
            return self.network_state
        return self.logit_adjustment.apply(self.network_state, source)

    @classmethod
    def for_network(
        cls,
        plan: Plan,
        configuration: str,
        network: torch.nn.Module,
        *,
        fold: int | str = 0,
        deep_supervision: bool = True,
    ) -> Checkpoint:
        """A checkpoint of ``network`` as it is (e.g. random weights, for tests and benchmarks)."""
        return cls(
            plan=plan,
            configuration=configuration,
            fold=fold,
            network_state=network.state_dict(),
            deep_supervision=deep_supervision,
            finished=True,
            epochs_trained=0,
            nnseg_version=__version__,
        )

    @property
    def architecture(self) -> NetworkPlan:
        """The network specification the weights belong to."""
        return self.plan.configuration(self.configuration).network

    @property
    def labels(self) -> dict[str, int | tuple[int, ...]]:
        return self.plan.labels

    def plan_changes(self, current: Plan) -> list[str]:
        """``field: trained -> current`` for each plan field that shapes the weights or their data and differs."""

        def relevant(plan: Plan) -> dict[str, Any]:
            return {
                "channel_names": plan.channel_names,
                "labels": plan.labels,
                "regions_class_order": plan.regions_class_order,
                "objective": plan.objective,
                "transpose_forward": plan.transpose_forward,
                "configurations": {self.configuration: plan.configurations.get(self.configuration)},
            }

        old, new = flatten_json(relevant(self.plan)), flatten_json(relevant(current))
        return [
            f"{key}: {old.get(key)} -> {new.get(key)}"
            for key in sorted(set(old) | set(new))
            if old.get(key) != new.get(key) and not key.endswith(".budget_used")
        ]

    def save(self, path: str | os.PathLike) -> Path:
        """Write via a temp file and rename: a crash leaves the previous file intact."""
        path = Path(path)
        payload = {
            "format": CHECKPOINT_FORMAT,
            "nnseg_version": self.nnseg_version,
            "configuration": self.configuration,
            "fold": self.fold,
            "plan": json.dumps(to_jsonable(self.plan)),
            "deep_supervision": self.deep_supervision,
            "finished": self.finished,
            "epochs_trained": self.epochs_trained,
            "network_state": self.network_state,
            "training": None if self.training is None else asdict(self.training),
            "logit_adjustment": None if self.logit_adjustment is None else asdict(self.logit_adjustment),
        }
        with atomic_path(path) as tmp:
            torch.save(payload, tmp)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, *, map_location: str | torch.device = "cpu") -> Checkpoint:
        """Read a checkpoint safely; a :class:`CheckpointError` naming the file when it cannot be used."""
        path = Path(path)
        if not path.is_file():
            raise CheckpointError(f"{path}: checkpoint not found")
        try:
            payload = torch.load(path, map_location=map_location, weights_only=True)
        except pickle.UnpicklingError:
            if not zipfile.is_zipfile(path) and not _looks_pickled(path):
                raise CheckpointError(
                    f"{path}: not a PyTorch checkpoint (neither the zip archive torch.save writes nor a pickle); "
                    "give an nnseg checkpoint (models/<config>/fold_<k>/checkpoint_final.pt)"
                ) from None
            raise CheckpointError(_refusal(path)) from None
        except Exception as exc:  # torch raises many types for damaged files
            raise CheckpointError(
                f"{path}: not a readable checkpoint ({type(exc).__name__}: {exc}); "
                "the file is damaged or is not an nnseg checkpoint"
            ) from None
        return _from_payload(path, payload)


def load_weights(network: torch.nn.Module, state: dict[str, torch.Tensor], source: str | os.PathLike) -> None:
    """Load ``state`` into ``network``; weights that do not fit (another nnseg built this architecture
    differently) raise a :class:`CheckpointError` naming the file and the first mismatch."""
    try:
        network.load_state_dict(state)
    except RuntimeError as exc:
        detail = next((line.strip() for line in str(exc).splitlines()[1:] if line.strip()), str(exc))
        raise CheckpointError(
            f"{source}: the weights do not fit the network this nnseg builds from the checkpoint's plan ({detail}); "
            "retrain, or predict with the nnseg that wrote it"
        ) from None


def _from_payload(path: Path, payload: Any) -> Checkpoint:
    if not isinstance(payload, dict) or "format" not in payload:
        raise CheckpointError(f"{path}: not an nnseg checkpoint (no format number)")
    if payload["format"] != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{path}: checkpoint format {payload['format']!r} is not supported by this nnseg "
            f"(format {CHECKPOINT_FORMAT}); retrain, or predict with the nnseg that wrote it"
        )
    expected = {
        "format",
        "nnseg_version",
        "configuration",
        "fold",
        "plan",
        "deep_supervision",
        "finished",
        "epochs_trained",
        "network_state",
        "training",
    }
    missing = sorted(expected - set(payload))
    if missing:
        raise CheckpointError(f"{path}: damaged checkpoint, missing {', '.join(missing)}")
    try:
        plan = load_dataclass(Plan, json.loads(payload["plan"]), "plan")
        plan.validate()
        plan.configuration(payload["configuration"])
        training = None
        if payload["training"] is not None:
            names = {f.name for f in fields(TrainingState)}
            required = {f.name for f in fields(TrainingState) if f.default is MISSING}
            if not required <= set(payload["training"]) <= names:
                raise SchemaError(f"training: expected keys {sorted(names)}")
            training = TrainingState(**payload["training"])
    except (NnsegError, ValueError, TypeError) as exc:
        raise CheckpointError(f"{path}: damaged checkpoint ({exc})") from None
    state = payload["network_state"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: damaged checkpoint (network_state is not a dict of tensors)")
    adjustment = _logit_adjustment(path, payload.get("logit_adjustment"))  # older checkpoints: none
    if adjustment is not None:
        adjustment.check(state, path)
    return Checkpoint(
        plan=plan,
        configuration=payload["configuration"],
        fold=payload["fold"],
        network_state=state,
        deep_supervision=bool(payload["deep_supervision"]),
        finished=bool(payload["finished"]),
        epochs_trained=int(payload["epochs_trained"]),
        nnseg_version=str(payload["nnseg_version"]),
        training=training,
        logit_adjustment=adjustment,
    )


def _logit_adjustment(path: Path, value: Any) -> LogitAdjustment | None:
    if value is None:
        return None
    biases, offsets = (value.get(k) if isinstance(value, dict) else None for k in ("biases", "offsets"))
    strength = value.get("strength", 1.0) if isinstance(value, dict) else None
    if not (
        isinstance(biases, list | tuple)
        and all(isinstance(b, str) for b in biases)
        and isinstance(offsets, list | tuple)
        and all(isinstance(o, int | float) for o in offsets)
        and isinstance(strength, int | float)
    ):
        raise CheckpointError(
            f"{path}: damaged checkpoint (logit_adjustment must hold biases and offsets lists and a strength)"
        )
    return LogitAdjustment(tuple(biases), tuple(float(o) for o in offsets), float(strength))


def _looks_pickled(path: Path) -> bool:
    """Whether the file starts like a pickle (protocol 2+ opcode), as torch's legacy format does."""
    with open(path, "rb") as handle:
        return handle.read(1) == b"\x80"


def _refusal(path: Path) -> str:
    """Why a file that needs unpickling is refused, naming what it would import (nothing is executed)."""
    names = pickled_globals(path)
    if names and all(n.split(".")[0] in {"numpy", "collections", "torch", "_codecs"} for n in names):
        return (
            f"{path}: refused: written by an older nnseg (checkpoint format 1 stored pickled objects: "
            f"{', '.join(sorted(names)[:3])}). nnseg loads only plain weights, since unpickling can run code; "
            "retrain with this nnseg to get a safe checkpoint (format 2)"
        )
    shown = ", ".join(sorted(names)[:5]) or "unknown objects"
    return (
        f"{path}: refused: the file holds pickled Python objects ({shown}) that would run code when loaded; "
        "nnseg loads only plain weights. Do not use this file unless you know exactly where it came from"
    )


def pickled_globals(path: Path) -> set[str]:
    """``module.name`` of every global a torch checkpoint's pickle would import, read without unpickling."""
    try:
        with zipfile.ZipFile(path) as archive:
            member = next((n for n in archive.namelist() if n.endswith("data.pkl")), None)
            data = archive.read(member) if member else b""
    except (zipfile.BadZipFile, OSError):
        data = path.read_bytes()
    names: set[str] = set()
    strings: list[str] = []
    try:
        for opcode, argument, _ in pickletools.genops(io.BytesIO(data)):
            if isinstance(argument, str):
                strings.append(argument)
            if opcode.name == "GLOBAL" and isinstance(argument, str):
                names.add(argument.replace(" ", "."))
            elif opcode.name == "STACK_GLOBAL" and len(strings) >= 2:
                names.add(f"{strings[-2]}.{strings[-1]}")
    except Exception:  # a damaged pickle: report what was read so far
        pass
    return names


def capture_rng_state() -> dict[str, Any]:
    """Random states of python, numpy, torch (and CUDA) as tensors, numbers and lists."""
    version, internal, gauss = random.getstate()
    kind, keys, position, has_gauss, cached = np.random.get_state(legacy=True)
    state: dict[str, Any] = {
        "python": [version, list(internal), gauss],
        "numpy": [
            kind,
            torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            int(position),
            int(has_gauss),
            float(cached),
        ],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = list(torch.cuda.get_rng_state_all())
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state`."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, position, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
