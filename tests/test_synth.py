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
from nnseg.synth import Structure, SynthConfig, generate_dataset, make_case
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


def test_structures_span_sizes_and_counts_as_asked() -> None:
    from scipy import ndimage

    structures = tuple(Structure.parse(s) for s in ("large:1200", "medium:100", "small:30x3"))
    config = SynthConfig(shape=(50, 50, 50), spacing=(2.8, 2.8, 2.8), modality="MR", structures=structures)
    assert config.labels == {"background": 0, "large": 1, "medium": 2, "small": 3}
    for seed in range(4):
        case = make_case(config, np.random.default_rng(seed))
        sizes = [int((case.labels == value).sum()) for value in (1, 2, 3)]
        assert 700 <= sizes[0] <= 1800 and 50 <= sizes[1] <= 160 and 3 * 15 <= sizes[2] <= 3 * 50, sizes
        assert ndimage.label(case.labels == 3)[1] == 3  # three separate small blobs
        image = case.images[0]
        body = image[(case.labels == 0) & (image > 100)].mean()
        for value in (1, 2, 3):  # every structure stands out from the body
            assert abs(image[case.labels == value].mean() - body) > 2 * 25  # two noise SDs, after blur


def test_structure_option_and_its_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["synth", str(tmp_path / "d"), "--cases", "2", "--shape", "24,24,24", "--modality", "CT"]
    assert main([*args, "--structure", "organ:400", "--structure", "lesion:20x2"]) == 0
    meta = json.loads((tmp_path / "d" / "dataset.json").read_text())
    assert meta["labels"] == {"background": 0, "organ": 1, "lesion": 2}
    assert check_dataset(tmp_path / "d", show_progress=False).ok
    for bad, message in [
        ("lesion", "NAME:VOXELS"),
        ("lesion:0", "voxels must be 1..1e7"),
        ("lesion:20x0", "count must be 1..50"),
        ("back ground:5", "must be a word"),
    ]:
        with pytest.raises(SystemExit) as exit_info:
            main([*args[:1], str(tmp_path / "e"), "--structure", bad])
        assert exit_info.value.code == 2
        assert message in capsys.readouterr().err
    with pytest.raises(NnsegError, match="names must differ"):
        SynthConfig(structures=(Structure("a", 10), Structure("a", 20))).validate()


def test_more_channels_than_the_tissue_table() -> None:
    case = make_case(SynthConfig(shape=(24, 24, 24), modality="MR", channels=4), np.random.default_rng(2))
    assert case.images.shape[0] == 4
