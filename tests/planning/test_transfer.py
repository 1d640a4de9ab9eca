"""transfer_topology / plan(transfer_plan=...): the source's network, patch and batch; this dataset's spacing,
normalization, channels and labels; provenance in the preset name; clear errors."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from nnseg.api import plan as plan_dataset
from nnseg.errors import NnsegError
from nnseg.planning import Plan, PlanError, load_preset, make_plan
from nnseg.planning.transfer import load_source_plan, transfer_topology
from tests.planning.test_planner import _fingerprint


def _plans() -> tuple[Plan, Plan]:
    preset = replace(load_preset("cpu"), configurations=("2d", "3d_fullres"))
    source_fp = replace(_fingerprint([[1.0, 1.0, 1.0]] * 3, [[64, 80, 80]] * 3), dataset_name="Source")
    new_fp = replace(
        _fingerprint([[2.0, 0.8, 0.8]] * 3, [[30, 90, 90]] * 3, channels=("T1", "T2")), dataset_name="Target"
    )
    source = make_plan(source_fp, {"background": 0, "organ": 1}, preset, nnseg_version="t")
    new = make_plan(new_fp, {"background": 0, "organ": 1, "lesion": 2, "cyst": 3}, preset, nnseg_version="t")
    return source, new


def test_topology_comes_from_the_source_and_the_data_from_the_new_dataset() -> None:
    source, new = _plans()
    assert new.configurations["3d_fullres"].network != source.configurations["3d_fullres"].network
    result = transfer_topology(new, source, "/work/source")
    plan = result.plan
    assert plan.preset == "transfer:Source" and plan.dataset_name == "Target"
    assert plan.channel_names == ("T1", "T2") and len(plan.labels) == 4
    for name, config in plan.configurations.items():
        theirs, own = source.configurations[name], new.configurations[name]
        assert config.network == theirs.network
        assert (config.patch_size, config.batch_size) == (theirs.patch_size, theirs.batch_size)
        assert config.spacing == own.spacing and config.median_shape == own.median_shape
        assert config.normalization == own.normalization and config.data_identifier == own.data_identifier
    assert plan.preset_values == new.preset_values
    assert any("3d_fullres: unet network" in note for note in result.notes)
    Plan.validate(plan)


def test_configurations_the_source_lacks_are_dropped_and_none_shared_is_an_error() -> None:
    source, new = _plans()
    only_3d = replace(source, configurations={"3d_fullres": source.configurations["3d_fullres"]})
    result = transfer_topology(new, only_3d)
    assert set(result.plan.configurations) == {"3d_fullres"}
    assert any(note.startswith("2d: dropped") for note in result.notes)
    only_2d = replace(source, configurations={"2d": source.configurations["2d"]})
    with pytest.raises(PlanError, match="no configuration in common"):
        transfer_topology(replace(new, configurations={"3d_fullres": new.configurations["3d_fullres"]}), only_2d)


def test_missing_source_plan_and_conflicting_options_are_explained(tmp_path: Path) -> None:
    with pytest.raises(NnsegError, match=r"--transfer-plan .*plans\.json not found"):
        load_source_plan(tmp_path / "nowhere")
    with pytest.raises(NnsegError, match="drop --architecture"):
        plan_dataset(tmp_path / "dataset", tmp_path / "work", transfer_plan=tmp_path, architecture="unetpp")


def test_plan_with_transfer_uses_the_source_preset_by_default(
    ct_dataset_template: Path, mr_dataset_template: Path, tmp_path: Path
) -> None:
    source = plan_dataset(ct_dataset_template, tmp_path / "ct", preset="cpu", workers=1, show_progress=False)
    result = plan_dataset(
        mr_dataset_template, tmp_path / "mr", transfer_plan=tmp_path / "ct", workers=1, show_progress=False
    )
    assert result.plan.preset == f"transfer:{source.plan.dataset_name}"
    assert result.plan.preset_values == source.plan.preset_values  # cpu, as the source
    assert Plan.load(result.plans_path) == result.plan and result.transfer_notes
    for name, config in result.plan.configurations.items():
        assert config.network == source.plan.configurations[name].network
    assert [n.scheme for n in result.plan.configurations["3d_fullres"].normalization] == ["zscore", "zscore"]
