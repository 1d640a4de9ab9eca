"""Preprocessing: round trip fidelity, the cache format, resumability and crash safety."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

import nnseg
from nnseg.cli import main
from nnseg.dataset import load_dataset
from nnseg.dataset.reading import read_case_images, read_case_labels
from nnseg.io import Geometry
from nnseg.planning import Plan
from nnseg.preprocessing.preprocess import open_case, preprocess_case, preprocess_dataset
from nnseg.preprocessing.restore import probabilities_to_labels, restore_labels
from nnseg.synth import SynthConfig, generate_dataset
from tests.helpers import tree_digest

ROUND_TRIP_SETS = {
    "isotropic": SynthConfig(num_cases=4, shape=(96, 112, 112), seed=21),
    "anisotropic": SynthConfig(num_cases=4, shape=(120, 128, 128), modality="MR", anisotropic=True, seed=22),
    # thick slices along the last array axis: the plan transposes it to the front, restore transposes back
    "transposed": SynthConfig(num_cases=4, shape=(128, 128, 30), spacing=(0.8, 0.8, 4.0), modality="MR", seed=23),
}


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * (a & b).sum() / (a.sum() + b.sum()))


@pytest.mark.parametrize("name", list(ROUND_TRIP_SETS))
def test_label_round_trip_dice(tmp_path: Path, name: str) -> None:
    """Preprocess a label map, then invert (resample back, uncrop, transpose back): Dice >= 0.98 per label."""
    root = generate_dataset(tmp_path / name, ROUND_TRIP_SETS[name], show_progress=False)
    plan = nnseg.plan(root, tmp_path / "work", workers=1, show_progress=False).plan
    assert (plan.transpose_forward == (2, 0, 1)) == (name == "transposed")
    dataset = load_dataset(root)
    for case in dataset.cases:
        images = read_case_images(case, dataset.num_channels)
        labels = read_case_labels(case).array
        for config in plan.configurations.values():
            result = preprocess_case(images.array, images.geometry, labels, plan, config, case_id=case.case_id)
            restored = restore_labels(result.seg, result.properties, plan, config.resampling)
            assert restored.shape == labels.shape
            one_hot = np.stack([np.where(result.seg < 0, 0, result.seg) == c for c in range(3)]).astype(np.float32)
            via_probabilities = probabilities_to_labels(one_hot, result.properties, plan, config.resampling)
            for value in (1, 2):
                assert _dice(restored == value, labels == value) >= 0.98, (case.case_id, config.name, value)
                assert _dice(via_probabilities == value, labels == value) >= 0.98


@pytest.fixture()
def planned(mr_dataset_template: Path, tmp_path: Path) -> Path:
    work = tmp_path / "work"
    nnseg.plan(mr_dataset_template, work, workers=1, show_progress=False)
    return work


def test_cache_format(planned: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["preprocess", "--work", str(planned), "--workers", "1"]) == 0
    assert "3d_fullres: 3 case(s) written, 0 already done" in capsys.readouterr().out
    plan = Plan.load(planned / "plans.json")
    config = plan.configuration("3d_fullres")
    folder = planned / "preprocessed" / config.data_identifier
    case = open_case(folder, "case_001")
    assert isinstance(case.data, np.memmap) and case.data.dtype == np.float32
    assert case.data.shape == (2, *case.properties.shape) and case.seg.shape == case.properties.shape
    assert case.seg.min() == -1  # MR phantoms: outside the nonzero mask
    inside = case.seg >= 0
    assert abs(float(case.data[0][inside].mean())) < 0.05  # z-score inside the mask
    for value, *coords in case.locations[:50]:
        assert case.seg[tuple(coords)] == value
    assert set(case.properties.classes) == {1, 2}
    geometry = case.properties.original_geometry
    assert geometry.shape == read_case_images(load_dataset(plan.dataset_root).case("case_001"), 2).geometry.shape


def test_rerun_skips_done_cases_and_redoes_changed_plans(planned: Path) -> None:
    first = {s.configuration: s for s in preprocess_dataset(planned, workers=1, show_progress=False)}
    assert first["3d_fullres"].processed == 3
    again = {s.configuration: s for s in preprocess_dataset(planned, workers=1, show_progress=False)}
    assert again["3d_fullres"].processed == 0 and again["3d_fullres"].skipped == 3
    plans = json.loads((planned / "plans.json").read_text())
    plans["configurations"]["3d_fullres"]["resampling"]["image_order"] = 1
    (planned / "plans.json").write_text(json.dumps(plans))
    changed = {s.configuration: s for s in preprocess_dataset(planned, workers=1, show_progress=False)}
    assert changed["3d_fullres"].processed == 3 and changed["2d"].processed == 0


def test_missing_plan_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["preprocess", "--work", str(tmp_path)]) == 2
    assert "plans file not found" in capsys.readouterr().err


def _run_preprocess(work: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "nnseg", "preprocess", "--work", str(work), "--workers", "1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def test_kill_9_then_rerun_is_byte_identical(tmp_path: Path) -> None:
    root = generate_dataset(tmp_path / "raw", SynthConfig(num_cases=6, shape=(48, 64, 64), seed=5), show_progress=False)
    reference = tmp_path / "reference"
    nnseg.plan(root, reference, workers=1, show_progress=False)
    started = time.perf_counter()
    assert _run_preprocess(reference).wait() == 0
    duration = time.perf_counter() - started
    expected = tree_digest(reference / "preprocessed")
    for attempt, fraction in enumerate((0.35, 0.6, 0.8)):
        work = tmp_path / f"killed{attempt}"
        nnseg.plan(root, work, workers=1, show_progress=False)
        process = _run_preprocess(work)
        time.sleep(duration * fraction)
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        # whatever is marked done must be complete and readable
        for folder in (work / "preprocessed").glob("*"):
            for properties in folder.glob("case_*[0-9].json"):
                case = open_case(folder, properties.stem)
                assert np.isfinite(np.asarray(case.data)).all()
        assert _run_preprocess(work).wait() == 0
        assert tree_digest(work / "preprocessed") == expected


def test_a_large_image_is_preprocessed_in_about_one_padded_copy(
    preprocessed_work_template: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Memory (issue 10): a single float32 working copy (edge-padded) beyond the caller's image, as for a big CT."""
    monkeypatch.setattr("nnseg.preprocessing.resample.LEAN_SPLINE_VOXELS", 0)  # take the large-image path
    plan = Plan.load(preprocessed_work_template / "plans.json")
    config = plan.configuration("3d_fullres")
    shape = (160, 160, 160)
    images = np.full((1, *shape), -1000.0, np.float32)
    images[0, 20:-20, 30:-30, 25:-25] = np.random.default_rng(0).normal(40, 20, (120, 100, 110))
    geometry = Geometry(affine=np.diag([0.4, 0.4, 0.5, 1.0]), shape=shape)
    before = images.copy()
    tracemalloc.start()
    result = preprocess_case(images, geometry, None, plan, config, case_id="big")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    np.testing.assert_array_equal(images, before)
    assert result.body is not None and result.body.any()
    padded = np.prod([n + 24 for n in shape]) * 4  # the spline buffer: the image plus 12 voxels of edge per side
    assert peak < padded + 0.3 * images.nbytes, peak / images.nbytes
