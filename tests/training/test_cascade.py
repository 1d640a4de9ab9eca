"""The cascade's extra input in training: morphology and component removal on the one-hot previous-stage
segmentation, its augmentation pipeline, and the data loader that cuts it with the patches."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import ndimage

from nnseg.errors import NnsegError
from nnseg.labels import LabelScheme
from nnseg.planning import Plan
from nnseg.preprocessing.cascade import previous_stage_channels
from nnseg.training.augment.cascade import (
    BINARY_OPERATIONS,
    CascadeAugmentation,
    append_previous_stage,
    apply_binary_operations,
    ball,
    binary_operation,
    remove_random_components,
)
from nnseg.training.data import PatchSampler, previous_stage_files
from nnseg.workspace import Workspace

SCHEME = LabelScheme({"background": 0, "organ": 1, "lesion": 2})


def _cube(shape: tuple[int, ...], box: tuple[slice, ...]) -> torch.Tensor:
    mask = torch.zeros(shape, dtype=torch.bool)
    mask[box] = True
    return mask


def test_ball_is_the_voxels_within_the_radius() -> None:
    kernel = ball(2, 3)
    assert kernel.shape == (5, 5, 5) and int(kernel.sum()) == 33  # skimage.morphology.ball(2).sum()
    assert bool(kernel[2, 2, 0]) and not bool(kernel[0, 0, 0])
    assert ball(1, 2).sum() == 5


@pytest.mark.parametrize("operation", BINARY_OPERATIONS)
def test_binary_operations_match_scipy(operation: str) -> None:
    rng = np.random.default_rng(0)
    mask = ndimage.binary_opening(rng.random((20, 22, 24)) > 0.6)  # blobs of several sizes, some at the border
    mask[5:15, 6:16, 7:17] = True
    structure = ball(2, 3).numpy()
    # scipy's border: outside is background for dilation, and (border_value=1) foreground for erosion
    expected = {
        "dilation": lambda m: ndimage.binary_dilation(m, structure),
        "erosion": lambda m: ndimage.binary_erosion(m, structure, border_value=1),
        "closing": lambda m: ndimage.binary_erosion(ndimage.binary_dilation(m, structure), structure, border_value=1),
        "opening": lambda m: ndimage.binary_dilation(ndimage.binary_erosion(m, structure, border_value=1), structure),
    }[operation](mask)
    result = binary_operation(torch.from_numpy(mask)[None], operation, 2)[0].numpy()
    np.testing.assert_array_equal(result, expected)


def test_dilation_grows_one_class_and_takes_the_voxels_from_the_others() -> None:
    organ = _cube((1, 12, 12, 12), (0, slice(2, 10), slice(2, 10), slice(2, 10)))
    lesion = _cube((1, 12, 12, 12), (0, slice(5, 7), slice(5, 7), slice(5, 7)))
    organ &= ~lesion
    onehot = torch.stack([organ, lesion], 1).float()  # (1, 2, 12, 12, 12), one class per voxel
    apply = torch.tensor([[False, True]])
    operation = torch.tensor([[0, BINARY_OPERATIONS.index("dilation")]])
    out = apply_binary_operations(onehot.clone(), apply, operation, torch.tensor([[1, 1]]), torch.tensor([[0, 1]]))
    assert out[0, 1].sum() > lesion.sum()  # the lesion grew ...
    assert not bool(((out[0, 0] > 0) & (out[0, 1] > 0)).any())  # ... into the organ, which lost those voxels
    assert torch.equal(out[0, 0] + out[0, 1] > 0, (organ | out[0, 1].bool())[0])


def test_erosion_removes_thin_structures_and_keeps_the_other_class() -> None:
    onehot = torch.zeros(1, 2, 10, 10, 10)
    onehot[0, 0, 1:9, 1:9, 1:9] = 1
    onehot[0, 1, 4, :, :] = 1  # a one-voxel sheet
    onehot[0, 0, 4] = 0
    apply = torch.tensor([[False, True]])
    operation = torch.full((1, 2), BINARY_OPERATIONS.index("erosion"))
    out = apply_binary_operations(
        onehot.clone(), apply, operation, torch.ones(1, 2, dtype=torch.long), torch.tensor([[1, 0]])
    )
    assert out[0, 1].sum() == 0 and torch.equal(out[0, 0], onehot[0, 0])


def test_component_removal_removes_one_small_component_only() -> None:
    onehot = torch.zeros(1, 1, 20, 20, 20)
    onehot[0, 0, 1:3, 1:3, 1:3] = 1  # 8 voxels
    onehot[0, 0, 10:13, 10:13, 10:13] = 1  # 27 voxels
    onehot[0, 0, 15, 15, 15] = 1
    onehot[0, 0, 16, 16, 16] = 1  # diagonal neighbour: the same component (full connectivity)
    removed = remove_random_components(onehot.clone(), torch.tensor([[True]]), torch.tensor([[0.5]]))
    _, before = ndimage.label(onehot[0, 0].numpy(), ndimage.generate_binary_structure(3, 3))
    labels, after = ndimage.label(removed[0, 0].numpy(), ndimage.generate_binary_structure(3, 3))
    assert (before, after) == (3, 2)
    assert removed[0, 0].sum() == onehot[0, 0].sum() - 27  # the middle one of three, by label order
    untouched = remove_random_components(onehot.clone(), torch.tensor([[False]]), torch.tensor([[0.5]]))
    assert torch.equal(untouched, onehot)


def test_component_removal_spares_components_covering_more_than_the_limit() -> None:
    onehot = torch.zeros(1, 1, 10, 10, 10)
    onehot[0, 0, :5] = 1  # half the patch
    out = remove_random_components(onehot.clone(), torch.tensor([[True]]), torch.tensor([[0.0]]), max_fraction=0.15)
    assert torch.equal(out, onehot)


def test_cascade_augmentation_is_deterministic_and_keeps_one_hot() -> None:
    seg = torch.zeros(4, 16, 16, 16, dtype=torch.int16)
    seg[:, 3:12, 3:12, 3:12] = 1
    seg[:, 6:9, 6:9, 6:9] = 2
    seg[:, 13:15, 1:3, 1:3] = 2
    onehot = previous_stage_channels(seg, SCHEME, dim=1)
    assert onehot.shape == (4, 2, 16, 16, 16) and onehot.dtype == torch.float32
    augment = CascadeAugmentation(p_morphology=1.0, p_morphology_per_class=1.0, p_remove_component=1.0)
    params = augment.sample_params(4, 2, torch.Generator().manual_seed(3))
    first, second = augment.apply(onehot, params), augment.apply(onehot, params)
    assert torch.equal(first, second) and not torch.equal(first, onehot)
    assert set(first.unique().tolist()) <= {0.0, 1.0} and first.sum(1).max() <= 1  # still at most one class
    assert params.radius.min() >= 1 and params.radius.max() <= 8
    none = CascadeAugmentation(p_morphology=0.0, p_remove_component=0.0)
    assert torch.equal(none(onehot, torch.Generator().manual_seed(0)), onehot)
    with pytest.raises(ValueError, match="radius_range"):
        CascadeAugmentation(radius_range=(1.5, 3))


def test_append_previous_stage_moves_seg_channel_one_to_the_image() -> None:
    image = torch.randn(2, 1, 8, 8, 8)
    seg = torch.zeros(2, 2, 8, 8, 8, dtype=torch.int16)
    seg[:, 0, 2:5] = 1
    seg[:, 1, 4:6] = 2
    inputs, labels = append_previous_stage(image, seg, SCHEME, None, torch.Generator())
    assert inputs.shape == (2, 3, 8, 8, 8) and labels.shape == (2, 1, 8, 8, 8)
    assert torch.equal(inputs[:, :1], image) and torch.equal(labels, seg[:, :1])
    assert inputs[:, 1].sum() == 0 and torch.equal(inputs[:, 2].bool(), seg[:, 1] == 2)


def test_regions_give_one_channel_per_region() -> None:
    scheme = LabelScheme({"background": 0, "whole": (1, 2, 3), "core": (2, 3), "enhancing": 3}, (1, 2, 3))
    seg = torch.tensor([0, 1, 2, 3])
    channels = previous_stage_channels(seg, scheme)
    assert channels.tolist() == [[0, 1, 1, 1], [0, 0, 1, 1], [0, 0, 0, 1]]


def _with_previous_stage(work: Path, folds: dict[int, list[str]]) -> tuple[Path, dict]:
    """A lowres model folder whose folds hold the given cases' segmentations (the case's label map)."""
    plan = Plan.load(work / "plans.json")
    folder = work / "preprocessed" / plan.configuration("3d_fullres").data_identifier
    workspace = Workspace(work)
    for fold, cases in folds.items():
        paths = workspace.fold_paths("3d_lowres", fold)
        for case_id in cases:
            target = paths.next_stage_case("3d_cascade_fullres", case_id)
            target.parent.mkdir(parents=True, exist_ok=True)
            np.save(target, np.maximum(np.load(folder / f"{case_id}_seg.npy"), 0).astype(np.int16))
    return folder, {"workspace": workspace}


def test_sampler_cuts_the_previous_stage_with_the_patch(preprocessed_work: Path) -> None:
    folder, found = _with_previous_stage(preprocessed_work, {0: ["case_000"], 1: ["case_001"]})
    splits = [{"train": ["case_001"], "val": ["case_000"]}, {"train": ["case_000"], "val": ["case_001"]}]
    files = previous_stage_files(
        found["workspace"], "3d_lowres", "3d_cascade_fullres", ["case_000", "case_001"], splits
    )
    assert set(files) == {"case_000", "case_001"}
    sampler = PatchSampler(folder, ["case_000", "case_001"], (40, 12, 12), 3, seed=0, previous_stage=files)
    batch = sampler.next_batch()
    assert batch.previous is not None and batch.previous.shape == batch.seg.shape == (3, 1, 40, 12, 12)
    np.testing.assert_array_equal(batch.previous, batch.seg)  # the stored segmentation is the label map here
    assert PatchSampler(folder, ["case_000"], (8, 8, 8), 2, seed=0).next_batch().previous is None


def test_missing_or_stale_previous_stage_is_refused(preprocessed_work: Path) -> None:
    folder, found = _with_previous_stage(preprocessed_work, {0: ["case_000"]})
    splits = [{"train": ["case_001"], "val": ["case_000"]}, {"train": ["case_000"], "val": ["case_001"]}]
    with pytest.raises(NnsegError, match=r"missing for 1 case\(s\): case_001.*--config 3d_lowres --fold 1"):
        previous_stage_files(found["workspace"], "3d_lowres", "3d_cascade_fullres", ["case_000", "case_001"], splits)
    stale = found["workspace"].fold_paths("3d_lowres", 0).next_stage_case("3d_cascade_fullres", "case_000")
    np.save(stale, np.zeros((3, 3, 3), dtype=np.int16))
    with pytest.raises(NnsegError, match="another plan"):
        PatchSampler(folder, ["case_000"], (8, 8, 8), 2, previous_stage={"case_000": stale})
    shutil.rmtree(stale.parent)
    assert found["workspace"].fold_paths("3d_lowres", 0).next_stage_cases("3d_cascade_fullres") == {}
