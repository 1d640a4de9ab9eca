"""Predictor: checkpoints -> label maps in the input's geometry.

    import nnseg
    predictor = nnseg.Predictor.from_checkpoints("work/models/3d_fullres")   # every fold found
    labels = predictor.predict("case_0000.nii.gz", "case_pred.nii.gz")

Per case: preprocess exactly as in training (transpose, crop, normalize, resample),
sliding-window inference with Gaussian weighting and mirroring (``tta``; windows of CT air skipped
with ``skip_air``, :mod:`nnseg.inference.skipping`), probabilities (softmax, or a sigmoid per region:
the plan's :class:`~nnseg.labels.LabelScheme`) averaged over
the checkpoints (folds), resample back per class while taking the argmax or painting the regions (never more
than two volumes of the original size in memory), uncrop, transpose back, and write
with the input's geometry.

A cascade stage (``3d_cascade_fullres``, a configuration with a ``previous_stage``) runs its first stage's
predictor before itself: that stage's segmentation, resampled to this stage's preprocessed grid, is appended as
one-hot channels (:mod:`nnseg.preprocessing.cascade`). :meth:`Predictor.from_checkpoints` finds the first stage's
folds in the work folder holding the cascade's.
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from nnseg import options
from nnseg.checkpoint import Checkpoint, load_weights
from nnseg.dataset.reading import read_channels
from nnseg.distributed import resolve_device
from nnseg.errors import NnsegError
from nnseg.inference.backends import WindowRunner, resolve_backend, window_runners
from nnseg.inference.checkpoints import CheckpointSource, find_checkpoints, first_stage_folder, load_checkpoints
from nnseg.inference.config import TTA_MODES
from nnseg.inference.exported import Manifest, load_export
from nnseg.inference.probability_files import save_probabilities
from nnseg.inference.skipping import air_body_mask, mirror_axes_for
from nnseg.inference.sliding_window import WindowStats, predict_sliding_window
from nnseg.io import Geometry, Volume, write_volume
from nnseg.networks.plans import NetworkPlan, UNetPlusPlusPlan
from nnseg.networks.registry import build_network
from nnseg.planning.plan import ConfigurationPlan, Plan
from nnseg.preprocessing.cascade import StoredStage, previous_stage_channels, segmentation_for_stage
from nnseg.preprocessing.preprocess import PreprocessedCase, preprocess_case
from nnseg.preprocessing.restore import RESAMPLE_METHODS, probabilities_to_labels, restore_probabilities
from nnseg.schema import to_jsonable
from nnseg.workspace import FoldPaths

#: Warn when an input's voxel size differs from the model's by more than this factor along an axis.
SPACING_WARNING_FACTOR = 2.0


def _pruned(network: NetworkPlan, level: int, *, trained_heads: bool) -> NetworkPlan:
    """The network plan with UNet++'s inference depth set to ``level`` (``--prune``)."""
    if not isinstance(network, UNetPlusPlusPlan):
        raise NnsegError(f"--prune applies to unetpp models; this model is a {network.architecture}")
    if not 1 <= level <= network.n_stages - 1:
        raise NnsegError(f"--prune must be in 1..{network.n_stages - 1} for this model, got {level}")
    if level < network.n_stages - 1 and not trained_heads:
        raise NnsegError("--prune needs a UNet++ trained with deep supervision (its pruned heads are trained by it)")
    return replace(network, prune_level=level)


def _warn(message: str) -> None:
    warnings.warn(message, UserWarning, stacklevel=3)


@dataclass
class StageTimes:
    """Seconds spent per stage, accumulated over cases (printed by ``nnseg predict``)."""

    seconds: dict[str, float] = field(default_factory=dict)

    def add(self, stage: str, seconds: float) -> None:
        self.seconds[stage] = self.seconds.get(stage, 0.0) + seconds

    def summary(self) -> str:
        return ", ".join(f"{k} {v:.1f} s" for k, v in self.seconds.items())


