"""nnseg plan end to end: files written, summary printed, broken datasets refused with check's messages."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import nnseg
from nnseg.cli import main
from nnseg.planning import Plan
from tests.dataset.test_check import missing_label, nan_in_image


def test_plan_writes_fingerprint_and_plans(
    ct_dataset_template: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    work = tmp_path / "work"
    assert main(["plan", str(ct_dataset_template), "--work", str(work), "--workers", "1"]) == 0
    out = capsys.readouterr().out
    assert "3d_fullres" in out and "2d" in out and "patch" in out and "CT:ct" in out
    plan = Plan.load(work / "plans.json")
    assert plan.preset == "default" and plan.nnseg_version == nnseg.__version__
    assert plan.channel_names == ("CT",) and plan.labels == {"background": 0, "organ": 1, "lesion": 2}
    fingerprint = json.loads((work / "fingerprint.json").read_text())
    assert len(fingerprint["cases"]) == 4


def test_python_api_two_lines(mr_dataset_template: Path, tmp_path: Path) -> None:
    result = nnseg.plan(mr_dataset_template, tmp_path / "work", preset="cpu", workers=1, show_progress=False)
    assert result.plans_path.is_file() and result.plan.preset == "cpu"


def test_a_dataset_that_fails_check_is_refused_and_nothing_is_written(
    mr_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing_label(mr_dataset)
    nan_in_image(mr_dataset)
    assert main(["check", str(mr_dataset)]) == 2
    check_errors = [line for line in capsys.readouterr().out.splitlines() if line.startswith("error:")]
    work = tmp_path / "work"
    assert main(["plan", str(mr_dataset), "--work", str(work), "--workers", "1"]) == 2
    err = capsys.readouterr().err
    assert len(check_errors) == 2
    for line in check_errors:
        assert line in err
    assert not work.exists()


def test_bad_options_exit_2(ct_dataset_template: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", str(ct_dataset_template), "--work", str(tmp_path), "--preset", "nope"]) == 2
    assert "unknown preset 'nope'" in capsys.readouterr().err
    assert (
        main(["plan", str(ct_dataset_template), "--work", str(tmp_path), "--preset", "cpu", "--gpu-memory-gb", "8"])
        == 2
    )
    assert not (tmp_path / "plans.json").exists()


def test_msd_layout_plans_like_the_nnunet_layout(mr_dataset_template: Path, tmp_path: Path) -> None:
    from tests.dataset.test_spec import make_msd_copy

    msd = make_msd_copy(mr_dataset_template, tmp_path / "Task02_MR")
    ours = nnseg.plan(msd, tmp_path / "msd_work", workers=1, show_progress=False).plan
    reference = nnseg.plan(mr_dataset_template, tmp_path / "nnunet_work", workers=1, show_progress=False).plan
    assert ours.configurations.keys() == reference.configurations.keys()
    for name, config in reference.configurations.items():
        assert ours.configurations[name].patch_size == config.patch_size
        assert ours.configurations[name].spacing == pytest.approx(config.spacing)
        assert ours.configurations[name].normalization == config.normalization
