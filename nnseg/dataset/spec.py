"""Dataset: one object over the nnU-Net v2 raw layout and the Medical Segmentation Decathlon layout.

nnU-Net v2 layout::

    dataset.json   {"channel_names": {"0": "CT"}, "labels": {"background": 0, "liver": 1},
                    "numTraining": 12, "file_ending": ".nii.gz"}
    imagesTr/<case>_<XXXX><file_ending>     one file per channel XXXX = 0000, 0001, ...
    labelsTr/<case><file_ending>
    imagesTs/<case>_<XXXX><file_ending>     optional

MSD layout::

    dataset.json   {"modality": {"0": "T1", "1": "T2"}, "labels": {"0": "background", "1": "tumour"},
                    "training": [{"image": "./imagesTr/x.nii.gz", "label": "./labelsTr/x.nii.gz"}],
                    "test": ["./imagesTs/y.nii.gz"], "numTraining": 1}
    multi-channel images are 4D NIfTI files (channels last in the file).

Loading never reads voxel data and never fails on a missing or stray file: such
findings are kept as :class:`Problem` records for ``nnseg check`` to report. Only an
unreadable or malformed ``dataset.json`` raises.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from nnseg.dataset.problems import Problem
from nnseg.errors import DatasetError
from nnseg.labels import LabelScheme

Layout = Literal["nnunet", "msd"]
_CHANNEL_STEM = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")


@dataclass(frozen=True)
class Case:
    """One case: its image file(s) and, for training cases, its label file.

    Attributes:
        case_id: identifier shared by the case's files.
        image_files: nnU-Net layout: the expected path of each declared channel's file.
            MSD layout: a single path to a 3D (one channel) or 4D (channels last) file.
            A path may not exist: ``nnseg check`` reports that.
        label_file: the expected label map path, or None for a test case.
        channels_in_one_file: True for MSD, where one 4D file holds all channels.
    """

    case_id: str
    image_files: tuple[Path, ...]
    label_file: Path | None
    channels_in_one_file: bool = False

    @property
    def missing_images(self) -> list[Path]:
        """Image files that do not exist."""
        return [f for f in self.image_files if not (f.is_file() or f.is_dir())]  # a dir: a DICOM series

    @property
    def is_complete(self) -> bool:
        """Every image file and the label file (if expected) exist."""
        label_ok = self.label_file is None or self.label_file.is_file()
        return label_ok and not self.missing_images


@dataclass(frozen=True)
class Dataset:
    """A parsed dataset folder.

    Attributes:
        root: the dataset folder.
        layout: "nnunet" or "msd".
        name: dataset name (dataset.json "name", else the folder name).
        channel_names: channel names in channel order, e.g. ("CT",) or ("T1", "T2").
        labels: the label scheme (a mapping name -> value, or tuple of values for a region, as in nnU-Net's
            dataset.json, with ``regions_class_order`` and the ``ignore`` label); not validated
            (``problems`` lists what is wrong).
        file_ending: image file suffix, e.g. ".nii.gz".
        num_training: the declared numTraining (None when absent).
        cases: training cases, sorted by id; some of their files may be missing (``nnseg check`` says).
        test_cases: cases under imagesTs (or MSD "test"), images only.
        problems: what loading found wrong (missing/stray files, dataset.json issues).
        raw_json: the dataset.json content.
    """

    root: Path
    layout: Layout
    name: str
    channel_names: tuple[str, ...]
    labels: LabelScheme
    file_ending: str
    num_training: int | None
    cases: tuple[Case, ...]
    test_cases: tuple[Case, ...] = ()
    problems: tuple[Problem, ...] = ()
    raw_json: dict = field(default_factory=dict, repr=False)

    @property
    def num_channels(self) -> int:
        return len(self.channel_names)

    @property
    def label_values(self) -> list[int]:
        """Every integer value a label file may contain, sorted (regions expanded, ignore included)."""
        return self.labels.file_values

    @property
    def has_regions(self) -> bool:
        return self.labels.has_regions

    def relative(self, path: Path) -> str:
        """A path relative to the dataset root, for messages."""
        try:
            return str(Path(path).relative_to(self.root))
        except ValueError:
            return str(path)

    def case(self, case_id: str) -> Case:
        """Look up a training case by id."""
        for case in self.cases:
            if case.case_id == case_id:
                return case
        raise KeyError(f"no case {case_id!r} in {self.root}")


def load_dataset(root: str | os.PathLike) -> Dataset:
    """Parse a dataset folder (nnU-Net v2 or MSD layout), reading dataset.json and listing files.

    Raises:
        DatasetError: the folder or its dataset.json is missing or malformed.
    """
    root = Path(root).resolve()
    if not root.is_dir():
        raise DatasetError(f"{root}: dataset folder not found")
    json_path = root / "dataset.json"
    if not json_path.is_file():
        raise DatasetError(f"{json_path}: missing; a dataset folder needs a dataset.json (see data_templates/)")
    raw = _read_json_object(json_path)
    if isinstance(raw.get("training"), list):
        return _load_msd(root, raw)
    return _load_nnunet(root, raw)


def _read_json_object(json_path: Path) -> dict:
    try:
        raw = json.loads(json_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{json_path}: not valid JSON ({exc})") from None
    if not isinstance(raw, dict):
        raise DatasetError(f"{json_path}: must hold a JSON object")
    return raw


def read_labels(json_path: str | os.PathLike) -> LabelScheme:
    """The ``labels`` of a dataset.json given by path (any file name), checked as ``nnseg check`` does."""
    json_path = Path(json_path)
    if not json_path.is_file():
        raise DatasetError(f"{json_path}: not found")
    raw = _read_json_object(json_path)
    labels, problems = _labels(raw, json_path, msd=isinstance(raw.get("training"), list))
    errors = [p.message for p in problems if p.severity == "error"]
    if errors:
        raise DatasetError(f"{json_path}: {errors[0]}")
    return labels


def _channel_names(raw: dict, json_path: Path) -> tuple[str, ...]:
    mapping = raw.get("channel_names", raw.get("modality"))
    if not isinstance(mapping, dict) or not mapping:
        raise DatasetError(f'{json_path}: needs "channel_names" (or MSD "modality"), e.g. {{"0": "CT"}}')
    try:
        indices = sorted(int(k) for k in mapping)
    except ValueError:
        raise DatasetError(f'{json_path}: channel_names keys must be channel indices "0", "1", ...') from None
    if indices != list(range(len(indices))):
        raise DatasetError(f"{json_path}: channel_names keys must be 0..{len(indices) - 1}, got {indices}")
    return tuple(str(mapping[str(i)]) for i in indices)


def _labels(raw: dict, json_path: Path, *, msd: bool) -> tuple[LabelScheme, list[Problem]]:
    mapping = raw.get("labels")
    if not isinstance(mapping, dict) or not mapping:
        raise DatasetError(f'{json_path}: needs "labels", e.g. {{"background": 0, "organ": 1}}')
    labels: dict[str, int | tuple[int, ...]] = {}
    if msd and all(_is_int_text(k) for k in mapping):
        for key, name in mapping.items():
            labels[str(name)] = int(key)
    else:
        for name, value in mapping.items():
            if isinstance(value, bool) or not isinstance(value, (int, list)):
                raise DatasetError(
                    f"{json_path}: label {name!r} must map to an integer or a list of integers, got {value!r}"
                )
            if isinstance(value, list):
                if not value or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
                    raise DatasetError(f"{json_path}: region {name!r} must list integer label values, got {value!r}")
                labels[name] = tuple(value)
            else:
                labels[name] = value
    order = raw.get("regions_class_order")
    if order is not None and not (
        isinstance(order, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in order)
    ):
        raise DatasetError(f"{json_path}: regions_class_order must list integer label values, got {order!r}")
    scheme = LabelScheme(labels, None if order is None else tuple(order))
    problems = [Problem("error", "labels_declaration", "dataset.json", message) for message in scheme.problems()]
    return scheme, problems


def _is_int_text(text: str) -> bool:
    return text.lstrip("-").isdigit()


def _num_training(raw: dict, json_path: Path) -> int | None:
    value = raw.get("numTraining")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise DatasetError(f"{json_path}: numTraining must be an integer, got {value!r}")
    return value


def _listing(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))


def _load_nnunet(root: Path, raw: dict) -> Dataset:
    json_path = root / "dataset.json"
    channel_names = _channel_names(raw, json_path)
    labels, problems = _labels(raw, json_path, msd=False)
    file_ending = raw.get("file_ending")
    if not isinstance(file_ending, str) or not file_ending.startswith("."):
        raise DatasetError(f'{json_path}: needs "file_ending", e.g. ".nii.gz"')
    n_channels = len(channel_names)

    images, image_problems = _scan_channel_files(root / "imagesTr", root, file_ending, n_channels)
    test_images, test_problems = _scan_channel_files(root / "imagesTs", root, file_ending, n_channels)
    problems += image_problems + test_problems
    label_files: dict[str, Path] = {}
    if not (root / "labelsTr").is_dir():
        problems.append(Problem("error", "missing_folder", "labelsTr", "folder labelsTr/ is missing"))
    for path in _listing(root / "labelsTr"):
        if not path.name.endswith(file_ending):
            problems.append(
                Problem(
                    "warning",
                    "stray_file",
                    f"labelsTr/{path.name}",
                    f"ignored: does not end with the dataset's file_ending {file_ending!r}",
                )
            )
            continue
        label_files[path.name[: -len(file_ending)]] = path
    if not (root / "imagesTr").is_dir():
        problems.append(Problem("error", "missing_folder", "imagesTr", "folder imagesTr/ is missing"))

    def channel_paths(folder: str, case_id: str) -> tuple[Path, ...]:
        # a channel is a file <case>_<XXXX><file_ending>, or a DICOM series folder <case>_<XXXX>/
        paths = []
        for i in range(n_channels):
            series = root / folder / f"{case_id}_{i:04d}"
            paths.append(series if series.is_dir() else root / folder / f"{case_id}_{i:04d}{file_ending}")
        return tuple(paths)

    cases = [
        Case(case_id, channel_paths("imagesTr", case_id), root / "labelsTr" / f"{case_id}{file_ending}")
        for case_id in sorted(images | set(label_files))
    ]
    test_cases = [Case(cid, channel_paths("imagesTs", cid), None) for cid in sorted(test_images)]
    problems += _case_insensitive_duplicates([c.case_id for c in cases], "imagesTr")
    return Dataset(
        root=root,
        layout="nnunet",
        name=str(raw.get("name", root.name)),
        channel_names=channel_names,
        labels=labels,
        file_ending=file_ending,
        num_training=_num_training(raw, json_path),
        cases=tuple(cases),
        test_cases=tuple(test_cases),
        problems=tuple(problems),
        raw_json=raw,
    )


def _scan_channel_files(folder: Path, root: Path, file_ending: str, n_channels: int) -> tuple[set[str], list[Problem]]:
    """Case ids with at least one well-named channel file in ``folder``, plus naming problems."""
    found: set[str] = set()
    problems: list[Problem] = []
    rel = folder.relative_to(root)
    if folder.is_dir():  # DICOM series folders stand for channel files
        from nnseg.io.dicom import is_dicom_folder

        for series in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
            match = _CHANNEL_STEM.match(series.name)
            if match is not None and is_dicom_folder(series) and int(match["channel"]) < n_channels:
                found.add(match["case"])
    for path in _listing(folder):
        if not path.name.endswith(file_ending):
            problems.append(
                Problem(
                    "warning",
                    "stray_file",
                    f"{rel}/{path.name}",
                    f"ignored: does not end with the dataset's file_ending {file_ending!r}",
                )
            )
            continue
        match = _CHANNEL_STEM.match(path.name[: -len(file_ending)])
        if match is None:
            problems.append(
                Problem(
                    "error",
                    "bad_file_name",
                    f"{rel}/{path.name}",
                    f"image names must be <case>_<XXXX>{file_ending} with a 4-digit channel index, "
                    f"e.g. case001_0000{file_ending}",
                )
            )
            continue
        channel = int(match["channel"])
        if channel >= n_channels:
            problems.append(
                Problem(
                    "error",
                    "extra_channel",
                    f"{rel}/{path.name}",
                    f"channel index {channel:04d} but dataset.json declares {n_channels} "
                    f"channel(s) (0000..{n_channels - 1:04d})",
                    match["case"],
                )
            )
            continue
        found.add(match["case"])
    return found, problems


def _case_insensitive_duplicates(case_ids: list[str], where: str) -> list[Problem]:
    seen: dict[str, str] = {}
    problems = []
    for case_id in case_ids:
        key = case_id.lower()
        if key in seen:
            problems.append(
                Problem(
                    "error",
                    "duplicate_case",
                    where,
                    f"case ids {seen[key]!r} and {case_id!r} differ only in upper/lower case; "
                    "they collide on case-insensitive file systems",
                    case_id,
                )
            )
        else:
            seen[key] = case_id
    return problems


def _load_msd(root: Path, raw: dict) -> Dataset:
    json_path = root / "dataset.json"
    channel_names = _channel_names(raw, json_path)
    labels, problems = _labels(raw, json_path, msd=True)
    file_ending = ".nii.gz"
    entries = raw["training"]
    cases: list[Case] = []
    seen: dict[str, int] = {}
    listed_images: set[Path] = set()
    listed_labels: set[Path] = set()
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict) or not isinstance(entry.get("image"), str):
            raise DatasetError(f'{json_path}: training[{index}] must be {{"image": ..., "label": ...}}')
        outside = [entry[k] for k in ("image", "label") if isinstance(entry.get(k), str) and _leaves(entry[k])]
        if outside:
            problems.append(_outside_problem(f"training[{index}]", outside[0]))
            continue
        image = (root / entry["image"]).resolve()
        label = (root / entry["label"]).resolve() if isinstance(entry.get("label"), str) else None
        case_id = _msd_case_id(image)
        if case_id in seen:
            problems.append(
                Problem(
                    "error",
                    "duplicate_case",
                    "dataset.json",
                    f'case {case_id!r} is listed twice in "training" (entries {seen[case_id]} and {index})',
                    case_id,
                )
            )
            continue
        seen[case_id] = index
        listed_images.add(image)
        if label is None:
            raise DatasetError(f'{json_path}: training[{index}] has no "label"')
        listed_labels.add(label)
        cases.append(Case(case_id, (image,), label, channels_in_one_file=True))
    for path in _listing(root / "labelsTr"):
        if path.name.endswith(file_ending) and path.resolve() not in listed_labels:
            problems.append(
                Problem(
                    "error",
                    "label_without_image",
                    f"labelsTr/{path.name}",
                    'label file is not listed in dataset.json "training" (no image for it)',
                )
            )
    for path in _listing(root / "imagesTr"):
        if path.name.endswith(file_ending) and path.resolve() not in listed_images:
            problems.append(
                Problem(
                    "warning",
                    "unlisted_image",
                    f"imagesTr/{path.name}",
                    'image is not listed in dataset.json "training"; it is ignored',
                )
            )
    test_cases = []
    for index, item in enumerate(raw.get("test", []) or []):
        if isinstance(item, str) and _leaves(item):
            problems.append(_outside_problem(f"test[{index}]", item))
        elif isinstance(item, str):
            test_path = (root / item).resolve()
            test_cases.append(Case(_msd_case_id(test_path), (test_path,), None, channels_in_one_file=True))
    return Dataset(
        root=root,
        layout="msd",
        name=str(raw.get("name", root.name)),
        channel_names=channel_names,
        labels=labels,
        file_ending=file_ending,
        num_training=_num_training(raw, json_path),
        cases=tuple(sorted(cases, key=lambda c: c.case_id)),
        test_cases=tuple(test_cases),
        problems=tuple(problems),
        raw_json=raw,
    )


def _leaves(entry: str) -> bool:
    """Whether a dataset.json path leaves the dataset folder as written (absolute, or ``..`` past its root);
    links inside the folder are the user's own layout and are followed as usual."""
    return Path(entry).is_absolute() or os.path.normpath(entry).split(os.sep)[0] == ".."


def _outside_problem(where: str, entry: str) -> Problem:
    return Problem(
        "error",
        "outside_dataset",
        "dataset.json",
        f"{where}: {entry!r} lies outside the dataset folder; dataset.json names files inside it "
        "(e.g. ./imagesTr/case_001.nii.gz): move or link the files into the dataset folder",
    )


def _msd_case_id(path: Path) -> str:
    name = path.name
    for suffix in (".nii.gz", ".nii"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return path.stem