class Predictor:
    """Segment images with one or more checkpoints of the same plan and configuration."""

    def __init__(
        self,
        plan: Plan,
        configuration: str,
        states: list[dict],
        *,
        device: str = "auto",
        mirror: bool = True,
        tta: str = "full",
        skip_air: bool = False,
        resample: str = "auto",
        step_size: float = 0.5,
        window_batch: int = 2,
        deep_supervision_heads: bool = True,
        prune_level: int | None = None,
        backend: str = "torch",
        cache_dirs: Sequence[Path | None] | None = None,
        runners: Sequence[WindowRunner] | None = None,
        previous: Predictor | StoredStage | None = None,
    ) -> None:
        """``backend``: torch, openvino, onnxruntime or auto (:func:`nnseg.inference.backends.resolve_backend`;
        ``nnseg predict`` defaults to auto, the API to torch so that training's validation is unchanged);
        ``cache_dirs``: per state, where converted models are kept (None: converted in memory); ``runners``:
        ready window runners instead of ``states`` (an export, :meth:`from_export`); ``tta``: full, fast or none
        (``mirror=False`` is ``none``); ``skip_air``: don't run windows of air only (CT models only);
        ``resample``: how probabilities go back to the input grid (``probabilities_to_labels``' method);
        ``previous``: the first stage of a cascade configuration (required for one): its predictor, or its stored
        cross-validation segmentations (:class:`StoredStage`, the cascade's final validation)."""
        self.plan = plan
        #: labels, objective and how probabilities become labels (:mod:`nnseg.labels`)
        self.scheme = plan.scheme
        self.config_plan: ConfigurationPlan = plan.configuration(configuration)
        network_plan: NetworkPlan = self.config_plan.network
        #: the cascade's first stage, run before this one on every case
        self.previous = _checked_previous(plan, self.config_plan, previous)
        if prune_level is not None:
            network_plan = _pruned(network_plan, prune_level, trained_heads=deep_supervision_heads)
        self.backend, device = resolve_backend(backend, options.device("device", device))
        self.device = resolve_device(device)
        tta = options.choice(*TTA_MODES)("tta", tta)
        #: spatial axes whose flips are averaged (test-time augmentation); may be set to any of them
        self.mirror_axes: tuple[int, ...] = mirror_axes_for(tta if mirror else "none", self.config_plan.dimensions)
        self.skip_air = options.yes_no("skip_air", skip_air)
        self.resample = options.choice(*RESAMPLE_METHODS)("resample", resample)
        #: windows and forward passes, accumulated over cases
        self.work = WindowStats()
        self.step_size = options.fraction("step_size", step_size)
        self.window_batch = options.positive_int("window_batch", window_batch)
        self.networks = []
        for index, state in enumerate(states):
            # the heads exist in the weights; in eval mode the network returns only the full-resolution output
            network = build_network(
                network_plan,
                plan.input_channels(configuration),
                plan.num_classes,
                deep_supervision=deep_supervision_heads,
            )
            load_weights(network, state, f"checkpoint {index + 1} of {len(states)}")
            self.networks.append(network.to(self.device).eval())
        input_shape = (plan.input_channels(configuration), *self.config_plan.patch_size)
        self.runners: list[WindowRunner] = (
            list(runners)
            if runners is not None
            else window_runners(
                self.networks,
                states,
                backend=self.backend,
                device=self.device,
                graph=to_jsonable(network_plan),
                input_shape=input_shape,
                cache_dirs=cache_dirs,
            )
        )
        #: the export manifest when the runners come from an export folder
        self.export: Manifest | None = None
        self.times = StageTimes()
        self.sources: list[CheckpointSource] = []
        #: called with a message when an input is suspicious but usable (the CLI prints it)
        self.on_warning: Callable[[str], None] = _warn
        #: applied to every label map this predictor returns or writes (the model's postprocessing), or None
        self.postprocess: Callable[[np.ndarray], np.ndarray] | None = None

    @classmethod
    def from_checkpoints(
        cls,
        paths: str | os.PathLike | Sequence[str | os.PathLike],
        *,
        folds: Sequence[int | str] | None = None,
        **kwargs,
    ) -> Predictor:
        """Load checkpoint files, or every ``fold_*`` of a model folder; they must share plan and configuration.
        (Any kind of model, postprocessing included: :func:`nnseg.inference.model.open_model`.)"""
        if isinstance(paths, (str, os.PathLike)):
            files = find_checkpoints(paths, folds)
        else:
            files = [Path(p) for p in paths]
        return cls.from_sources(load_checkpoints(files), **kwargs)

    @classmethod
    def from_sources(cls, sources: Sequence[CheckpointSource], **kwargs) -> Predictor:
        """Checkpoints already loaded (:func:`~nnseg.inference.checkpoints.load_checkpoints`)."""
        first = sources[0].checkpoint
        previous_stage = first.plan.configuration(first.configuration).previous_stage
        if previous_stage is not None and kwargs.get("previous") is None:
            kwargs["previous"] = _first_stage(sources[0].path, first, previous_stage, kwargs)
        predictor = cls(
            first.plan,
            first.configuration,
            [s.checkpoint.inference_state(s.path) for s in sources],
            deep_supervision_heads=first.deep_supervision,
            cache_dirs=[FoldPaths(s.path.parent).cache for s in sources],
            **kwargs,
        )
        predictor.sources = list(sources)
        if predictor.previous is not None:  # listed too: the user sees every checkpoint a case goes through
            predictor.sources = predictor.previous.sources + predictor.sources
        return predictor

    @classmethod
    def from_export(
        cls,
        folder: str | os.PathLike,
        *,
        folds: Sequence[int | str] | None = None,
        backend: str = "auto",
        device: str = "auto",
        prune_level: int | None = None,
        manifest: Manifest | None = None,
        **kwargs,
    ) -> Predictor:
        """An export folder of ``nnseg export`` (its ``manifest.json`` holds the plan): no checkpoint needed.
        ``manifest``: the folder's manifest already read (its folds are the ones loaded)."""
        manifest = manifest or Manifest.load(folder)
        if backend not in ("auto", manifest.runtime):
            raise NnsegError(
                f"--backend {backend}: {folder} is an {manifest.format} export, run by {manifest.runtime}; "
                "leave --backend auto, or predict from the checkpoints"
            )
        if prune_level is not None:
            raise NnsegError(f"--prune: {folder} is an export with a fixed network; predict from the checkpoints")
        runtime, device = resolve_backend(manifest.runtime, options.device("device", device))
        manifest, runners = load_export(folder, folds=folds, device=resolve_device(device), manifest=manifest)
        predictor = cls(
            manifest.plan_object(),
            manifest.configuration,
            [],
            backend=runtime,
            device=device,
            runners=runners,
            **kwargs,
        )
        predictor.export = manifest
        return predictor

    def _probabilities(self, runner: WindowRunner, data: torch.Tensor, body: torch.Tensor | None) -> torch.Tensor:
        logits = predict_sliding_window(
            runner,
            data,
            self.config_plan.patch_size,
            self.plan.num_classes,
            step_size=self.step_size,
            mirror_axes=self.mirror_axes,
            window_batch=self.window_batch,
            body_mask=body,
            device=self.device,
            stats=self.work,
        )
        probabilities = self.scheme.probabilities(logits, 0)
        if body is not None and self.scheme.has_regions:
            # skipped windows hold background logits for softmax only; outside the body no region is on
            probabilities[:, ~body.to(probabilities.device)] = 0.0
        return probabilities

    def _probabilities_3d(self, data: torch.Tensor, body: torch.Tensor | None) -> torch.Tensor:
        total = self._probabilities(self.runners[0], data, body)
        for runner in self.runners[1:]:
            total += self._probabilities(runner, data, body)
        return total / len(self.runners)

    def _probabilities_2d(self, data: torch.Tensor, body: torch.Tensor | None) -> torch.Tensor:
        slices = []
        for z in range(data.shape[1]):
            mask = None if body is None else body[z]
            slices.append(self._probabilities_3d(data[:, z], mask))
        return torch.stack(slices, dim=1)

    def predict_array(
        self, images: np.ndarray, geometry: Geometry, *, case_id: str = "case", return_probabilities: bool = False
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Label map (and optionally probabilities) for ``images`` ``(c, k, j, i)`` in the input grid."""
        labels, full, _ = self._predict(images, geometry, case_id, return_probabilities, None)
        return (labels if self.postprocess is None else self.postprocess(labels)), full

    def stage_segmentation(
        self, images: np.ndarray, geometry: Geometry, config: ConfigurationPlan, *, case_id: str = "case"
    ) -> np.ndarray:
        """The segmentation of ``images`` on ``config``'s preprocessed grid (a cascade's next stage input)."""
        case, probabilities = self._preprocessed_probabilities(images, geometry, case_id)
        return segmentation_for_stage(probabilities, case.properties, self.plan, config)

    def _preprocessed_probabilities(
        self, images: np.ndarray, geometry: Geometry, case_id: str
    ) -> tuple[PreprocessedCase, torch.Tensor]:
        """Preprocess (appending the first stage's segmentation for a cascade) and run the networks."""
        if images.shape[0] != len(self.plan.channel_names):
            raise NnsegError(
                f"{case_id}: {images.shape[0]} channel(s) given, the model expects "
                f"{len(self.plan.channel_names)} ({', '.join(self.plan.channel_names)})"
            )
        self.check_input(images, geometry, case_id)
        started = time.perf_counter()
        case = preprocess_case(images, geometry, None, self.plan, self.config_plan, case_id=case_id)
        data = torch.from_numpy(case.data)
        mask = case.body
        if self.skip_air:
            air = air_body_mask(case.data, self.config_plan.normalization, case.properties.spacing)
            mask = mask if air is None else air if mask is None else mask & air
        body = None if mask is None else torch.from_numpy(mask)
        self.times.add("preprocess", time.perf_counter() - started)
        if self.previous is not None:
            started = time.perf_counter()
            previous = self.previous.stage_segmentation(images, geometry, self.config_plan, case_id=case_id)
            if previous.shape != case.data.shape[1:]:  # both stages crop the same box: a bug, not bad input
                raise RuntimeError(f"{case_id}: first stage grid {previous.shape} != {case.data.shape[1:]}")
            data = torch.cat([data, previous_stage_channels(torch.from_numpy(previous), self.scheme)])
            self.times.add(f"{self.config_plan.previous_stage} stage", time.perf_counter() - started)
        started = time.perf_counter()
        if self.config_plan.dimensions == 3:
            probabilities = self._probabilities_3d(data, body)
        else:
            probabilities = self._probabilities_2d(data, body)
        self.times.add("network", time.perf_counter() - started)
        return case, probabilities

    def _predict(
        self,
        images: np.ndarray,
        geometry: Geometry,
        case_id: str,
        return_probabilities: bool,
        next_stage: ConfigurationPlan | None,
    ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        """(labels, probabilities or None in the input grid, segmentation on ``next_stage``'s grid or None)."""
        case, probabilities = self._preprocessed_probabilities(images, geometry, case_id)
        started = time.perf_counter()
        labels = probabilities_to_labels(
            probabilities, case.properties, self.plan, self.config_plan.resampling, method=self.resample
        )
        full = None
        if return_probabilities:
            full = restore_probabilities(probabilities, case.properties, self.plan, self.config_plan.resampling)
        staged = None
        if next_stage is not None:
            staged = segmentation_for_stage(probabilities, case.properties, self.plan, next_stage)
        self.times.add("export", time.perf_counter() - started)
        labels = labels.astype(np.uint8 if max(self.scheme.file_values) < 256 else np.int32, copy=False)
        return labels, full, staged

    def check_input(self, images: np.ndarray, geometry: Geometry, case_id: str) -> None:
        """Refuse non-finite voxels (they would silently turn the prediction into background); warn about a
        voxel size far from the model's (a wrong header, or a long resampling ahead)."""
        if np.issubdtype(images.dtype, np.floating):
            # slab by slab: a full-size boolean would cost a quarter of the image
            bad = images.size - sum(int(np.count_nonzero(np.isfinite(images[:, k]))) for k in range(images.shape[1]))
            if bad:
                raise NnsegError(
                    f"{case_id}: {bad} of {images.size} voxels are NaN or infinite; nnseg does not "
                    "guess values for them. Fix the image (e.g. replace them with the background "
                    "intensity) and predict again"
                )
        spacing = [float(geometry.spacing[a]) for a in self.plan.transpose_forward][-self.config_plan.dimensions :]
        factors = [max(s / t, t / s) for s, t in zip(spacing, self.config_plan.spacing)]
        if max(factors) > SPACING_WARNING_FACTOR:
            zoom = float(np.prod([s / t for s, t in zip(spacing, self.config_plan.spacing)]))
            cost = f", {zoom:.3g}x the voxels: this may take long" if zoom > 4 else ""
            self.on_warning(
                f"{case_id}: voxel size {_mm(spacing)} mm is up to {max(factors):.1f}x off the model's "
                f"{_mm(self.config_plan.spacing)} mm (its training data); the image is resampled to the model's grid"
                f"{cost}. Results may be poor: check the header's spacing"
            )

    def predict_files(
        self,
        files: Sequence[str | os.PathLike],
        *,
        return_probabilities: bool = False,
        next_stage: ConfigurationPlan | None = None,
    ) -> Prediction:
        """Segment one case given as its channel files (or one 4D file), in the input's grid."""
        paths = [Path(p) for p in files]
        started = time.perf_counter()
        volume = read_channels(paths)
        self.times.add("read", time.perf_counter() - started)
        return self.predict_volume(
            volume, paths[0].name, return_probabilities=return_probabilities, next_stage=next_stage
        )

    def predict_volume(
        self,
        volume: Volume,
        case_id: str,
        *,
        return_probabilities: bool = False,
        next_stage: ConfigurationPlan | None = None,
    ) -> Prediction:
        """Segment a case already read (``(k, j, i)`` single channel or ``(c, k, j, i)``), in its grid;
        ``next_stage``: also its segmentation on that configuration's preprocessed grid (a cascade's input)."""
        images = volume.array if volume.array.ndim == 4 else volume.array[None]
        labels, probabilities, staged = self._predict(
            images.astype(np.float32, copy=False), volume.geometry, case_id, return_probabilities, next_stage
        )
        if self.postprocess is not None:
            labels = self.postprocess(labels)
        return Prediction(labels, probabilities, volume.geometry, staged)

    def predict(
        self,
        inputs: str | os.PathLike | Sequence[str | os.PathLike],
        output: str | os.PathLike | None = None,
        *,
        save_probabilities: bool = False,
    ) -> np.ndarray:
        """Segment one case (its channel files, or one file); write ``output`` (and ``.npz``) when given."""
        files = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
        prediction = self.predict_files(files, return_probabilities=save_probabilities)
        if output is not None:
            self.write(prediction, output)
        return prediction.labels

    def write(self, prediction: Prediction, output: str | os.PathLike) -> None:
        """Write the label map with the input's geometry (and the probabilities when computed), atomically."""
        started = time.perf_counter()
        write_volume(output, prediction.labels, prediction.geometry, is_label=True)
        if prediction.probabilities is not None:
            save_probabilities(Path(output), prediction.probabilities, self.scheme)
        self.times.add("write", time.perf_counter() - started)

    def write_probabilities(self, prediction: Prediction, output: str | os.PathLike) -> None:
        """Only the probabilities (``<output stem>.npz``), for label maps written in another format."""
        if prediction.probabilities is not None:
            save_probabilities(Path(output), prediction.probabilities, self.scheme)


@dataclass(frozen=True)
class Prediction:
    """A predicted case: labels ``(k, j, i)``, optional probabilities ``(classes, k, j, i)``, input geometry, and
    optionally the segmentation on a next stage's preprocessed grid (``predict_files(next_stage=...)``)."""

    labels: np.ndarray
    probabilities: np.ndarray | None
    geometry: Geometry
    next_stage: np.ndarray | None = None


def _checked_previous(
    plan: Plan, config: ConfigurationPlan, previous: Predictor | StoredStage | None
) -> Predictor | StoredStage | None:
    """``previous`` when ``config`` is a cascade stage and ``previous`` predicts its first stage; errors otherwise."""
    if config.previous_stage is None:
        if previous is not None:
            raise NnsegError(f"{config.name} is not a cascade stage; it takes no previous stage's predictor")
        return None
    if previous is None:
        raise NnsegError(
            f"{config.name} is a cascade stage: it needs its first stage {config.previous_stage} to predict first; "
            "predict from the work folder (nnseg predict -m WORK -c " + config.name + ") so that both are found"
        )
    previous.on_warning = _ignore  # this stage checks the input itself; the first stage's coarser grid is planned
    if previous.config_plan != plan.configuration(config.previous_stage):
        raise NnsegError(
            f"the {config.previous_stage} model was trained with another plan than the {config.name} model "
            f"(its {config.previous_stage} configuration differs); retrain one of them with the same plans.json"
        )
    return previous


def _ignore(message: str) -> None:
    pass


def _first_stage(path: Path, checkpoint: Checkpoint, stage: str, settings: dict) -> Predictor:
    """The first stage's predictor of a cascade checkpoint, from every fold of the work folder holding it."""
    own = {k: v for k, v in settings.items() if k not in ("folds", "prune_level", "previous")}
    return Predictor.from_checkpoints(first_stage_folder(path, checkpoint.configuration, stage), **own)


def _mm(values: Sequence[float]) -> str:
    return " x ".join(f"{v:.3g}" for v in values)
