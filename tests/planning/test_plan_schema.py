"""plans.json: round trip, and clear errors for broken or hand-edited files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nnseg.cli import main
from nnseg.errors import NnsegError
from nnseg.planning import Plan, PlanError, load_preset, make_plan
from nnseg.planning.presets import available_presets, presets_dir
from tests.planning.test_planner import _fingerprint


@pytest.fixture()
def plan_file(tmp_path: Path) -> Path:
    fingerprint = _fingerprint([[2.0, 0.8, 0.8]] * 3, [[60, 160, 160]] * 3)
    plan = make_plan(fingerprint, {"background": 0, "organ": 1}, load_preset("default"), nnseg_version="t")
    return plan.save(tmp_path / "plans.json")


def _edit(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def test_round_trip(plan_file: Path) -> None:
    plan = Plan.load(plan_file)
    again = plan.save(plan_file.with_name("again.json"))
    assert json.loads(again.read_text()) == json.loads(plan_file.read_text())
    assert plan.configuration("3d_fullres").network.architecture == "unet"
    with pytest.raises(PlanError, match="available: 2d, 3d_fullres"):
        plan.configuration("3d_lowres")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda d: d["configurations"]["3d_fullres"].update(patch_size=[48, 100, 160]),
            r"configurations.3d_fullres.patch_size\[1\] = 100 must be divisible by",
        ),
        (
            lambda d: d["configurations"]["3d_fullres"].update(batch_size="two"),
            "configurations.3d_fullres.batch_size: expected an integer",
        ),
        (lambda d: d["configurations"]["2d"].pop("network"), "configurations.2d.network: missing"),
        (lambda d: d["configurations"]["2d"].update(patchsize=[1, 2]), "configurations.2d.patchsize: unknown key"),
        (lambda d: d.update(transpose_forward=[0, 0, 1]), "transpose_forward must be a permutation"),
        (lambda d: d["configurations"]["3d_fullres"]["network"].update(n_stages=3), "entries for n_stages=3"),
        (
            lambda d: d["configurations"]["3d_fullres"]["normalization"][0].update(scheme="minmax"),
            r"normalization\[0\].scheme: expected one of",
        ),
        (lambda d: d.update(schema_version=99), "schema_version 99 is not supported"),
        (  # the architecture tag picks the network's fields; an unknown one lists the choices
            lambda d: d["configurations"]["2d"]["network"].update(architecture="vnet"),
            r"configurations.2d.network.architecture: expected one of \['deeplabv3plus', 'fcn', 'resenc_unet'",
        ),
        (  # a U-Net's fields under another tag: the field that tag needs is named
            lambda d: d["configurations"]["2d"]["network"].update(architecture="resenc_unet"),
            "configurations.2d.network.n_conv_per_stage: unknown key",
        ),
        (
            lambda d: d["configurations"]["3d_fullres"]["network"].update(n_conv_per_stage_decoder=[2]),
            "configurations.3d_fullres.network.n_conv_per_stage_decoder needs n_stages - 1",
        ),
        (  # a tag that is not a string (a list is unhashable): still one clear line
            lambda d: d["configurations"]["2d"]["network"].update(architecture=["unet"]),
            r"configurations.2d.network.architecture: expected one of \[",
        ),
        (  # the plain U-Net builds 2 convolutions per stage: said at load, not as a traceback in training
            lambda d: d["configurations"]["2d"]["network"].update(
                n_conv_per_stage=[3] * len(d["configurations"]["2d"]["network"]["n_conv_per_stage"])
            ),
            "the plain U-Net .MONAI's DynUNet. has 2 convolutions per stage",
        ),
        (
            lambda d: d["configurations"]["2d"]["network"].update(kernel_sizes=[]),
            "configurations.2d.network.kernel_sizes has 0 entries",
        ),
    ],
)
def test_hand_edits_are_refused_with_the_field_named(plan_file: Path, change, message: str) -> None:
    _edit(plan_file, change)
    with pytest.raises(PlanError, match=message) as info:
        Plan.load(plan_file)
    assert str(plan_file) in str(info.value)


def test_missing_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(NnsegError, match="plans file not found"):
        Plan.load(tmp_path / "nope.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(NnsegError, match="not valid JSON"):
        Plan.load(tmp_path / "bad.json")


def test_presets_ship_and_load() -> None:
    assert {"default", "cpu"} <= set(available_presets())
    default = load_preset("default")
    assert default.budget.type == "gpu_memory" and default.budget.gpu_memory_gb == 8.0
    assert (default.base_features, default.max_features_3d, default.feature_map_min_edge) == (32, 320, 4)
    assert load_preset("default", gpu_memory_gb=24).budget.gpu_memory_gb == 24.0
    assert load_preset("cpu").budget.type == "step_time"


def test_a_fixed_patch_preset_needs_positive_sizes(tmp_path: Path) -> None:
    data = json.loads((presets_dir() / "nonewnet.json").read_text())
    data["budget"]["batch_size_3d"] = 0
    (tmp_path / "bad.json").write_text(json.dumps(data))
    with pytest.raises(NnsegError, match="budget: batch_size_3d must be >= 1, got 0"):
        load_preset(tmp_path / "bad.json")


def test_bad_presets_are_refused(tmp_path: Path) -> None:
    with pytest.raises(NnsegError, match="unknown preset 'gpu9000'; available: .*default"):
        load_preset("gpu9000")
    with pytest.raises(NnsegError, match="applies to GPU-memory presets; preset .cpu. has a step_time budget"):
        load_preset("cpu", gpu_memory_gb=8)
    broken = tmp_path / "mine.json"
    broken.write_text(
        json.dumps({"name": "mine", "description": "", "budget": {"type": "gpu_memory"}, "base_features": 0})
    )
    with pytest.raises(NnsegError, match="base_features must be >= 1"):
        load_preset(broken)
    broken.write_text(json.dumps({"name": "mine", "description": "", "budget": {"type": "tpu"}}))
    with pytest.raises(NnsegError, match="budget"):
        load_preset(broken)


def test_custom_preset_file_is_used(ct_dataset_template: Path, tmp_path: Path) -> None:
    data = json.loads((presets_dir() / "default.json").read_text())
    data.update(name="narrow", base_features=8, configurations=["3d_fullres"])
    custom = tmp_path / "narrow.json"
    custom.write_text(json.dumps(data))
    work = tmp_path / "work"
    assert main(["plan", str(ct_dataset_template), "--work", str(work), "--preset", str(custom), "--workers", "1"]) == 0
    plan = Plan.load(work / "plans.json")
    assert plan.preset == "narrow" and list(plan.configurations) == ["3d_fullres"]
    assert plan.configurations["3d_fullres"].network.features_per_stage[0] == 8


@pytest.mark.parametrize("architecture", ["resenc_unet", "unetpp", "deeplabv3plus", "segformer", "fcn"])
def test_every_architecture_round_trips_and_its_own_fields_are_checked(architecture: str, tmp_path: Path) -> None:
    fingerprint = _fingerprint([[2.0, 0.8, 0.8]] * 3, [[40, 96, 96]] * 3)
    preset = load_preset("cpu", architecture=architecture)
    path = make_plan(fingerprint, {"background": 0, "organ": 1}, preset, nnseg_version="t").save(tmp_path / "p.json")
    plan = Plan.load(path)
    assert plan.configuration("3d_fullres").network.architecture == architecture
    assert Plan.load(plan.save(tmp_path / "again.json")) == plan
    bad_field = {
        "resenc_unet": ("n_blocks_per_stage", [0], "n_blocks_per_stage has 1 entries for n_stages="),
        "unetpp": ("prune_level", 99, "prune_level must be null or in 1.."),
        "deeplabv3plus": ("aspp_rates", [[2, 2]], r"aspp_rates\[0\] needs 3 values"),
        "segformer": (
            "num_heads",
            [3, 3, 3, 3][: len(plan.configuration("3d_fullres").network.features_per_stage)],
            r"num_heads\[0\] = 3 does not divide features_per_stage\[0\]",
        ),
        "fcn": ("score_stages", [0, 1], "score_stages must lie in"),
    }[architecture]
    name, value, message = bad_field
    _edit(path, lambda d: d["configurations"]["3d_fullres"]["network"].update({name: value}))
    with pytest.raises(PlanError, match=f"configurations.3d_fullres.network.{message}"):
        Plan.load(path)


def test_plans_record_the_objective_and_version_1_plans_load_as_softmax(plan_file: Path) -> None:
    assert json.loads(plan_file.read_text())["objective"] == "softmax"
    _edit(plan_file, lambda d: d.update(objective="sigmoid"))
    with pytest.raises(PlanError, match="objective is 'sigmoid' but the labels have no regions"):
        Plan.load(plan_file)

    def version_1(data: dict) -> None:
        data.update(schema_version=1, objective=None)
        del data["objective"], data["regions_class_order"]

    _edit(plan_file, version_1)
    assert Plan.load(plan_file).scheme.objective == "softmax"  # what version 1 trained
    _edit(plan_file, lambda d: d["labels"].update(both=[1, 2], background=0) or d.update(regions_class_order=None))
    with pytest.raises(PlanError, match="schema_version 1 plans of region labels"):
        Plan.load(plan_file)
