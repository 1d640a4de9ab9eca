"""What a run starts from: the fold's cases, the checkpoint it resumes; the pseudo-Dice counts of validation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from nnseg.distributed import DistributedContext
from nnseg.errors import NnsegError
from nnseg.planning.plan import Plan
from nnseg.training.run_setup import fold_cases
from nnseg.training.validation import pseudo_dice_counts
from nnseg.workspace import Workspace


def test_fold_cases_follow_splits_json(preprocessed_work: Path) -> None:
    workspace = Workspace(preprocessed_work)
    plan = Plan.load(workspace.plans)
    config = plan.configuration("3d_fullres")
    single = DistributedContext.from_launcher("cpu")
    cases = fold_cases(workspace, plan, config, "3d_fullres", 1, single)
    splits = json.loads(workspace.splits.read_text())  # made on first use
    assert cases.splits == splits
    assert (cases.train_ids, cases.val_ids) == (splits[1]["train"], splits[1]["val"])
    everything = fold_cases(workspace, plan, config, "3d_fullres", "all", single)
    assert everything.train_ids == everything.val_ids == sorted(splits[0]["train"] + splits[0]["val"])
    with pytest.raises(NnsegError, match=f"has {len(splits)} folds, fold 9 requested"):
        fold_cases(workspace, plan, config, "3d_fullres", 9, single)


def test_fold_cases_refuse_a_partly_preprocessed_cache(preprocessed_work: Path) -> None:
    workspace = Workspace(preprocessed_work)
    plan = Plan.load(workspace.plans)
    config = plan.configuration("3d_fullres")
    first = sorted(workspace.preprocessed(config.data_identifier).glob("*.json"))[0]
    first.unlink()
    with pytest.raises(NnsegError, match="cases are preprocessed; run `nnseg preprocess --work"):
        fold_cases(workspace, plan, config, "3d_fullres", 0, DistributedContext.from_launcher("cpu"))


def test_pseudo_dice_counts_skip_ignored_voxels_and_merge_region_values() -> None:
    target = torch.tensor([[0, 1, 1, 2, 9, 9]])
    predicted = torch.tensor([[1, 1, 0, 2, 1, 2]])
    counts = pseudo_dice_counts(predicted, target, [(1,), (1, 2)], ignore_value=9)
    # class (1,): tp 1, fp 1 (voxel 0), fn 1 (voxel 2); region (1, 2): tp 2, fp 1, fn 1; the ignored voxels 4-5 not
    assert counts.tolist() == [[1.0, 2.0], [1.0, 1.0], [1.0, 1.0]]
    counted = pseudo_dice_counts(predicted, target, [(1,)], ignore_value=None)
    assert counted[:, 0].tolist() == [1.0, 2.0, 1.0]
