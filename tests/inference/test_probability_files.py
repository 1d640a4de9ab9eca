"""Probability files: where they go, what they hold, the same bytes for the same arrays."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from nnseg.inference.probability_files import probabilities_path, save_npz, save_probabilities
from nnseg.labels import LabelScheme


def test_the_npz_goes_beside_the_label_map() -> None:
    assert probabilities_path("out/case_001.nii.gz") == Path("out/case_001.npz")
    assert probabilities_path("out/case_001.dcm") == Path("out/case_001.npz")


def test_saved_probabilities_hold_names_and_order(tmp_path: Path) -> None:
    scheme = LabelScheme.from_json({"background": 0, "whole": [1, 2], "core": 2}, [1, 2])
    probabilities = np.random.default_rng(0).random((2, 3, 4, 5)).astype(np.float32)
    save_probabilities(tmp_path / "case.nii.gz", probabilities, scheme)
    with np.load(tmp_path / "case.npz") as saved:
        assert saved["probabilities"].dtype == np.float16
        np.testing.assert_allclose(saved["probabilities"], probabilities, atol=1e-3)
        assert list(saved["labels"]) == list(scheme.output_names)
        assert saved["regions_class_order"].tolist() == [1, 2]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["case.npz"]  # no temporary left


def test_the_same_arrays_give_the_same_bytes(tmp_path: Path) -> None:
    array = np.arange(24, dtype=np.float16).reshape(2, 3, 4)
    save_npz(tmp_path / "a.npz", probabilities=array)
    save_npz(tmp_path / "b.npz", probabilities=array)
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()
