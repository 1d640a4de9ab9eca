"""Shared fixtures: tiny phantom datasets written once per session, copied per test when a test changes them."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from nnseg.synth import SynthConfig, generate_dataset
from tests.mlflow_server import mlflow_server as _start_mlflow_server

TINY_SHAPE = (20, 24, 24)


@pytest.fixture(scope="session")
def ct_dataset_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 CT-like cases, one channel, oblique affines (read-only: copy before changing)."""
    out = tmp_path_factory.mktemp("ct") / "Dataset001_CT"
    return generate_dataset(out, SynthConfig(num_cases=4, num_test=1, shape=TINY_SHAPE, seed=1), show_progress=False)


@pytest.fixture(scope="session")
def mr_dataset_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 MR-like cases with 2 channels (read-only: copy before changing)."""
    out = tmp_path_factory.mktemp("mr") / "Dataset002_MR"
    config = SynthConfig(num_cases=3, shape=TINY_SHAPE, modality="MR", channels=2, seed=2)
    return generate_dataset(out, config, show_progress=False)


@pytest.fixture()
def ct_dataset(ct_dataset_template: Path, tmp_path: Path) -> Path:
    """A private, writable copy of the CT phantom dataset."""
    return Path(shutil.copytree(ct_dataset_template, tmp_path / ct_dataset_template.name))


@pytest.fixture()
def mr_dataset(mr_dataset_template: Path, tmp_path: Path) -> Path:
    """A private, writable copy of the 2-channel MR phantom dataset."""
    return Path(shutil.copytree(mr_dataset_template, tmp_path / mr_dataset_template.name))


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--update-golden",
        action="store_true",
        default=False,
        help="rewrite golden files (e.g. tests/planning/golden/*.json) instead of comparing",
    )


@pytest.fixture()
def update_golden(request: pytest.FixtureRequest) -> bool:
    return bool(request.config.getoption("--update-golden"))


@pytest.fixture(scope="session")
def aniso_dataset_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """5 MR-like cases with thick slices (3.5-5 mm along k) and larger in-plane size (read-only)."""
    out = tmp_path_factory.mktemp("aniso") / "Dataset003_Aniso"
    config = SynthConfig(num_cases=5, shape=(40, 64, 64), modality="MR", anisotropic=True, seed=3)
    return generate_dataset(out, config, show_progress=False)


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory):
    """URI of a real `mlflow server` on 127.0.0.1 (sqlite backend, proxied artifacts), shared by the session."""
    yield from _start_mlflow_server(tmp_path_factory)


@pytest.fixture(scope="session")
def preprocessed_work_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A work folder with a cpu-preset plan and the 3d_fullres cache of 6 tiny CT phantoms (read-only)."""
    from nnseg.api import plan
    from nnseg.preprocessing.preprocess import preprocess_dataset

    root = tmp_path_factory.mktemp("train")
    raw = generate_dataset(
        root / "raw", SynthConfig(num_cases=6, num_test=1, shape=TINY_SHAPE, seed=4), show_progress=False
    )
    work = root / "work"
    plan(raw, work, preset="cpu", workers=1, show_progress=False)
    preprocess_dataset(work, configurations=["3d_fullres", "2d"], workers=1, show_progress=False)
    return work


@pytest.fixture()
def preprocessed_work(preprocessed_work_template: Path, tmp_path: Path) -> Path:
    """A private copy of the preprocessed work folder (the raw dataset stays shared)."""
    return Path(shutil.copytree(preprocessed_work_template, tmp_path / "work"))


@pytest.fixture(scope="session")
def trained_work(preprocessed_work_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3d_fullres and 2d, fold 0, one tiny epoch each, with final validation (probabilities saved; read-only)."""
    from nnseg.training.config import TrainConfig
    from nnseg.training.loop import train

    work = Path(shutil.copytree(preprocessed_work_template, tmp_path_factory.mktemp("trained") / "work"))
    for configuration in ("3d_fullres", "2d"):
        train(
            work,
            TrainConfig(
                configuration=configuration,
                fold=0,
                epochs=1,
                iters_per_epoch=2,
                val_iters=1,
                device="cpu",
                loader_threads=1,
                tracking=False,
            ),
            show_progress=False,
        )
    return work
