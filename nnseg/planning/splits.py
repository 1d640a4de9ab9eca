"""Cross-validation splits: written once to ``splits.json``, user-editable, respected when present."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from nnseg.errors import NnsegError
from nnseg.schema import read_json, write_json_atomic

DEFAULT_FOLDS = 5
DEFAULT_SEED = 12345


def make_splits(
    case_ids: list[str], n_folds: int = DEFAULT_FOLDS, seed: int = DEFAULT_SEED
) -> list[dict[str, list[str]]]:
    """K-fold split of the sorted case ids with a seeded shuffle (the same folds as nnU-Net's KFold(5, 12345)).

    The first ``n % n_folds`` folds get one extra validation case.
    """
    ids = sorted(case_ids)
    if len(ids) < 2:
        raise NnsegError(f"cross-validation needs at least 2 cases, got {len(ids)}")
    n_folds = min(n_folds, len(ids))
    order = np.arange(len(ids))
    np.random.RandomState(seed).shuffle(order)
    sizes = np.full(n_folds, len(ids) // n_folds)
    sizes[: len(ids) % n_folds] += 1
    splits, start = [], 0
    for size in sizes:
        val = set(order[start : start + size].tolist())
        splits.append(
            {"train": [ids[i] for i in range(len(ids)) if i not in val], "val": [ids[i] for i in sorted(val)]}
        )
        start += size
    return splits


def load_or_create_splits(
    path: str | os.PathLike, case_ids: list[str], *, n_folds: int = DEFAULT_FOLDS, seed: int = DEFAULT_SEED
) -> list[dict[str, list[str]]]:
    """Read ``splits.json`` when it exists (validating it against the cases), else create and write it."""
    path = Path(path)
    if not path.is_file():
        splits = make_splits(case_ids, n_folds, seed)
        write_json_atomic(path, splits)
        return splits
    splits = read_json(path, "splits file")
    known = set(case_ids)
    if not isinstance(splits, list) or not splits:
        raise NnsegError(f'{path}: must be a list of {{"train": [...], "val": [...]}} folds')
    for index, fold in enumerate(splits):
        if not isinstance(fold, dict) or set(fold) != {"train", "val"}:
            raise NnsegError(f'{path}: fold {index} must be {{"train": [...], "val": [...]}}')
        unknown = sorted((set(fold["train"]) | set(fold["val"])) - known)
        if unknown:
            raise NnsegError(f"{path}: fold {index} names cases that are not preprocessed: {unknown[:5]}")
        if set(fold["train"]) & set(fold["val"]):
            raise NnsegError(f"{path}: fold {index} has cases in both train and val")
    return splits
