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


def test_regions_reach_beyond_the_volume_by_half_the_border_as_nnunets_loader(
    preprocessed_work_template: Path,
) -> None:
    """Starts are uniform in [-border // 2, n + border // 2 + border % 2 - size]: every edge of the volume shows up
    at every position of the patch, not only a case centred in it."""
    folder = _folder(preprocessed_work_template)
    region, border = (8, 8, 8), (5, 6, 0)
    sampler = PatchSampler(folder, ["case_000"], region, 3, seed=0, border=border)
    case = sampler.cases[0]
    shape = case.seg.shape
    starts = np.array([sampler._start(case, False) for _ in range(3000)])
    lower = [-(b // 2) for b in border]
    upper = [n + b // 2 + b % 2 - s for n, b, s in zip(shape, border, region)]
    assert starts.min(0).tolist() == lower and starts.max(0).tolist() == upper
    forced = np.array([sampler._start(case, True) for _ in range(300)])
    assert (forced >= np.array(lower)).all()
    inside = PatchSampler(folder, ["case_000"], region, 3, seed=0)  # no border: regions stay inside
    starts = np.array([inside._start(inside.cases[0], False) for _ in range(300)])
    assert starts.min() >= 0 and (starts.max(0) <= np.array(shape) - np.array(region)).all()
    batch = sampler.next_batch()
    assert batch.image.shape == (3, 1, *region)


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
