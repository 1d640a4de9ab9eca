"""Planner decisions, each in isolation, and golden plans that catch any unexpected change."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from nnseg.dataset import load_dataset
from nnseg.fingerprint import CaseFingerprint, Fingerprint, IntensityStats, extract_fingerprint
from nnseg.planning import load_preset, make_plan
from nnseg.planning.plan import PlanError
from nnseg.planning.planner import (
    batch_size_for,
    channel_normalization,
    fit_patch_to_budget,
    initial_patch_size,
    target_spacing,
    transpose_for,
)
from nnseg.schema import to_jsonable

GOLDEN = Path(__file__).parent / "golden"
STATS = IntensityStats(
    mean=50.0, std=10.0, min=-100.0, max=300.0, median=48.0, percentile_00_5=10.0, percentile_99_5=90.0
)


def _fingerprint(spacings, shapes, channels=("CT",), relative=1.0) -> Fingerprint:
    cases = tuple(
        CaseFingerprint(f"c{i}", tuple(sp), tuple(sh), tuple(sh), relative, 100)
        for i, (sp, sh) in enumerate(zip(spacings, shapes))
    )
    return Fingerprint(1, "Test", tuple(channels), cases, (STATS,) * len(channels), relative)


def test_target_spacing_is_the_median_without_anisotropy() -> None:
    spacings = np.array([[1.0, 0.8, 0.8], [1.5, 0.7, 0.7], [1.2, 0.9, 0.9]])
    shapes = np.array([[100, 120, 120]] * 3)
    np.testing.assert_allclose(target_spacing(spacings, shapes, 3.0), [1.2, 0.8, 0.8])


def test_anisotropic_axis_with_few_slices_takes_the_10th_percentile() -> None:
    spacings = np.array([[5.0, 0.8, 0.8], [4.4, 0.8, 0.8], [3.0, 0.8, 0.8], [6.0, 0.8, 0.8], [4.0, 0.8, 0.8]])
    shapes = np.array([[20, 256, 256]] * 5)
    target = target_spacing(spacings, shapes, 3.0)
    assert target[0] == pytest.approx(np.percentile(spacings[:, 0], 10))
    assert target[1:] == pytest.approx([0.8, 0.8])


def test_anisotropic_axis_with_many_slices_keeps_the_median() -> None:
    spacings = np.array([[5.0, 0.8, 0.8], [4.0, 0.8, 0.8], [3.0, 0.8, 0.8]])
    shapes = np.array([[200, 256, 256]] * 3)  # many slices: the rule does not apply
    assert target_spacing(spacings, shapes, 3.0)[0] == pytest.approx(4.0)


def test_transpose_puts_the_coarsest_axis_first() -> None:
    assert transpose_for([0.8, 0.8, 4.0]) == ((2, 0, 1), (1, 2, 0))
    assert transpose_for([1.0, 1.0, 1.0]) == ((0, 1, 2), (0, 1, 2))


@pytest.mark.parametrize(
    ("names", "relative", "expected"),
    [
        (("CT",), 0.5, [("ct", False)]),
        (("ct",), 1.0, [("ct", False)]),
        (("T1", "T2"), 0.9, [("zscore", False), ("zscore", False)]),
        (("T1", "noNorm"), 0.5, [("zscore", True), ("none", False)]),
        (
            ("FLAIR", "rescale_to_0_1", "RGB_to_0_1"),
            0.6,
            [("zscore", True), ("rescale_to_0_1", False), ("rgb_to_0_1", False)],
        ),
    ],
)
def test_normalization_from_channel_names(names, relative, expected) -> None:
    fingerprint = _fingerprint([[1, 1, 1]], [[10, 10, 10]], channels=names, relative=relative)
    result = channel_normalization(fingerprint, 0.75)
    assert [(n.scheme, n.use_nonzero_mask) for n in result] == expected
    for norm in result:
        if norm.scheme == "ct":
            assert (norm.clip_low, norm.clip_high, norm.mean, norm.std) == (10.0, 90.0, 50.0, 10.0)


def test_initial_patch_follows_the_aspect_ratio_and_median_shape() -> None:
    preset = load_preset("default")
    assert initial_patch_size((1.0, 1.0, 1.0), (400, 400, 400), preset) == [256, 256, 256]
    patch = initial_patch_size((4.0, 1.0, 1.0), (400, 400, 400), preset)
    assert patch[1] == patch[2] and patch[1] / patch[0] == pytest.approx(4.0, rel=0.02)
    assert initial_patch_size((1.0, 1.0, 1.0), (50, 60, 70), preset) == [50, 60, 70]


def test_batch_size_is_capped_by_dataset_coverage_and_floored_at_two() -> None:
    preset = load_preset("default")
    candidate = fit_patch_to_budget((1.0, 1.0), (64, 64), preset, 1, 3)
    assert candidate.samples_that_fit > 100
    dataset_voxels = 64 * 64 * 64 * 4.0
    expected = round(dataset_voxels * 0.05 / (64 * 64))
    assert batch_size_for(candidate, preset, dataset_voxels) == expected
    assert batch_size_for(candidate, preset, 10.0) == 2


def test_more_gpu_memory_never_shrinks_the_patch() -> None:
    fingerprint = _fingerprint([[1.0, 1.0, 1.0]] * 4, [[300, 300, 300]] * 4)
    labels = {"background": 0, "a": 1}
    small = make_plan(fingerprint, labels, load_preset("default", gpu_memory_gb=4), nnseg_version="t")
    large = make_plan(fingerprint, labels, load_preset("default", gpu_memory_gb=24), nnseg_version="t")
    assert np.prod(large.configurations["3d_fullres"].patch_size) > np.prod(
        small.configurations["3d_fullres"].patch_size
    )


def test_large_images_get_a_lowres_configuration_and_batch_dice() -> None:
    fingerprint = _fingerprint([[1.0, 0.8, 0.8]] * 4, [[400, 512, 512]] * 4)
    plan = make_plan(fingerprint, {"background": 0, "a": 1}, load_preset("default"), nnseg_version="t")
    assert set(plan.configurations) == {"2d", "3d_fullres", "3d_lowres", "3d_cascade_fullres"}
    lowres, fullres = plan.configurations["3d_lowres"], plan.configurations["3d_fullres"]
    assert all(a > b for a, b in zip(lowres.spacing, fullres.spacing))
    assert fullres.batch_dice and not lowres.batch_dice
    assert lowres.next_stage == "3d_cascade_fullres"
    patch_fraction = np.prod(lowres.patch_size) / np.prod(lowres.median_shape)
    assert patch_fraction >= 0.25


def test_cpu_preset_plans_a_cheaper_step_than_default() -> None:
    fingerprint = _fingerprint([[1.0, 1.0, 1.0]] * 4, [[200, 200, 200]] * 4)
    labels = {"background": 0, "a": 1, "b": 2}
    gpu = make_plan(fingerprint, labels, load_preset("default"), nnseg_version="t").configurations["3d_fullres"]
    cpu = make_plan(fingerprint, labels, load_preset("cpu"), nnseg_version="t").configurations["3d_fullres"]
    assert np.prod(cpu.patch_size) < np.prod(gpu.patch_size)
    assert cpu.network.features_per_stage[0] == 16
    assert 0 < cpu.budget_used <= 1.0


def _golden_plan(dataset_root: Path, preset: str) -> dict:
    dataset = load_dataset(dataset_root)
    fingerprint = extract_fingerprint(dataset, workers=1, show_progress=False)
    plan = make_plan(fingerprint, dataset.labels, load_preset(preset), nnseg_version="golden")
    data = to_jsonable(plan)
    for config in data["configurations"].values():  # intensity statistics are checked elsewhere
        config["normalization"] = [
            {k: v for k, v in n.items() if k in ("channel", "scheme", "use_nonzero_mask")}
            for n in config["normalization"]
        ]
    return data


@pytest.mark.parametrize("preset", ["default", "cpu"])
@pytest.mark.parametrize("dataset", ["ct", "mr", "aniso"])
def test_golden_plans(request: pytest.FixtureRequest, dataset: str, preset: str, update_golden: bool) -> None:
    """A preset constant or planner rule that changes a plan must be a deliberate change (--update-golden)."""
    root = request.getfixturevalue(f"{dataset}_dataset_template")
    actual = _golden_plan(root, preset)
    path = GOLDEN / f"{dataset}_{preset}.json"
    if update_golden:
        path.parent.mkdir(exist_ok=True)
        path.write_text(json.dumps(actual, indent=1) + "\n")
    expected = json.loads(path.read_text())
    assert actual["configurations"].keys() == expected["configurations"].keys()
    for name, config in expected["configurations"].items():
        ours = actual["configurations"][name]
        np.testing.assert_allclose(ours.pop("spacing"), config.pop("spacing"), rtol=1e-6)
        np.testing.assert_allclose(ours.pop("median_shape"), config.pop("median_shape"), rtol=1e-6)
        np.testing.assert_allclose(ours.pop("budget_used"), config.pop("budget_used"), rtol=1e-6)
        assert ours == config, f"configuration {name} changed"
    for key in ("transpose_forward", "preset_values", "labels", "channel_names"):
        assert actual[key] == expected[key]


def test_labels_count_sets_the_outputs(ct_dataset_template: Path) -> None:
    dataset = load_dataset(ct_dataset_template)
    fingerprint = extract_fingerprint(dataset, workers=1, show_progress=False)
    plan = make_plan(fingerprint, dataset.labels, load_preset("default"), nnseg_version="t")
    assert plan.num_classes == 3
    more = make_plan(fingerprint, {**dataset.labels, "extra": 3}, load_preset("default"), nnseg_version="t")
    assert more.num_classes == 4
    assert replace(plan, labels=more.labels).num_classes == 4


def test_resenc_presets_plan_the_residual_encoder_with_more_room() -> None:
    """nnU-Net 2.8.1's ResEnc M/L: blocks (1, 3, 4, 6, 6, 6), one decoder conv per stage, larger references, no
    5 % batch cap (benchmarks/compare_plans.py --preset resenc_m checks them against nnU-Net itself)."""
    fingerprint = _fingerprint([[1.0, 1.0, 1.0]] * 4, [[200, 200, 200]] * 4)
    labels = {"background": 0, "a": 1, "b": 2}
    medium = make_plan(fingerprint, labels, load_preset("resenc_m"), nnseg_version="t").configurations["3d_fullres"]
    large = make_plan(fingerprint, labels, load_preset("resenc_l"), nnseg_version="t").configurations["3d_fullres"]
    for config in (medium, large):
        assert config.network.architecture == "resenc_unet"
        assert config.network.n_blocks_per_stage == (1, 3, 4, 6, 6, 6)[: config.network.n_stages]
        assert set(config.network.n_conv_per_stage_decoder) == {1}
        assert config.budget_used <= 1.0
    assert np.prod(large.patch_size) * large.batch_size > np.prod(medium.patch_size) * medium.batch_size


def test_architecture_changes_the_fitted_patch_not_the_rules() -> None:
    """Under the same budget a heavier network gets a smaller patch (or batch); the topology rules stay."""
    fingerprint = _fingerprint([[1.0, 1.0, 1.0]] * 4, [[200, 200, 200]] * 4)
    labels = {"background": 0, "a": 1, "b": 2}
    plans = {
        name: make_plan(fingerprint, labels, load_preset("cpu", architecture=name), nnseg_version="t")
        for name in ("unet", "unetpp", "fcn")
    }
    voxels = {name: np.prod(p.configurations["3d_fullres"].patch_size) for name, p in plans.items()}
    assert voxels["unetpp"] < voxels["unet"] < voxels["fcn"]
    for plan in plans.values():
        assert plan.configurations["3d_fullres"].budget_used <= 1.0


def test_nonewnet_preset_takes_its_fixed_patch_and_batch() -> None:
    fingerprint = _fingerprint([[1.0, 1.0, 1.0]] * 4, [[200, 150, 110]] * 4)
    plan = make_plan(fingerprint, {"background": 0, "a": 1}, load_preset("nonewnet"), nnseg_version="t")
    config = plan.configurations["3d_fullres"]
    assert config.patch_size == (128, 128, 112)  # 128 capped at the median image (110), padded to 16
    assert config.batch_size == 2
    assert config.network.features_per_stage == (30, 60, 120, 240, 480)  # four downsamplings
    assert set(plan.configurations) == {"2d", "3d_fullres"}


@pytest.mark.parametrize(("preset_name", "edge"), [("default", 256), ("cpu", 128)])
def test_large_images_get_the_lowres_and_cascade_pair(preset_name: str, edge: int) -> None:
    """The smallest cubes (1 mm, cropped; ``nnseg synth --shape E,E,E --spacing 1,1,1`` without cropping) that get
    the cascade: 256^3 with the default preset, 128^3 with the cpu preset once it lists 3d_lowres."""
    preset = load_preset(preset_name)
    if "3d_lowres" not in preset.configurations:  # the cpu preset does not plan 3d_lowres by itself
        preset = replace(preset, configurations=(*preset.configurations, "3d_lowres"))
    labels = {"background": 0, "organ": 1, "lesion": 2}
    smaller = make_plan(_fingerprint([[1.0] * 3] * 4, [[edge // 2 + 32] * 3] * 4), labels, preset, nnseg_version="t")
    assert "3d_cascade_fullres" not in smaller.configurations
    plan = make_plan(_fingerprint([[1.0] * 3] * 4, [[edge] * 3] * 4), labels, preset, nnseg_version="t")
    lowres, fullres = plan.configurations["3d_lowres"], plan.configurations["3d_fullres"]
    cascade = plan.configurations["3d_cascade_fullres"]
    assert lowres.next_stage == cascade.name and cascade.previous_stage == lowres.name
    assert cascade.data_identifier == fullres.data_identifier  # the same preprocessed data
    assert (cascade.patch_size, cascade.network, cascade.spacing) == (
        fullres.patch_size,
        fullres.network,
        fullres.spacing,
    )
    assert plan.input_channels(cascade.name) == 1 + 2 and plan.input_channels("3d_fullres") == 1
    plan.validate()


def test_a_cascade_must_follow_its_first_stage() -> None:
    fingerprint = _fingerprint([[1.0] * 3] * 4, [[256] * 3] * 4)
    plan = make_plan(fingerprint, {"background": 0, "a": 1}, load_preset("default"), nnseg_version="t")
    configurations = dict(plan.configurations)
    configurations["3d_lowres"] = replace(configurations["3d_lowres"], next_stage=None)
    with pytest.raises(PlanError, match="previous_stage is '3d_lowres', whose next_stage is None"):
        replace(plan, configurations=configurations).validate()
    configurations["3d_cascade_fullres"] = replace(configurations["3d_cascade_fullres"], previous_stage="3d_nope")
    with pytest.raises(PlanError, match="unknown configuration '3d_nope'"):
        replace(plan, configurations=configurations).validate()
