"""transfer_weights: copy, adapt the input channels, re-initialise or keep head rows, refuse what does not fit;
the trainer's hook transfers on a fresh start only and logs the source's SHA-256."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from nnseg.checkpoint import Checkpoint, CheckpointError
from nnseg.networks import available_architectures, build_network
from nnseg.planning import Plan, load_preset, make_plan
from nnseg.training.config import TrainConfig
from nnseg.training.loop import Trainer
from nnseg.training.pretrained import adapt_input_channels, transfer_weights
from nnseg.training.run_parameters import run_parameters
from tests.planning.test_planner import _fingerprint

LABELS = {"background": 0, "organ": 1, "lesion": 2}


def _plan(architecture: str = "unet", channels: tuple[str, ...] = ("CT",), labels=None) -> Plan:
    fingerprint = _fingerprint([[1.0, 1.0, 1.0]] * 3, [[24, 28, 28]] * 3, channels=channels)
    preset = replace(load_preset("cpu", architecture=architecture), base_features=4, configurations=("3d_fullres",))
    return make_plan(fingerprint, labels or LABELS, preset, nnseg_version="t")


def _source(plan: Plan, seed: int = 0) -> tuple[torch.nn.Module, Checkpoint]:
    torch.manual_seed(seed)
    network = build_network(plan.configuration("3d_fullres").network, len(plan.channel_names), plan.num_classes)
    return network, Checkpoint.for_network(plan, "3d_fullres", network)


def _new(plan: Plan, channels: int, classes: int, seed: int = 1) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_network(plan.configuration("3d_fullres").network, channels, classes)


def _outputs_equal(a: torch.nn.Module, xa: torch.Tensor, b: torch.nn.Module, xb: torch.Tensor) -> bool:
    with torch.no_grad():
        return torch.allclose(a.eval()(xa), b.eval()(xb), atol=1e-5)


def test_same_channels_and_classes_copies_everything() -> None:
    plan = _plan()
    source, checkpoint = _source(plan)
    network = _new(plan, 1, 3)
    report = transfer_weights(network, checkpoint, in_channels=1, num_classes=3, class_names=list(LABELS))
    for key, value in source.state_dict().items():
        torch.testing.assert_close(network.state_dict()[key], value, atol=0, rtol=0)
    assert report.head_status == "copied" and not report.input_layers and report.reinitialised_tensors == 0
    assert report.copied_params + sum(h.weight.numel() + h.bias.numel() for h in network.segmentation_heads()) == sum(
        p.numel() for p in network.parameters()
    )


@pytest.mark.parametrize("source_channels, channels", [(1, 2), (1, 3), (2, 1)])
def test_input_channels_are_adapted_so_one_image_on_every_channel_gives_the_same_output(
    source_channels: int, channels: int
) -> None:
    names = ("T1", "T2", "FLAIR")
    source_plan = _plan(channels=names[:source_channels])
    source, checkpoint = _source(source_plan)
    network = _new(source_plan, channels, 3)
    report = transfer_weights(network, checkpoint, in_channels=channels, num_classes=3, class_names=list(LABELS))
    assert report.input_layers == ("input_block.conv1.conv",)
    assert report.channels == (source_channels, channels)
    rule = "cyclic repeat" if channels > source_channels else "channel sum"
    assert rule in report.input_rule and f"adapted {source_channels} -> {channels} channels ({rule}" in report.table()
    assert ("zero-sum fresh kernels" in report.input_rule) == (channels > 1)  # a single channel has no copies
    image = torch.randn(1, 1, 24, 28, 28)
    assert _outputs_equal(
        source, image.repeat(1, source_channels, 1, 1, 1), network, image.repeat(1, channels, 1, 1, 1)
    )


def test_adaptation_rules() -> None:
    weight = torch.arange(12.0).reshape(2, 3, 2)
    two_to_five = adapt_input_channels(weight[:, :2], 5)
    torch.testing.assert_close(two_to_five[:, 2], weight[:, 0] / 3)  # cyclic: channel 2 <- source channel 0 (3 copies)
    torch.testing.assert_close(two_to_five[:, 3], weight[:, 1] / 2)  # channel 3 <- source channel 1 (2 copies)
    torch.testing.assert_close(two_to_five.sum(1), weight[:, :2].sum(1))  # summed response unchanged
    three_to_two = adapt_input_channels(weight, 2)
    torch.testing.assert_close(three_to_two[:, 0], weight.sum(1) / 2)
    torch.testing.assert_close(three_to_two.sum(1), weight.sum(1))


def test_copies_of_one_kernel_are_told_apart_by_zero_sum_fresh_kernels() -> None:
    torch.manual_seed(0)
    weight = torch.randn(4, 2, 3, 3, 3)
    fresh = torch.randn(4, 3, 3, 3, 3) * 0.1
    two_to_three = adapt_input_channels(weight, 3, fresh=fresh)
    torch.testing.assert_close(two_to_three[:, 1], weight[:, 1])  # one copy: the source kernel unchanged
    torch.testing.assert_close(two_to_three[:, [0, 2]].sum(1), weight[:, 0])  # copies still sum to the source
    difference = two_to_three[:, 0] - two_to_three[:, 2]  # and differ by the fresh kernels' difference
    torch.testing.assert_close(difference, fresh[:, 0] - fresh[:, 2])
    fewer = adapt_input_channels(weight, 1, fresh=fresh[:, :1])  # a single channel: nothing to tell apart
    torch.testing.assert_close(fewer[:, 0], weight.sum(1))
    with pytest.raises(ValueError, match="fresh kernels"):
        adapt_input_channels(weight, 3, fresh=fresh[:, :2])


def test_new_classes_keep_the_rows_of_label_names_in_both_and_start_the_others_fresh() -> None:
    plan = _plan()
    source, checkpoint = _source(plan)
    network = _new(plan, 1, 4)
    fresh = {k: v.clone() for k, v in network.state_dict().items()}
    names = ["background", "lesion", "cyst", "organ"]  # reordered, one new
    report = transfer_weights(network, checkpoint, in_channels=1, num_classes=4, class_names=names)
    assert report.head_status == "partly copied" and report.kept_classes == ("background", "lesion", "organ")
    assert report.new_classes == ("cyst",)
    head = "output_block.conv.conv"
    for name in ("weight", "bias"):
        new, old = network.state_dict()[f"{head}.{name}"], source.state_dict()[f"{head}.{name}"]
        torch.testing.assert_close(new[[0, 1, 3]], old[[0, 2, 1]])  # rows moved to their names' positions
        torch.testing.assert_close(new[2], fresh[f"{head}.{name}"][2])  # cyst: as initialised
    assert "3 -> 4 classes: rows of background, lesion, organ copied" in report.table()


def test_without_label_names_other_classes_re_initialise_the_heads() -> None:
    plan = _plan()
    _, checkpoint = _source(plan)
    network = _new(plan, 2, 4)
    fresh = {k: v.clone() for k, v in network.state_dict().items()}
    report = transfer_weights(network, checkpoint, in_channels=2, num_classes=4)
    assert report.head_status == "re-initialised" and "re-initialised (3 -> 4 classes)" in report.table()
    for name in ("weight", "bias"):
        key = f"output_block.conv.conv.{name}"
        torch.testing.assert_close(network.state_dict()[key], fresh[key], atol=0, rtol=0)


def test_another_architecture_or_topology_is_refused_without_touching_the_network(tmp_path: Path) -> None:
    plan = _plan()
    path = _source(plan)[1].save(tmp_path / "source.pt")
    resenc = _plan("resenc_unet")
    network = _new(resenc, 1, 3)
    before = {k: v.clone() for k, v in network.state_dict().items()}
    with pytest.raises(CheckpointError, match="holds a unet.*--transfer-plan") as error:
        transfer_weights(network, path, in_channels=1, num_classes=3)
    assert str(path) in str(error.value)
    config = plan.configuration("3d_fullres")
    wider = replace(config.network, features_per_stage=tuple(2 * f for f in config.network.features_per_stage))
    wide_network = build_network(wider, 1, 3)
    before = {k: v.clone() for k, v in wide_network.state_dict().items()}
    with pytest.raises(CheckpointError, match="does not fit the one planned here.*--transfer-plan"):
        transfer_weights(wide_network, path, in_channels=1, num_classes=3)
    for key, value in wide_network.state_dict().items():  # never a partial load
        torch.testing.assert_close(value, before[key], atol=0, rtol=0)


def test_report_has_the_file_hash_and_a_short_table(tmp_path: Path) -> None:
    plan = _plan()
    _, checkpoint = _source(plan)
    path = checkpoint.save(tmp_path / "source.pt")
    report = transfer_weights(_new(plan, 2, 4), path, in_channels=2, num_classes=4, class_names=[*LABELS, "cyst"])
    assert report.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    table = report.table()
    assert len(table.splitlines()) <= 7 and report.sha256 in table and str(path) in table
    assert "encoder/decoder" in table and "M params copied" in table
    params = report.as_params()
    assert params["sha256"] == report.sha256 and params["checkpoint"] == str(path)
    in_memory = transfer_weights(_new(plan, 1, 3), checkpoint, in_channels=1, num_classes=3)
    assert in_memory.source == "<in-memory checkpoint>" and len(in_memory.sha256) == 64
    with pytest.raises(CheckpointError, match="not found"):
        transfer_weights(_new(plan, 1, 3), tmp_path / "missing.pt", in_channels=1, num_classes=3)


def _config(**overrides) -> TrainConfig:
    settings = dict(
        fold=0,
        epochs=1,
        iters_per_epoch=1,
        val_iters=1,
        device="cpu",
        loader_threads=1,
        tracking=False,
        final_validation=False,
    )
    settings.update(overrides)
    return TrainConfig(**settings)


def test_trainer_transfers_on_a_fresh_start_only(
    preprocessed_work: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plan = Plan.load(preprocessed_work / "plans.json")
    network = build_network(plan.configuration("3d_fullres").network, 1, plan.num_classes)
    path = Checkpoint.for_network(plan, "3d_fullres", network).save(tmp_path / "source.pt")
    trainer = Trainer(preprocessed_work, _config(pretrained=str(path)), show_progress=False)
    assert trainer.pretrained is not None and "pretrained weights:" in capsys.readouterr().out
    key = "input_block.conv1.conv.weight"
    torch.testing.assert_close(trainer.network.state_dict()[key], network.state_dict()[key])
    parameters = run_parameters(trainer.record, trainer.recipe, trainer.planned_epochs, pretrained=trainer.pretrained)
    assert parameters["pretrained"]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert parameters["trainer"]["pretrained"] == str(path)
    trainer.run()

    latest = Checkpoint.load(preprocessed_work / "models" / "3d_fullres" / "fold_0" / "checkpoint_latest.pt")
    resumed = Trainer(preprocessed_work, _config(epochs=2, pretrained=str(path)), show_progress=False)
    assert resumed.pretrained is None and "not applied again" in capsys.readouterr().out
    assert "pretrained" not in run_parameters(
        resumed.record, resumed.recipe, resumed.planned_epochs, pretrained=resumed.pretrained
    )
    for name, value in latest.network_state.items():  # the trained weights, not the source's again
        torch.testing.assert_close(resumed.network.state_dict()[name], value, atol=0, rtol=0)
    assert not torch.equal(latest.network_state[key], network.state_dict()[key])


@pytest.mark.parametrize("architecture", available_architectures())
def test_every_architecture_fine_tunes_from_1_to_2_channels_and_3_to_4_classes(architecture: str) -> None:
    plan = _plan(architecture)
    _, checkpoint = _source(plan)
    network = _new(plan, 2, 4)
    report = transfer_weights(network, checkpoint, in_channels=2, num_classes=4, class_names=[*LABELS, "cyst"])
    assert report.copied_tensors > 0 and len(report.input_layers) == 1 and report.head_status == "partly copied"
    with torch.no_grad():
        assert network.eval()(torch.randn(1, 2, 24, 28, 28)).shape[1] == 4
