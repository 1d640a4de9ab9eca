"""nnseg synth: deterministic, varied, realistic phantoms in the nnU-Net layout."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from nnseg.cli import main
from nnseg.dataset import check_dataset, load_dataset
from nnseg.errors import NnsegError
from nnseg.io import read_volume
from nnseg.synth import SynthConfig, generate_dataset, make_case
from tests.helpers import tree_digest

SMALL = (20, 24, 24)


def test_same_seed_same_bytes_other_seed_other_data(tmp_path: Path) -> None:
    config = SynthConfig(num_cases=2, shape=SMALL, seed=5)
    a = generate_dataset(tmp_path / "a", config, show_progress=False)
    b = generate_dataset(tmp_path / "b", config, show_progress=False)
    c = generate_dataset(tmp_path / "c", SynthConfig(num_cases=2, shape=SMALL, seed=6), show_progress=False)
    assert tree_digest(a) == tree_digest(b)
    assert tree_digest(a) != tree_digest(c)


def test_ct_phantom_is_ct_like_with_two_structures_of_different_size() -> None:
    case = make_case(SynthConfig(shape=(32, 40, 40)), np.random.default_rng(0))
    assert case.images.dtype == np.int16 and case.images.shape[0] == 1
    assert case.images.min() <= -900  # air
    organ, lesion = (case.labels == 1).sum(), (case.labels == 2).sum()
    assert organ > 3 * lesion > 0
    # organ is brighter than surrounding soft tissue, the lesion brighter still
    body_mean = case.images[0][(case.labels == 0) & (case.images[0] > -500)].mean()
    assert body_mean < case.images[0][case.labels == 1].mean() < case.images[0][case.labels == 2].mean()


def test_mr_phantom_has_zero_background_bias_and_channels() -> None:
    case = make_case(SynthConfig(shape=(32, 40, 40), modality="MR", channels=2), np.random.default_rng(1))
    assert case.images.dtype == np.float32 and case.images.shape[0] == 2
    assert (case.images[0] == 0).mean() > 0.2  # zero outside the field of view: cropping matters
    assert not np.allclose(case.images[0], case.images[1])  # different contrasts


def test_cases_vary_in_shape_spacing_and_orientation(tmp_path: Path) -> None:
    root = generate_dataset(tmp_path / "d", SynthConfig(num_cases=4, shape=SMALL, seed=3), show_progress=False)
    dataset = load_dataset(root)
    geometries = [read_volume(c.image_files[0]).geometry for c in dataset.cases]
    assert len({g.shape for g in geometries}) > 1
    assert len({tuple(np.round(g.spacing, 3)) for g in geometries}) == 4
    assert all(not np.allclose(g.direction_ras, np.eye(3)) for g in geometries)  # oblique, non-identity
    assert any(np.linalg.det(g.direction_ras) > 0 and g.direction_ras[0, 0] < 0 for g in geometries)  # LPS-like


def test_anisotropic_variant_has_thick_slices(tmp_path: Path) -> None:
    config = SynthConfig(num_cases=3, shape=(30, 40, 40), anisotropic=True, seed=4)
    root = generate_dataset(tmp_path / "d", config, show_progress=False)
    for case in load_dataset(root).cases:
        spacing = read_volume(case.image_files[0]).geometry.spacing
        assert spacing[0] > 3 * max(spacing[1:])


@pytest.mark.parametrize("ending", [".nii.gz", ".mha", ".nrrd"])
def test_generated_dataset_passes_check_in_every_format(tmp_path: Path, ending: str) -> None:
    config = SynthConfig(num_cases=2, num_test=1, shape=SMALL, modality="MR", channels=2, file_ending=ending)
    root = generate_dataset(tmp_path / "d", config, show_progress=False)
    report = check_dataset(root, show_progress=False)
    assert report.ok, report.summary()
    assert (root / "imagesTs" / f"case_002_0001{ending}").is_file()
    assert (root / "labelsTs" / f"case_002{ending}").is_file()
    meta = json.loads((root / "dataset.json").read_text())
    assert meta["channel_names"] == {"0": "T1", "1": "T2"} and meta["file_ending"] == ending


def test_bad_options_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(NnsegError, match="one channel"):
        SynthConfig(channels=2).validate()
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    assert main(["synth", str(tmp_path / "full")]) == 2
    assert "not empty" in capsys.readouterr().err
