"""Predictor: label maps come back in the input's exact geometry (oblique, LPS, anisotropic)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from nnseg.checkpoint import Checkpoint
from nnseg.errors import NnsegError
from nnseg.inference.predictor import Predictor
from nnseg.io import Geometry, read_volume, write_volume
from nnseg.networks import build_network
from nnseg.planning import Plan
from tests.io.test_images import GEOMETRIES


@pytest.fixture()
def checkpoint(preprocessed_work_template: Path, tmp_path: Path) -> Path:
    """A random-initialised model of the tiny plan (the geometry does not depend on the weights)."""
    plan = Plan.load(preprocessed_work_template / "plans.json")
    network = build_network(plan.configuration("3d_fullres").network, 1, plan.num_classes)
    return Checkpoint.for_network(plan, "3d_fullres", network).save(tmp_path / "fold_0" / "checkpoint_final.pt")


@pytest.mark.parametrize("name", list(GEOMETRIES))
@pytest.mark.parametrize("suffix", [".nii.gz", ".mha"])
def test_prediction_has_the_input_geometry(checkpoint: Path, tmp_path: Path, name: str, suffix: str) -> None:
    direction, zooms = GEOMETRIES[name]
    affine = np.eye(4)
    affine[:3, :3] = direction @ np.diag(zooms)
    affine[:3, 3] = [10.5, -20.25, 33.0]
    shape = (14, 22, 19)
    geometry = Geometry(affine=affine, shape=shape)
    image = np.random.default_rng(0).normal(0, 100, shape).astype(np.float32)
    source = write_volume(tmp_path / f"img_0000{suffix}", image, geometry)
    predictor = Predictor.from_checkpoints(checkpoint.parent.parent, device="cpu", mirror=False)
    out = tmp_path / f"pred{suffix}"
    labels = predictor.predict(source, out)
    written = read_volume(out)
    original = read_volume(source)
    assert labels.shape == shape and written.array.shape == shape
    np.testing.assert_allclose(written.geometry.affine, original.geometry.affine, atol=1e-5)
    assert np.issubdtype(written.array.dtype, np.integer)
    assert set(np.unique(written.array)) <= {0, 1, 2}


def test_wrong_channel_count_is_refused(checkpoint: Path, tmp_path: Path) -> None:
    geometry = Geometry(affine=np.eye(4), shape=(8, 8, 8))
    a = write_volume(tmp_path / "a_0000.nii.gz", np.zeros((8, 8, 8), np.float32), geometry)
    b = write_volume(tmp_path / "a_0001.nii.gz", np.zeros((8, 8, 8), np.float32), geometry)
    predictor = Predictor.from_checkpoints([checkpoint], device="cpu")
    with pytest.raises(NnsegError, match="2 channel\\(s\\) given, the model expects 1"):
        predictor.predict([a, b])


def test_weights_that_do_not_fit_the_network_name_the_file(checkpoint: Path) -> None:
    """A checkpoint whose weights another nnseg built differently: a clear error, never a traceback."""
    saved = Checkpoint.load(checkpoint)
    state = dict(saved.network_state)
    key = next(k for k, v in state.items() if v.ndim == 5)
    state[key] = state[key][..., :1]  # e.g. a (3, 3, 3) kernel where this nnseg builds (3, 3, 1)
    from dataclasses import replace

    replace(saved, network_state=state).save(checkpoint)
    with pytest.raises(NnsegError, match=r"checkpoint 1 of 1: the weights do not fit .* retrain, or predict with"):
        Predictor.from_checkpoints([checkpoint], device="cpu")


def test_pruning_needs_a_unetpp_with_deep_supervision_heads(preprocessed_work_template: Path) -> None:
    from dataclasses import replace

    from nnseg.planning import load_preset, make_plan
    from tests.planning.test_planner import _fingerprint

    fingerprint = _fingerprint([[1.0, 1.0, 1.0]] * 3, [[40, 40, 40]] * 3)
    preset = replace(load_preset("cpu", architecture="unetpp"), base_features=4, configurations=("3d_fullres",))
    plan = make_plan(fingerprint, {"background": 0, "a": 1}, preset, nnseg_version="t")
    network_plan = plan.configuration("3d_fullres").network
    with_heads = build_network(network_plan, 1, 2, deep_supervision=True).state_dict()
    without = build_network(network_plan, 1, 2, deep_supervision=False).state_dict()
    pruned = Predictor(plan, "3d_fullres", [with_heads], device="cpu", prune_level=1)
    assert pruned.networks[0].prune_level == 1
    with pytest.raises(NnsegError, match="--prune needs a UNet.. trained with deep supervision"):
        Predictor(plan, "3d_fullres", [without], device="cpu", deep_supervision_heads=False, prune_level=1)
    unet_plan = Plan.load(preprocessed_work_template / "plans.json")
    unet_state = build_network(unet_plan.configuration("3d_fullres").network, 1, unet_plan.num_classes).state_dict()
    with pytest.raises(NnsegError, match="--prune applies to unetpp models; this model is a unet"):
        Predictor(unet_plan, "3d_fullres", [unet_state], device="cpu", prune_level=1)
