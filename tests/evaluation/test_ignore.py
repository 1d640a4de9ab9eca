"""Metrics with the ignore label (unannotated reference voxels count nowhere) and per-region evaluation."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from nnseg.evaluation import evaluate_folders
from nnseg.evaluation.metrics import compute_metrics
from nnseg.io import Geometry, write_volume
from nnseg.labels import LabelScheme


def test_ignored_reference_voxels_count_in_neither_mask() -> None:
    reference = np.zeros((4, 4, 4), dtype=np.uint8)
    reference[:2] = 3  # ignore: slices 0-1 unannotated
    reference[2, :2] = 1
    prediction = np.zeros_like(reference)
    prediction[:2] = 1  # anything predicted on unannotated slices is not a false positive
    prediction[2, :2] = 1
    scored = compute_metrics(prediction, reference, (1, 1, 1), {"organ": 1}, ignore_value=3)
    assert scored["organ"].dice == 1.0 and scored["organ"].fp == 0
    unmasked = compute_metrics(prediction, reference, (1, 1, 1), {"organ": 1})
    assert unmasked["organ"].fp == 32


def test_evaluate_folders_reports_each_region_and_masks_ignore(tmp_path: Path) -> None:
    geometry = Geometry(affine=np.eye(4), shape=(6, 6, 6))
    reference = np.zeros((6, 6, 6), dtype=np.uint8)
    reference[1:5, 1:5, 1:5] = 1
    reference[2:4, 2:4, 2:4] = 3
    reference[0] = 4  # ignore
    prediction = reference.copy()
    prediction[0] = 1  # predicted on an unannotated slice: not scored
    prediction[2:4, 2:4, 2:4] = 2  # enhancing missed, but still inside tumor_core
    write_volume(tmp_path / "ref" / "a.nii.gz", reference, geometry, is_label=True)
    write_volume(tmp_path / "pred" / "a.nii.gz", prediction, geometry, is_label=True)
    scheme = LabelScheme.from_json(
        {"background": 0, "whole": [1, 2, 3], "core": [2, 3], "enhancing": [3], "ignore": 4}, [1, 2, 3]
    )
    summary = evaluate_folders(tmp_path / "pred", tmp_path / "ref", scheme, show_progress=False).to_dict()
    dice = {name: values["mean"]["dice"] for name, values in summary["per_class"].items()}
    assert dice == {"whole": 1.0, "core": 1.0, "enhancing": 0.0}
