"""The label scheme: what the label files hold, what the network predicts, and how one becomes the other.

One object (:class:`LabelScheme`) built from dataset.json's ``labels`` (+ ``regions_class_order``) and stored
in plans.json; check, loss, validation, export, evaluation and postprocessing all go through it.

- **Plain labels** ``{"background": 0, "liver": 1, "tumour": 2}``: one softmax output per value
  (``objective == "softmax"``), prediction = argmax; output channel ``i`` is label value ``i``.
- **Regions** (nnU-Net's region-based training): a label may map to a list of file values,
  ``{"background": 0, "whole_tumor": [1, 2, 3], "tumor_core": [2, 3], "enhancing": [3]}``. Every
  region is one sigmoid output (``objective == "sigmoid"``) trained on ``label in values``;
  prediction thresholds each region at 0.5 and paints ``regions_class_order[i]`` where region ``i``
  is on, in that order (later regions overwrite earlier ones).
- **Ignore label**: a label named ``ignore`` (the highest value, as nnU-Net requires) marks voxels
  without annotation (sparse labels). It is no network output; its voxels are left out of the loss
  and of every metric.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from nnseg.errors import NnsegError

if TYPE_CHECKING:  # torch loads where tensors are used: the CLI and the planner read labels without it
    import torch

IGNORE_NAME = "ignore"
Objective = Literal["softmax", "sigmoid"]
LabelValue = int | tuple[int, ...]


class LabelError(NnsegError):
    """A label declaration (dataset.json ``labels`` / ``regions_class_order``, plans.json) is inconsistent."""


def _is_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


@dataclass(frozen=True, eq=False)
class LabelScheme(Mapping[str, LabelValue]):
    """Label names -> value (or tuple of values for a region), with the region paint order.

    A read-only mapping (``scheme["liver"]``, ``dict(scheme)``), so code that reads dataset.json labels
    reads a scheme too. Construction only normalizes; :meth:`problems` lists what is inconsistent and
    :meth:`validated` raises on the first. Every other method assumes a valid scheme.

    Attributes:
        labels: name -> int, or tuple of ints for a region, in dataset.json order.
        regions_class_order: for regions, the label value each region paints (one per region, in the
            order of the region entries of ``labels``); None without regions.
    """

    labels: dict[str, LabelValue]
    regions_class_order: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        labels: dict[str, LabelValue] = {}
        for name, value in dict(self.labels).items():
            labels[str(name)] = tuple(int(v) for v in value) if isinstance(value, (list, tuple)) else value
        object.__setattr__(self, "labels", labels)
        if self.regions_class_order is not None:
            object.__setattr__(self, "regions_class_order", tuple(self.regions_class_order))

    # ------------------------------------------------------------------ mapping

    def __getitem__(self, name: str) -> LabelValue:
        return self.labels[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.labels)

    def __len__(self) -> int:
        return len(self.labels)

    def __eq__(self, other: object) -> bool:
        """Schemes: same labels and order. Any other mapping (dataset.json's labels): same labels."""
        if isinstance(other, LabelScheme):
            return self.labels == other.labels and self.regions_class_order == other.regions_class_order
        return isinstance(other, Mapping) and self.labels == dict(other)

    __hash__ = None  # type: ignore[assignment]

    # ------------------------------------------------------------------ declaration

    @classmethod
    def from_json(cls, labels: Mapping[str, Any], regions_class_order: Sequence[int] | None = None) -> LabelScheme:
        """From dataset.json / plans.json values (lists for regions); validated."""
        if not isinstance(labels, Mapping) or not labels:
            raise LabelError('labels must be a non-empty object, e.g. {"background": 0, "organ": 1}')
        for name, value in labels.items():
            ok = _is_int(value) or (
                isinstance(value, (list, tuple)) and len(value) > 0 and all(_is_int(v) for v in value)
            )
            if not ok:
                raise LabelError(f"label {name!r} must map to an integer or a list of integers, got {value!r}")
        if regions_class_order is not None and not (
            isinstance(regions_class_order, (list, tuple)) and all(_is_int(v) for v in regions_class_order)
        ):
            raise LabelError(f"regions_class_order must list integer label values, got {regions_class_order!r}")
        return cls(dict(labels), None if regions_class_order is None else tuple(regions_class_order)).validated()

    def to_json(self) -> dict[str, Any]:
        """``{"labels": {...}, "regions_class_order": [...] | None}`` with lists for regions."""
        return {
            "labels": {n: list(v) if isinstance(v, tuple) else v for n, v in self.labels.items()},
            "regions_class_order": None if self.regions_class_order is None else list(self.regions_class_order),
        }

    def problems(self) -> list[str]:
        """What is inconsistent in the declaration (empty when valid); each message says the fix."""
        found: list[str] = []
        plain = {n: int(v) for n, v in self.labels.items() if not isinstance(v, tuple)}
        regions = self._region_items()
        values = self.file_values
        plain = {n: v for n, v in plain.items() if n not in regions}
        if 0 not in plain.values():
            found.append('labels must declare background as value 0, e.g. "background": 0')
        elif values != list(range(len(values))):
            found.append(
                f"label values (regions' values and ignore included) must be consecutive 0, 1, 2, ...; got {values}"
            )
        if len(set(plain.values())) != len(plain):
            found.append(f"two label names share a value: {sorted(plain.values())}")
        ignore = self.labels.get(IGNORE_NAME)
        if isinstance(ignore, tuple):
            found.append(f'label "{IGNORE_NAME}" must be one integer value, not a region {list(ignore)}')
        elif ignore is not None and values and ignore != max(values):
            found.append(
                f'label "{IGNORE_NAME}" must have the highest value ({max(values)}), got {ignore}; '
                "renumber so that ignore comes last"
            )
        foreground = set(values) - {0, ignore}
        for name, region in regions.items():
            bad = [v for v in region if v not in foreground]
            if bad:
                found.append(f"region {name!r} lists {bad}: a region holds foreground values (not 0, not ignore)")
        if regions and self.regions_class_order is None:
            found.append(
                'labels declare regions (lists of values) but "regions_class_order" is missing; '
                "it gives the label value each region writes back, e.g. [1, 2, 3]"
            )
        if self.regions_class_order is not None:
            if not regions:
                found.append('"regions_class_order" is given but no label is a region (a list of values)')
            elif len(self.regions_class_order) != len(regions):
                found.append(
                    f'"regions_class_order" has {len(self.regions_class_order)} values for {len(regions)} '
                    f"regions ({', '.join(regions)}); give one label value per region"
                )
            for value in self.regions_class_order:
                if value not in foreground:
                    found.append(
                        f'"regions_class_order" names value {value}, which is not a foreground label value '
                        f"({sorted(foreground)})"
                    )
        return found

    def validated(self) -> LabelScheme:
        """``self``, or a LabelError naming the first problem."""
        found = self.problems()
        if found:
            raise LabelError(found[0])
        return self

    def _region_items(self) -> dict[str, tuple[int, ...]]:
        """With any list value, every label but background (0) and ignore is a region (an int v is (v,)),
        as in nnU-Net; without, none."""
        if not any(isinstance(v, tuple) for v in self.labels.values()):
            return {}
        return {
            n: v if isinstance(v, tuple) else (int(v),) for n, v in self.labels.items() if n != IGNORE_NAME and v != 0
        }

    # ------------------------------------------------------------------ derived

    @property
    def has_regions(self) -> bool:
        return bool(self._region_items())

    @property
    def objective(self) -> Objective:
        """ "sigmoid" (one output per region) or "softmax" (one output per label value)."""
        return "sigmoid" if self.has_regions else "softmax"

    @property
    def ignore_value(self) -> int | None:
        value = self.labels.get(IGNORE_NAME)
        return int(value) if isinstance(value, (int, np.integer)) else None

    @property
    def has_ignore(self) -> bool:
        return self.ignore_value is not None

    @property
    def file_values(self) -> list[int]:
        """Every value a label file may hold (regions' values and ignore included), sorted."""
        values: set[int] = set()
        for value in self.labels.values():
            values.update(value if isinstance(value, tuple) else (int(value),))
        return sorted(values)

    @property
    def regions(self) -> dict[str, tuple[int, ...]]:
        """Region name -> file values, in output channel order (empty without regions)."""
        return self._region_items()

    @property
    def num_outputs(self) -> int:
        """Network output channels: one per region (sigmoid), else one per label value but ignore."""
        if self.has_regions:
            return len(self._region_items())
        return len(self.file_values) - (1 if self.has_ignore else 0)

    @property
    def foreground(self) -> dict[str, tuple[int, ...]]:
        """Evaluated classes (the regions, or the label values): name -> file values; background and ignore excluded."""
        if self.has_regions:
            return dict(self._region_items())
        return {
            n: (int(v),) for n, v in self.labels.items() if not isinstance(v, tuple) and v != 0 and n != IGNORE_NAME
        }

    @property
    def output_names(self) -> list[str]:
        """The name of each network output channel."""
        if self.has_regions:
            return list(self._region_items())
        names = {int(v): n for n, v in self.labels.items() if not isinstance(v, tuple)}
        return [names[i] for i in range(self.num_outputs)]

    @property
    def value_names(self) -> dict[int, str]:
        """Name of each value a predicted label map holds (background included, ignore never predicted);
        with regions, value ``regions_class_order[i]`` is named after region ``i``, which paints it."""
        names = {int(v): n for n, v in self.labels.items() if not isinstance(v, tuple) and n != IGNORE_NAME}
        if self.has_regions and self.regions_class_order is not None:
            names.update(zip(self.regions_class_order, self.regions))
        return dict(sorted(names.items()))

    # ------------------------------------------------------------------ tensors

    def training_target(self, seg: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Labels ``(B, 1, *spatial)`` -> (target, valid mask ``(B, 1, ...)`` bool or None without ignore).

        Softmax: the target is the label map (long) with ignore voxels set to 0 (they are masked out).
        Sigmoid: one binary float channel per region, ``(B, R, *spatial)``.
        """
        import torch

        seg = seg.long()
        ignore = self.ignore_value
        valid = None if ignore is None else seg != ignore
        if not self.has_regions:
            return (seg if valid is None else torch.where(valid, seg, torch.zeros_like(seg))), valid
        channels = [torch.isin(seg[:, 0], torch.tensor(values, device=seg.device)) for values in self.regions.values()]
        return torch.stack(channels, 1).float(), valid

    def probabilities(self, logits: torch.Tensor, dim: int = 0) -> torch.Tensor:
        """Network outputs -> probabilities: softmax over channels, or a sigmoid per region."""
        import torch

        return torch.sigmoid(logits) if self.has_regions else torch.softmax(logits, dim)

    def segmentation(self, probabilities: torch.Tensor | np.ndarray, dim: int = 0) -> torch.Tensor | np.ndarray:
        """Probabilities (channels along ``dim``) -> label map: argmax, or regions thresholded at 0.5 and
        painted in ``regions_class_order`` (later regions overwrite earlier ones). Same library as the input."""
        return segment(probabilities, self.regions_class_order if self.has_regions else None, dim)

    def background_probabilities(self) -> list[float]:
        """Per output channel, the probability of a voxel known to be background (outside the image)."""
        if self.has_regions:
            return [0.0] * self.num_outputs
        return [1.0] + [0.0] * (self.num_outputs - 1)

    @property
    def label_dtype(self) -> torch.dtype:
        import torch

        return torch.uint8 if max(self.file_values) < 256 else torch.int16

    def region_masks(self, labels: np.ndarray) -> np.ndarray:
        """Label map -> bool ``(R, *spatial)``, one mask per region."""
        return np.stack([np.isin(labels, values) for values in self.regions.values()])

    def check_regions_reproduce(self, labels: np.ndarray) -> list[int]:
        """File values (other than ignore) that painting this file's region masks in ``regions_class_order``
        does not give back; empty when the regions reproduce the file (always, without regions)."""
        if not self.has_regions:
            return []
        painted = np.asarray(self.segmentation(self.region_masks(labels).astype(np.float32)))
        wrong = painted != labels
        if self.ignore_value is not None:
            wrong &= labels != self.ignore_value
        return sorted(int(v) for v in np.unique(labels[wrong]))


def segment(
    probabilities: torch.Tensor | np.ndarray, regions_class_order: Sequence[int] | None, dim: int = 0
) -> torch.Tensor | np.ndarray:
    """Probabilities -> labels: argmax (``regions_class_order`` None), else each region's probability > 0.5
    paints its value, in order. For saved probabilities (``.npz`` records the order) and :class:`LabelScheme`."""
    import torch

    if isinstance(probabilities, np.ndarray):
        return segment(torch.from_numpy(probabilities), regions_class_order, dim).numpy()  # type: ignore[union-attr]
    if not regions_class_order:
        labels = probabilities.argmax(dim)
        return labels.to(torch.uint8 if probabilities.shape[dim] <= 256 else torch.int16)
    moved = probabilities.movedim(dim, 0)
    dtype = torch.uint8 if max(regions_class_order) < 256 else torch.int16
    labels = torch.zeros(moved.shape[1:], dtype=dtype, device=moved.device)
    for channel, value in enumerate(regions_class_order):
        labels[moved[channel] > 0.5] = value
    return labels


def scheme_from(labels: Mapping[str, Any], regions_class_order: Sequence[int] | None = None) -> LabelScheme:
    """``labels`` as a validated scheme: a LabelScheme as it is, else a dataset.json-style mapping."""
    if isinstance(labels, LabelScheme):
        return labels.validated()
    return LabelScheme.from_json(labels, regions_class_order)


def normalize_labels(labels: Mapping[str, int | Sequence[int]]) -> dict[str, tuple[int, ...]]:
    """Check a class map (name -> value or values) and return it as name -> tuple of values.

    Raises:
        ValueError: a name is empty, or a value is not an integer or a non-empty sequence of integers.
    """
    normalized: dict[str, tuple[int, ...]] = {}
    for name, spec in labels.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"labels: class names must be non-empty strings, got {name!r}")
        values = (spec,) if _is_int(spec) else tuple(spec) if isinstance(spec, (tuple, list)) else None
        if not values or not all(_is_int(v) for v in values):
            raise ValueError(
                f"labels: class {name!r} must map to an integer or a non-empty tuple of integers, got {spec!r}"
            )
        normalized[name] = tuple(sorted({int(v) for v in values}))
    return normalized


def evaluated_classes(labels: Mapping[str, Any]) -> tuple[dict[str, tuple[int, ...]], int | None]:
    """Classes to score and the ignore value, for any label mapping (a scheme or a user's class map).

    ``ignore`` is never a class; its value (when declared) masks voxels out of every metric. Background
    (a class made only of 0) is dropped. Plain values and regions keep their dataset.json meaning.
    """
    if isinstance(labels, LabelScheme):
        return labels.foreground, labels.ignore_value
    ignore = labels.get(IGNORE_NAME)
    classes = normalize_labels({name: value for name, value in labels.items() if name != IGNORE_NAME})
    return classes, (int(ignore) if isinstance(ignore, (int, np.integer)) and not isinstance(ignore, bool) else None)
