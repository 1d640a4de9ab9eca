"""``nnseg predict`` over a folder (or one file): find the cases, predict each, write atomically, report.

Input naming: nnU-Net's ``<case>_<XXXX><ending>`` (one file per channel) is grouped into
cases; any other image file is a single-channel case of its own. A folder of DICOM files is a
case too (named after the folder): ``-i`` may be one series folder or a folder of them; with
``--output-format dicom-seg`` such cases are written as DICOM Segmentations referencing their series.
A case that fails (wrong channel count, geometry mismatch between its channels, unreadable file,
a DICOM series that is not a regular grid) is reported and skipped; the others are still predicted.
"""

from __future__ import annotations

import os
import re
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from nnseg.atomic import remove_stale_temporaries
from nnseg.dataset.reading import read_channels
from nnseg.errors import NnsegError
from nnseg.inference.config import OUTPUT_FORMATS
from nnseg.inference.predictor import Prediction, Predictor
from nnseg.inference.probability_files import probabilities_path
from nnseg.io import Volume, split_suffix
from nnseg.io.dicom import is_dicom_folder, read_dicom_series
from nnseg.progress import progress
from nnseg.sharding import Shard, file_bytes

_CHANNEL = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")


@dataclass(frozen=True)
class InputCase:
    """One case to predict: its channel files in channel order (or its DICOM series folder) and the ending to write."""

    case_id: str
    files: tuple[Path, ...]
    ending: str
    dicom: bool = False


def find_input_cases(inputs: str | os.PathLike) -> list[InputCase]:
    """Cases in a folder (or the single file, or the one DICOM series folder, given)."""
    path = Path(inputs)
    if path.is_dir() and is_dicom_folder(path):
        return [InputCase(path.name, (path,), ".nii.gz", dicom=True)]
    if path.is_file():
        stem, ending = split_suffix(path)
        match = _CHANNEL.match(stem)
        return [InputCase(match["case"] if match else stem, (path,), ending)]
    if not path.is_dir():
        raise NnsegError(f"{path}: input folder or file not found")
    grouped: dict[str, dict[int, Path]] = {}
    endings: dict[str, str] = {}
    series = [
        InputCase(folder.name, (folder,), ".nii.gz", dicom=True)
        for folder in sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
        if is_dicom_folder(folder)
    ]
    for file in sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith(".")):
        try:
            stem, ending = split_suffix(file)
        except NnsegError:
            continue  # not an image (e.g. a json next to the images)
        match = _CHANNEL.match(stem)
        case_id, channel = (match["case"], int(match["channel"])) if match else (stem, 0)
        grouped.setdefault(case_id, {})[channel] = file
        endings[case_id] = ending
    if not grouped and not series:
        raise NnsegError(f"{path}: no image files (.nii.gz, .nii, .mha, .nrrd, ...) or DICOM series folders found")
    files = [
        InputCase(case_id, tuple(channels[c] for c in sorted(channels)), endings[case_id])
        for case_id, channels in sorted(grouped.items())
    ]
    clash = {c.case_id for c in files} & {c.case_id for c in series}
    if clash:
        raise NnsegError(f"{path}: {sorted(clash)[0]} is both an image file and a DICOM folder; rename one")
    return sorted(files + series, key=lambda case: case.case_id)


@dataclass
class PredictReport:
    """What :func:`predict_folder` did."""

    written: list[Path] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)


