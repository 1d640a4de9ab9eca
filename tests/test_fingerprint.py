"""Fingerprint: per-case geometry facts, foreground statistics, bounded sampling, determinism."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from nnseg import fingerprint as fingerprint_module
from nnseg.cropping import crop_to_nonzero
from nnseg.dataset import load_dataset
from nnseg.dataset.reading import read_case_images, read_case_labels
from nnseg.fingerprint import Fingerprint, extract_fingerprint


def test_case_facts_match_the_files(mr_dataset_template: Path) -> None:
    dataset = load_dataset(mr_dataset_template)
    fingerprint = extract_fingerprint(dataset, workers=1, show_progress=False)
    assert [c.case_id for c in fingerprint.cases] == [c.case_id for c in dataset.cases]
    for case, facts in zip(dataset.cases, fingerprint.cases):
        images = read_case_images(case, 2)
        cropped, labels, _, _ = crop_to_nonzero(images.array, read_case_labels(case).array)
        assert facts.spacing == pytest.approx(images.geometry.spacing)
        assert facts.shape == images.array.shape[1:]
        assert facts.shape_after_crop == cropped.shape[1:]
        assert facts.shape_after_crop != facts.shape  # MR phantoms are zero outside the field of view
        assert facts.relative_size_after_crop == pytest.approx(np.prod(cropped.shape[1:]) / np.prod(facts.shape))
        assert facts.foreground_voxels == int((labels > 0).sum())
    assert fingerprint.median_relative_size_after_crop < 1.0


def test_intensity_statistics_match_a_direct_computation(ct_dataset_template: Path) -> None:
    dataset = load_dataset(ct_dataset_template)
    fingerprint = extract_fingerprint(dataset, workers=1, show_progress=False)
    values = []
    for case in dataset.cases:
        cropped, labels, _, _ = crop_to_nonzero(read_case_images(case, 1).array, read_case_labels(case).array)
        values.append(cropped[0][labels > 0])
    values = np.concatenate(values).astype(np.float64)
    stats = fingerprint.intensity[0]
    assert stats.mean == pytest.approx(values.mean(), rel=1e-9)
    assert stats.std == pytest.approx(values.std(), rel=1e-6)
    assert (stats.min, stats.max) == (values.min(), values.max())
    # sampled statistics: within a couple of HU of the exact quantiles
    assert stats.median == pytest.approx(np.median(values), abs=2)
    assert stats.percentile_00_5 == pytest.approx(np.percentile(values, 0.5), abs=5)
    assert stats.percentile_99_5 == pytest.approx(np.percentile(values, 99.5), abs=5)


def test_sampling_is_bounded_whatever_the_case_count(ct_dataset_template: Path, monkeypatch) -> None:
    sizes = []
    original = fingerprint_module._analyze_case

    def spy(task):
        result = original(task)
        sizes.append(sum(s.size for s in result.samples))
        return result

    monkeypatch.setattr(fingerprint_module, "_analyze_case", spy)
    dataset = load_dataset(ct_dataset_template)
    extract_fingerprint(dataset, workers=1, show_progress=False)
    assert sum(sizes) <= fingerprint_module.FOREGROUND_SAMPLES_TOTAL


def test_parallel_equals_serial_and_json_round_trip(mr_dataset_template: Path, tmp_path: Path) -> None:
    dataset = load_dataset(mr_dataset_template)
    serial = extract_fingerprint(dataset, workers=1, show_progress=False)
    parallel = extract_fingerprint(dataset, workers=2, show_progress=False)
    assert serial == parallel
    path = serial.save(tmp_path / "fingerprint.json")
    assert Fingerprint.load(path) == serial
