"""Cases split over processes: --num-parts/--part-id and torchrun (2 gloo processes) give the single run's files."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from nnseg.atomic import remove_stale_temporaries
from nnseg.cli import main
from nnseg.options import OptionError
from nnseg.sharding import Shard
from tests.helpers import tree_digest


def test_parts_are_disjoint_cover_everything_and_balance_bytes() -> None:
    items = [f"case_{i:02d}" for i in range(11)]
    sizes = {item: (100 if item == "case_03" else 10) for item in items}
    parts = [Shard(index, 3).select(items, size=sizes.__getitem__) for index in range(3)]
    assert sorted(sum(parts, [])) == items  # each case exactly once
    assert all(part == sorted(part) for part in parts)  # the caller's order is kept
    loads = [sum(sizes[i] for i in part) for part in parts]
    assert "case_03" in parts[0] and parts[0] == ["case_03"]  # the big case has a part to itself
    assert max(loads[1:]) - min(loads[1:]) <= 10
    assert parts == [Shard(index, 3).select(items, size=sizes.__getitem__) for index in range(3)]  # deterministic


def test_num_parts_and_ranks_combine() -> None:
    assert Shard.resolve(None, None) == Shard(0, 1)
    assert Shard.resolve(4, 2) == Shard(2, 4)
    assert Shard.resolve(4, 2, rank=1, world_size=2) == Shard(5, 8)
    assert Shard.resolve(None, None, rank=1, world_size=2) == Shard(1, 2)
    with pytest.raises(OptionError, match="go together"):
        Shard.resolve(4, None)
    with pytest.raises(OptionError, match="--part-id must be in 0..3 for --num-parts 4, got 4"):
        Shard.resolve(4, 4)


def test_bad_part_options_exit_2(trained_work: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    images = Path(json.loads((trained_work / "plans.json").read_text())["dataset_root"]) / "imagesTr"
    code = main(["predict", "-i", str(images), "-o", str(tmp_path / "o"), "-m", str(trained_work), "--part-id", "1"])
    assert code == 2 and "--num-parts and --part-id go together" in capsys.readouterr().err
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_a_part_removes_only_its_own_stale_temporaries(tmp_path: Path) -> None:
    for name in ("a.nii.gz", "b.nii.gz"):
        (tmp_path / f".{name}.999999.tmp.nii.gz").write_text("half")  # pid 999999: gone
    assert remove_stale_temporaries(tmp_path, targets={"a.nii.gz"}) == 1
    assert [p.name for p in tmp_path.iterdir()] == [".b.nii.gz.999999.tmp.nii.gz"]


def _images(work: Path) -> Path:
    return Path(json.loads((work / "plans.json").read_text())["dataset_root"]) / "imagesTr"


def _predict(
    work: Path, out: Path, *extra: str, torchrun: bool = False, one_thread: bool = False
) -> subprocess.CompletedProcess:
    launcher = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"] if torchrun else []
    command = [sys.executable, *launcher, "-m", "nnseg", "predict", "-i", str(_images(work)), "-o", str(out)]
    command += ["-m", str(work), "--device", "cpu", "--save-probabilities", *extra]
    # torchrun gives each rank one intra-op thread; float sums depend on the thread count, so the reference
    # for a torchrun run is a single process with one thread as well (label maps agree either way)
    env = {**os.environ, "OMP_NUM_THREADS": "1"} if one_thread else None
    return subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)


def test_sharded_prediction_equals_the_single_run_byte_for_byte(trained_work: Path, tmp_path: Path) -> None:
    single = _predict(trained_work, tmp_path / "single")
    assert single.returncode == 0, single.stderr[-2000:]
    for part in ("0", "1", "2"):
        done = _predict(trained_work, tmp_path / "parts", "--num-parts", "3", "--part-id", part)
        assert done.returncode == 0, done.stderr[-2000:]
        assert "(part" in done.stdout
    ranks = _predict(trained_work, tmp_path / "ranks", torchrun=True)
    assert ranks.returncode == 0, ranks.stderr[-3000:]
    single_thread = _predict(trained_work, tmp_path / "single_thread", one_thread=True)
    assert single_thread.returncode == 0, single_thread.stderr[-2000:]
    assert "predicted 6 case(s)" in ranks.stdout and "by 2 processes" in ranks.stdout  # the summary of rank 0
    assert ranks.stdout.count("predicted ") == 1
    assert tree_digest(tmp_path / "parts") == tree_digest(tmp_path / "single")
    assert tree_digest(tmp_path / "ranks") == tree_digest(tmp_path / "single_thread")
    labels = {name: digest for name, digest in tree_digest(tmp_path / "ranks").items() if name.endswith(".nii.gz")}
    assert labels == {n: d for n, d in tree_digest(tmp_path / "single").items() if n.endswith(".nii.gz")}
    again = _predict(trained_work, tmp_path / "ranks", torchrun=True)  # a rerun skips every finished case
    assert again.returncode == 0 and "predicted 0 case(s)" in again.stdout and "skipped 6" in again.stdout


def test_sharded_preprocessing_equals_the_single_run(preprocessed_work_template: Path, tmp_path: Path) -> None:
    single, ranks = tmp_path / "single", tmp_path / "ranks"
    for work in (single, ranks):
        shutil.copytree(preprocessed_work_template, work, ignore=shutil.ignore_patterns("preprocessed"))
    assert main(["preprocess", "--work", str(single), "--config", "3d_fullres", "--workers", "1"]) == 0
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    command += ["-m", "nnseg", "preprocess", "--work", str(ranks), "--config", "3d_fullres", "--workers", "1"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("preprocessed 3d_fullres: 6 case(s) written") == 1
    assert tree_digest(ranks / "preprocessed") == tree_digest(single / "preprocessed")
