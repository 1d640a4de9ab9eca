"""Patch sampling from the memory-mapped cache: sizes, padding, foreground oversampling, 2D slices."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from nnseg.planning import Plan
from nnseg.training.data import PatchSampler, Prefetcher


def _folder(work: Path, config: str = "3d_fullres") -> Path:
    plan = Plan.load(work / "plans.json")
    return work / "preprocessed" / plan.configuration(config).data_identifier


def test_batches_have_the_region_size_and_padding(preprocessed_work_template: Path) -> None:
    folder = _folder(preprocessed_work_template)
    region = (40, 40, 40)  # larger than the tiny cases: padded with zeros / background
    sampler = PatchSampler(folder, ["case_000", "case_001"], region, 3, seed=0)
    batch = sampler.next_batch()
    assert batch.image.shape == (3, 1, *region) and batch.image.dtype == np.float32
    assert batch.seg.shape == (3, 1, *region) and batch.seg.min() >= 0  # -1 (outside the body) -> background
    assert isinstance(sampler.cases[0].data, np.memmap)


def test_a_third_of_each_batch_is_forced_to_contain_foreground(preprocessed_work_template: Path) -> None:
    folder = _folder(preprocessed_work_template)
    sampler = PatchSampler(folder, ["case_000", "case_001", "case_002"], (8, 8, 8), 3, seed=1)
    assert sampler.forced == 1
    for _ in range(30):
        batch = sampler.next_batch()
        assert (batch.seg[-1] > 0).any()  # the last sample is forced


def test_2d_sampling_cuts_slices(preprocessed_work_template: Path) -> None:
    folder = _folder(preprocessed_work_template, "2d")
    sampler = PatchSampler(folder, ["case_000"], (16, 16), 2, dimensions=2, seed=0)
    batch = sampler.next_batch()
    assert batch.image.shape == (2, 1, 16, 16) and batch.seg.shape == (2, 1, 16, 16)


def test_prefetcher_yields_batches_and_stops(preprocessed_work_template: Path) -> None:
    sampler = PatchSampler(_folder(preprocessed_work_template), ["case_000"], (8, 8, 8), 2, seed=0)
    loader = Prefetcher(sampler, threads=2)
    shapes = {next(loader).image.shape for _ in range(5)}
    loader.close()
    assert shapes == {(2, 1, 8, 8, 8)}
