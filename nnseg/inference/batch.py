"""``nnseg predict`` over a folder (or one file): find the cases, predict each, write atomically, report.

Input naming: nnU-Net's ``<case>_<XXXX><ending>`` (one file per channel) is grouped into
cases; any other image file is a single-channel case of its own. A case that fails (wrong
channel count, geometry mismatch between its channels, unreadable file) is reported and
skipped; the others are still predicted.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path

from nnseg.atomic import remove_stale_temporaries
from nnseg.errors import NnsegError
from nnseg.inference.predictor import Predictor, probabilities_path
from nnseg.io import split_suffix
from nnseg.progress import progress

_CHANNEL = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")


@dataclass(frozen=True)
class InputCase:
    """One case to predict: its channel files in channel order and the file ending to write."""

    case_id: str
    files: tuple[Path, ...]
    ending: str


def find_input_cases(inputs: str | os.PathLike) -> list[InputCase]:
    """Cases in a folder (or the single file given)."""
    path = Path(inputs)
    if path.is_file():
        stem, ending = split_suffix(path)
        match = _CHANNEL.match(stem)
        return [InputCase(match["case"] if match else stem, (path,), ending)]
    if not path.is_dir():
        raise NnsegError(f"{path}: input folder or file not found")
    grouped: dict[str, dict[int, Path]] = {}
    endings: dict[str, str] = {}
    for file in sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith(".")):
        try:
            stem, ending = split_suffix(file)
        except NnsegError:
            continue  # not an image (e.g. a json next to the images)
        match = _CHANNEL.match(stem)
        case_id, channel = (match["case"], int(match["channel"])) if match else (stem, 0)
        grouped.setdefault(case_id, {})[channel] = file
        endings[case_id] = ending
    if not grouped:
        raise NnsegError(f"{path}: no image files (.nii.gz, .nii, .mha, .nrrd, ...) found")
    return [
        InputCase(case_id, tuple(channels[c] for c in sorted(channels)), endings[case_id])
        for case_id, channels in sorted(grouped.items())
    ]


@dataclass
class PredictReport:
    """What :func:`predict_folder` did."""

    written: list[Path] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)


def case_outputs(output: Path, case: InputCase, *, save_probabilities: bool, overlay: bool) -> list[Path]:
    """Every file a case must have in ``output`` to count as done: the label map, and what else was asked for."""
    paths = [output / f"{case.case_id}{case.ending}"]
    if save_probabilities:
        paths.append(probabilities_path(paths[0]))
    if overlay:
        paths.append(output / f"{case.case_id}_overlay.png")
    return paths


def predict_folder(
    predictor: Predictor,
    inputs: str | os.PathLike,
    output: str | os.PathLike,
    *,
    overwrite: bool = False,
    save_probabilities: bool = False,
    postprocess=None,
    overlay: bool = False,
    show_progress: bool = True,
) -> PredictReport:
    """Predict every case of ``inputs`` into ``output`` (``<case><ending>``).

    Args:
        predictor: the loaded model(s).
        inputs: folder of images, or one image file.
        output: output folder (created).
        overwrite: replace existing predictions (default: skip cases already predicted).
        save_probabilities: also write ``<case>.npz`` with float16 probabilities and the label order.
        postprocess: a callable applied to each label map before writing (e.g. from inference.json).
        overlay: also write ``<case>_overlay.png`` for quick visual QC.
        show_progress: progress bar over cases.
    """
    output = Path(output)
    if output.exists() and not output.is_dir():
        raise NnsegError(f"{output}: the output is a file, not a folder; choose a folder for the label maps")
    if Path(inputs).is_dir() and output.resolve() == Path(inputs).resolve():
        raise NnsegError(
            f"{output}: the output folder is the input folder; predictions would mix with (and could "
            "overwrite) the images: choose another output folder"
        )
    cases = find_input_cases(inputs)
    input_files = {f.resolve() for case in cases for f in case.files}
    output.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(output)
    report = PredictReport()
    for case in progress(cases, total=len(cases), desc="predict", unit="case", enabled=show_progress):
        outputs = case_outputs(output, case, save_probabilities=save_probabilities, overlay=overlay)
        target = outputs[0]
        if any(path.resolve() in input_files for path in outputs):
            report.failed[case.case_id] = f"{target}: would overwrite an input image; choose another output folder"
            continue
        if all(path.exists() for path in outputs) and not overwrite:
            report.skipped.append(case.case_id)
            continue
        try:
            prediction = predictor.predict_files(case.files, return_probabilities=save_probabilities)
            if postprocess is not None:
                prediction = replace(prediction, labels=postprocess(prediction.labels))
            predictor.write(prediction, target)
            if overlay:
                from nnseg.visualize import overlay_case

                names = {int(v): k for k, v in predictor.plan.labels.items() if isinstance(v, int)}
                overlay_case(case.files[0], target, outputs[-1], label_names=names)
        except NnsegError as exc:
            report.failed[case.case_id] = str(exc)
            continue
        report.written.append(target)
    return report
