"""Less work per case: CT air skipping, --tta full|fast|none, interpolated resampling back (issue 13, item 4)."""

from __future__ import annotations

import argparse
import itertools
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from nnseg.checkpoint import Checkpoint
from nnseg.cli import build_parser
from nnseg.inference.config import PredictConfig
from nnseg.inference.predictor import Predictor
from nnseg.inference.skipping import air_body_mask, ct_body_threshold, mirror_axes_for
from nnseg.inference.sliding_window import window_starts
from nnseg.io import Geometry, read_volume, write_volume
from nnseg.networks import build_network
from nnseg.options import OptionError, config_from_args
from nnseg.planning import Plan
from nnseg.planning.plan import ChannelNormalization
from nnseg.preprocessing.preprocess import preprocess_case
from nnseg.preprocessing.resample import resampled_argmax
from nnseg.preprocessing.restore import _interpolated_argmax, probabilities_to_labels
from nnseg.synth import SynthConfig, generate_dataset

CT = ChannelNormalization("CT", "ct", False, clip_low=24.0, clip_high=167.0, mean=78.0, std=26.0)


@pytest.fixture(scope="module")
def wide_ct(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A CT phantom with air all around the body (padded) and a skin marker in a far corner, so that the body's
    box (preprocessing's crop) still holds windows of air; and its label map."""
    raw = tmp_path_factory.mktemp("wide") / "raw"
    generate_dataset(raw, SynthConfig(num_cases=1, shape=(20, 24, 24), seed=7, oblique=False), show_progress=False)
    image = read_volume(next((raw / "imagesTr").glob("*_0000.nii.gz")))
    label = read_volume(next((raw / "labelsTr").glob("*.nii.gz")))
    pad = ((4, 4), (40, 40), (40, 40))
    geometry = Geometry(affine=image.geometry.affine, shape=np.pad(image.array, pad).shape)
    out = raw.parent
    wide = np.pad(image.array, pad, constant_values=-1000)
    wide[-3:, -3:, -3:] = 0
    return (
        write_volume(out / "wide_0000.nii.gz", wide, geometry),
        write_volume(out / "wide_label.nii.gz", np.pad(label.array, pad), geometry, is_label=True),
    )


@pytest.fixture(scope="module")
def checkpoint(preprocessed_work_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-initialised model of the tiny cpu plan (counts of windows don't depend on the weights)."""
    plan = Plan.load(preprocessed_work_template / "plans.json")
    network = build_network(plan.configuration("3d_fullres").network, 1, plan.num_classes)
    folder = tmp_path_factory.mktemp("model")
    return Checkpoint.for_network(plan, "3d_fullres", network).save(folder / "fold_0" / "checkpoint_final.pt")


def _counting(predictor: Predictor) -> list[int]:
    """Replace the network by a cheap stand-in; the returned list collects the batch size of every forward pass."""
    calls: list[int] = []
    classes = predictor.plan.num_classes

    def counted(batch: torch.Tensor) -> torch.Tensor:
        calls.append(batch.shape[0])
        return torch.zeros((batch.shape[0], classes, *batch.shape[2:]))

    predictor.runners = [counted]
    return calls


def test_air_mask_covers_every_foreground_voxel(checkpoint: Path, wide_ct: tuple[Path, Path]) -> None:
    """On the preprocessed grid: every labelled voxel is body, so no window holding one is skipped."""
    plan = Checkpoint.load(checkpoint).plan
    config = plan.configuration("3d_fullres")
    image, label = read_volume(wide_ct[0]), read_volume(wide_ct[1])
    case = preprocess_case(image.array[None].astype(np.float32), image.geometry, label.array, plan, config, case_id="w")
    assert ct_body_threshold(config.normalization[0]) is not None
    body = air_body_mask(case.data, config.normalization, case.properties.spacing)
    assert body is not None and case.seg is not None
    foreground = case.seg > 0
    assert foreground.any() and body[foreground].all()
    assert not body.all(), "the air around the body must be skippable"
    patch = (8, 8, 8)
    for start in itertools.product(*window_starts(body.shape, patch, 0.5)):
        window = tuple(slice(s, s + p) for s, p in zip(start, patch))
        if foreground[window].any():
            assert body[window].any()


def test_non_ct_channels_are_never_skipped() -> None:
    data = np.full((2, 10, 10, 10), -5.0, dtype=np.float32)
    zscore = ChannelNormalization("T1", "zscore", True)
    assert air_body_mask(data[:1], [zscore], (1.0, 1.0, 1.0)) is None
    assert air_body_mask(data, [CT, zscore], (1.0, 1.0, 1.0)) is None
    assert air_body_mask(data[:1], [CT], (1.0, 1.0, 1.0)) is not None
    # an upper clip below the air threshold can't tell air from body: nothing skipped
    assert ct_body_threshold(replace(CT, clip_low=-1100.0, clip_high=-600.0)) is None


def test_lungs_inside_the_body_are_kept() -> None:
    """Air enclosed by the body (lungs, bowel gas) is filled, slice by slice, even when joined to the outside."""
    normalized_air, tissue = (-1000 - CT.mean) / CT.std, (100 - CT.mean) / CT.std
    data = np.full((1, 30, 30, 30), normalized_air, dtype=np.float32)
    data[0, 5:25, 5:25, 5:25] = tissue
    data[0, 10:20, 10:20, 10:20] = normalized_air  # a lung
    data[0, 14:16, 14:16, 0:20] = normalized_air  # its airway, out to the edge
    body = air_body_mask(data, [CT], (1.0, 1.0, 1.0), margin_mm=0.0)
    assert body is not None and body[10:20, 10:20, 10:20].all()
    assert not body[:3].any() and not body[14:16, 14:16, :5].any()


def test_skipping_runs_fewer_windows_and_keeps_non_ct_models_whole(
    checkpoint: Path, wide_ct: tuple[Path, Path]
) -> None:
    runs = {}
    for skip in (False, True):
        predictor = Predictor.from_checkpoints([checkpoint], device="cpu", tta="none", skip_air=skip, window_batch=1)
        calls = _counting(predictor)
        predictor.predict(wide_ct[0])
        runs[skip] = (len(calls), predictor.work.run, predictor.work.windows)
    assert runs[True][0] == runs[True][1] < runs[False][0] == runs[False][2] == runs[True][2]
    predictor = Predictor.from_checkpoints([checkpoint], device="cpu", tta="none", skip_air=True, window_batch=1)
    zscore = ChannelNormalization("CT", "zscore", False)
    predictor.config_plan = replace(predictor.config_plan, normalization=(zscore,))
    calls = _counting(predictor)
    predictor.predict(wide_ct[0])
    assert len(calls) == predictor.work.windows == predictor.work.run


@pytest.mark.parametrize("tta, per_window", [("none", 1), ("fast", 4), ("full", 8)])
def test_tta_forward_passes_per_window(checkpoint: Path, wide_ct: tuple[Path, Path], tta: str, per_window: int) -> None:
    predictor = Predictor.from_checkpoints([checkpoint], device="cpu", tta=tta, window_batch=1)
    calls = _counting(predictor)
    predictor.predict(wide_ct[0])
    assert len(calls) == per_window * predictor.work.run == predictor.work.inputs


def test_tta_axes_by_dimension() -> None:
    assert mirror_axes_for("full", 3) == (0, 1, 2) and mirror_axes_for("full", 2) == (0, 1)
    assert mirror_axes_for("fast", 3) == (1, 2) and mirror_axes_for("fast", 2) == (1,)
    assert mirror_axes_for("none", 3) == ()
    with pytest.raises(OptionError, match="tta"):
        mirror_axes_for("some", 3)


def _predict_parser() -> argparse.ArgumentParser:
    action = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices["predict"]


def _config(*extra: str) -> PredictConfig:
    return config_from_args(PredictConfig, _predict_parser().parse_args(["-i", "x", "-o", "y", "-m", "z", *extra]))


def test_cli_options_and_no_tta_alias(checkpoint: Path) -> None:
    assert _config().tta_mode == "full" and _config("--tta", "fast").tta_mode == "fast"
    assert _config("--no-tta").tta_mode == "none" and _config("--tta", "none").tta_mode == "none"
    assert _config().skip_air is False and _config("--skip-air").skip_air is True  # a flag, as every switch
    with pytest.raises(OptionError, match="--no-tta"):
        _config("--no-tta", "--tta", "fast")
    assert Predictor.from_checkpoints([checkpoint], device="cpu", mirror=False).mirror_axes == ()


@pytest.mark.parametrize("option, value", [("--tta", "half"), ("--step-size", "2")])
def test_cli_bad_values_exit_2(option: str, value: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        _predict_parser().parse_args(["-i", "x", "-o", "y", "-m", "z", option, value])
    assert exit_info.value.code == 2
    assert option in capsys.readouterr().err


def test_interpolated_resampling_matches_the_slab_path() -> None:
    """Same labels as the slab-wise path and as a whole-volume trilinear F.interpolate (bit for bit)."""
    torch.manual_seed(0)
    probabilities = torch.softmax(3 * torch.randn(3, 13, 17, 19), 0)
    for new_shape in [(20, 30, 25), (9, 17, 40), (13, 17, 19)]:
        fast = _interpolated_argmax(probabilities, new_shape, torch.uint8)
        slabs = resampled_argmax([(c, probabilities[c]) for c in range(3)], new_shape, axis=None, dtype=torch.uint8)
        whole = F.interpolate(probabilities[None], size=new_shape, mode="trilinear", align_corners=False)[0]
        assert torch.equal(fast, slabs)
        assert torch.equal(fast, whole.argmax(0).to(torch.uint8))


def test_probabilities_to_labels_methods_agree(checkpoint: Path, wide_ct: tuple[Path, Path]) -> None:
    plan = Checkpoint.load(checkpoint).plan
    config = plan.configuration("3d_fullres")
    image = read_volume(wide_ct[0])
    case = preprocess_case(image.array[None].astype(np.float32), image.geometry, None, plan, config, case_id="w")
    probabilities = torch.softmax(torch.randn(plan.num_classes, *case.data.shape[1:]), 0)
    labels = {
        method: probabilities_to_labels(probabilities, case.properties, plan, config.resampling, method=method)
        for method in ("slabs", "interpolate", "auto")
    }
    assert labels["slabs"].shape == image.array.shape
    np.testing.assert_array_equal(labels["slabs"], labels["interpolate"])
    np.testing.assert_array_equal(labels["slabs"], labels["auto"])
    with pytest.raises(ValueError, match="method"):
        probabilities_to_labels(probabilities, case.properties, plan, config.resampling, method="scipy")