def case_outputs(
    output: Path, case: InputCase, *, save_probabilities: bool, overlay: bool, output_format: str = "nifti"
) -> list[Path]:
    """Every file a case must have in ``output`` to count as done: the label map, and what else was asked for."""
    ending = ".dcm" if output_format == "dicom-seg" and case.dicom else case.ending
    paths = [output / f"{case.case_id}{ending}"]
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
    overlay: bool = False,
    show_progress: bool = True,
    shard: Shard | None = None,
    output_format: str = "nifti",
    series_uid: str | None = None,
    overlap: bool = True,
) -> PredictReport:
    """Predict every case of ``inputs`` into ``output`` (``<case><ending>``).

    Args:
        predictor: the loaded model(s), with their postprocessing (:meth:`nnseg.inference.model.Model.predictor`).
        inputs: folder of images, or one image file.
        output: output folder (created).
        overwrite: replace existing predictions (default: skip cases already predicted).
        save_probabilities: also write ``<case>.npz`` with float16 probabilities and the label order.
        overlay: also write ``<case>_overlay.png`` for quick visual QC.
        show_progress: progress bar over cases.
        shard: predict only this part of the cases (``--num-parts/--part-id``, torchrun ranks).
        output_format: "nifti" (label maps in the input's file format and geometry) or "dicom-seg" (DICOM
            Segmentations of DICOM series inputs, one segment per label, referencing the source series).
        series_uid: the SeriesInstanceUID to read from DICOM folders that hold several series.
        overlap: read the next case and write the previous one while the network runs.
    """
    if output_format not in OUTPUT_FORMATS:
        raise NnsegError(f"--output-format must be one of {', '.join(OUTPUT_FORMATS)}, got {output_format!r}")
    output = Path(output)
    if output.exists() and not output.is_dir():
        raise NnsegError(f"{output}: the output is a file, not a folder; choose a folder for the label maps")
    if Path(inputs).is_dir() and output.resolve() == Path(inputs).resolve():
        raise NnsegError(
            f"{output}: the output folder is the input folder; predictions would mix with (and could "
            "overwrite) the images: choose another output folder"
        )
    all_cases = find_input_cases(inputs)
    if output_format == "dicom-seg" and not any(case.dicom for case in all_cases):
        raise NnsegError(
            f"{inputs}: --output-format dicom-seg needs DICOM series as input (a DICOM-SEG references its source "
            "images); give a DICOM series folder, or a folder of them, or write NIfTI"
        )
    input_files = {f.resolve() for case in all_cases for f in case.files}
    shard = shard or Shard()
    cases = shard.select(all_cases, size=lambda case: file_bytes(case.files))
    output.mkdir(parents=True, exist_ok=True)
    owned = None
    if not shard.is_whole:
        owned = {
            path.name
            for case in cases
            for path in case_outputs(
                output, case, save_probabilities=save_probabilities, overlay=overlay, output_format=output_format
            )
        }
    remove_stale_temporaries(output, targets=owned)
    report = PredictReport()
    todo = []
    for case in cases:
        outputs = case_outputs(
            output, case, save_probabilities=save_probabilities, overlay=overlay, output_format=output_format
        )
        if any(path.resolve() in input_files for path in outputs):
            report.failed[case.case_id] = f"{outputs[0]}: would overwrite an input image; choose another output folder"
        elif all(path.exists() for path in outputs) and not overwrite:
            report.skipped.append(case.case_id)
        else:
            todo.append((case, outputs))

    def read(case: InputCase) -> Volume:
        started = time.perf_counter()
        if case.dicom:
            volume = read_dicom_series(case.files[0], series_uid=series_uid, dtype="float32")
        else:
            volume = read_channels(case.files)
        predictor.times.add("read", time.perf_counter() - started)
        return volume

    def write(case: InputCase, outputs: list[Path], prediction: Prediction) -> Path:
        target = outputs[0]
        if output_format == "dicom-seg" and case.dicom:
            _write_dicom_seg(predictor, prediction, case, target, series_uid)
        elif output_format == "dicom-seg":
            raise NnsegError(f"{case.files[0]}: not a DICOM series; DICOM-SEG output needs one")
        else:
            predictor.write(prediction, target)
        if overlay:
            from nnseg.visualize import overlay_case

            names = predictor.scheme.value_names
            overlay_case(case.files[0], target, outputs[-1], label_names=names)
        return target

    # reading case i+1 and writing case i-1 overlap the network of case i: one reader and one writer thread,
    # at most one case read ahead and one write in flight, so at most three cases are in memory. Without
    # overlap the single worker runs each read after the previous write, and nothing is read ahead.
    with ThreadPoolExecutor(max_workers=2 if overlap else 1) as pool:
        reading: Future | None = None
        writing: tuple[str, Future] | None = None
        for index, (case, outputs) in enumerate(
            progress(todo, total=len(todo), desc="predict", unit="case", enabled=show_progress)
        ):
            volume_future = reading if reading is not None else pool.submit(read, case)
            reading = pool.submit(read, todo[index + 1][0]) if overlap and index + 1 < len(todo) else None
            try:
                volume = volume_future.result()
                prediction = predictor.predict_volume(
                    volume, case.files[0].name, return_probabilities=save_probabilities
                )
                del volume
            except NnsegError as exc:
                report.failed[case.case_id] = str(exc)
                prediction = None
            if writing is not None:
                _collect(writing, report)
            writing = None if prediction is None else (case.case_id, pool.submit(write, case, outputs, prediction))
        if writing is not None:
            _collect(writing, report)
    return report


def _collect(writing: tuple[str, Future], report: PredictReport) -> None:
    case_id, future = writing
    try:
        report.written.append(future.result())
    except NnsegError as exc:
        report.failed[case_id] = str(exc)


def _write_dicom_seg(
    predictor: Predictor, prediction: Prediction, case: InputCase, target: Path, series_uid: str | None
) -> None:
    """The label map as a DICOM Segmentation of the case's series (probabilities, if any, as .npz beside it)."""
    from nnseg.io.dicom import series_headers
    from nnseg.io.dicom_seg import write_dicom_seg

    labels = {name: value for value, name in predictor.scheme.value_names.items()}
    write_dicom_seg(prediction.labels, series_headers(case.files[0], series_uid=series_uid), labels, target)
    if prediction.probabilities is not None:
        predictor.write_probabilities(prediction, target)
