"""Five-fold splits: seeded, complete, user-editable."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from nnseg.errors import NnsegError
from nnseg.planning.splits import load_or_create_splits, make_splits


def test_folds_partition_the_cases_like_a_seeded_kfold() -> None:
    ids = [f"case_{i:03d}" for i in range(12)]
    splits = make_splits(ids)
    assert len(splits) == 5
    vals = [v for fold in splits for v in fold["val"]]
    assert sorted(vals) == ids and [len(f["val"]) for f in splits] == [3, 3, 2, 2, 2]
    for fold in splits:
        assert sorted(fold["train"] + fold["val"]) == ids
    order = np.arange(12)
    np.random.RandomState(12345).shuffle(order)  # sklearn KFold(shuffle=True, random_state=12345)
    assert splits[0]["val"] == sorted(ids[i] for i in order[:3])
    assert make_splits(ids) == splits


def test_existing_splits_are_respected_and_checked(tmp_path: Path) -> None:
    path = tmp_path / "splits.json"
    ids = ["a", "b", "c", "d"]
    created = load_or_create_splits(path, ids)
    assert json.loads(path.read_text()) == created
    custom = [{"train": ["a", "b"], "val": ["c"]}]
    path.write_text(json.dumps(custom))
    assert load_or_create_splits(path, ids) == custom
    path.write_text(json.dumps([{"train": ["a", "zz"], "val": ["c"]}]))
    with pytest.raises(NnsegError, match="zz"):
        load_or_create_splits(path, ids)
    path.write_text(json.dumps([{"train": ["a", "c"], "val": ["c"]}]))
    with pytest.raises(NnsegError, match="both train and val"):
        load_or_create_splits(path, ids)
