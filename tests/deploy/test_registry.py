"""MLflow model registry: register a trained predictor, load it back as pyfunc (by version and alias) and
through download_model / open_model, against the embedded sqlite store and a live `mlflow server`; training runs as
model development with one logged model per fold; bad input gives a clear NnsegError (exit 2 in the CLI)."""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from nnseg.errors import NnsegError
from nnseg.io import read_volume

pytest.importorskip("mlflow")


@pytest.fixture(scope="module")
def work(trained_work: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A writable copy of the trained work folder (3d_fullres fold 0), shared by this module."""
    return Path(shutil.copytree(trained_work, tmp_path_factory.mktemp("registry") / "work"))


@pytest.fixture(scope="module")
def reference(work: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, np.ndarray]:
    """Label maps of the test images by Predictor.from_checkpoints(work/models/3d_fullres), per image name."""
    from nnseg.inference.predictor import Predictor

    predictor = Predictor.from_checkpoints(work / "models" / "3d_fullres", device="cpu")
    out = tmp_path_factory.mktemp("reference")
    return {image.name: predictor.predict(image, out / image.name) for image in _test_images(work)}


@pytest.fixture()
def global_uri(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """pyfunc.load_model("models:/...") reads MLflow's process-wide URIs: set through the environment, restored
    after the test (nnseg itself never sets them)."""
    from mlflow.tracking._tracking_service import utils

    if utils._tracking_uri is not None:
        pytest.skip("something in this process called mlflow.set_tracking_uri")
    yield monkeypatch


def _test_images(work: Path) -> list[Path]:
    root = Path(json.loads((work / "plans.json").read_text())["dataset_root"])
    images = sorted((root / "imagesTs").glob("*.nii.gz"))
    assert images, root
    return images


def _check_pyfunc(uri: str, name: str, work: Path, reference: dict[str, np.ndarray], out: Path) -> None:
    import mlflow
    import pandas as pd

    assert mlflow.get_tracking_uri() == uri and mlflow.get_registry_uri() == uri, "use the global_uri fixture"
    images = _test_images(work)
    for model_uri in (f"models:/{name}/1", f"models:/{name}@champion"):
        model = mlflow.pyfunc.load_model(model_uri)
        target = out / model_uri.replace(":", "").replace("/", "_").replace("@", "_")
        table = pd.DataFrame({"image": [str(p) for p in images], "output": [str(target / p.name) for p in images]})
        result = model.predict(table)
        assert list(result["status"]) == ["ok"] * len(images), result
        for image in images:
            assert np.array_equal(read_volume(target / image.name).array, reference[image.name])
    bad = model.predict(pd.DataFrame({"image": [str(out / "missing.nii.gz")], "output": [str(out / "x.nii.gz")]}))
    assert bad["status"][0].startswith("error:") and "not found" in bad["status"][0]


def _check_resolved(uri: str, name: str, work: Path, reference: dict[str, np.ndarray], cache: Path) -> None:
    import nnseg
    from nnseg.inference.predictor import Predictor
    from nnseg.tracking.registry import download_model
    from nnseg.workspace import Workspace

    root = download_model(f"models:/{name}@champion", uri, cache_dir=cache)
    folder = Workspace(root).models("3d_fullres")
    assert sorted(p.name for p in folder.glob("fold_*/*.pt")) == ["checkpoint_final.pt"]
    assert Workspace.containing(folder) is not None and folder.name == "3d_fullres"
    predictor = Predictor.from_checkpoints(folder, device="cpu")
    for image in _test_images(work):
        assert np.array_equal(predictor.predict(image), reference[image.name])
    assert download_model(f"models:/{name}/1", uri, cache_dir=cache) == root  # cached, same model id
    # the Python API in two lines, from the URI
    predictor = nnseg.open_model(f"models:/{name}/1", tracking_uri=uri, cache_dir=cache).predictor(device="cpu")
    assert all(np.array_equal(predictor.predict(image), reference[image.name]) for image in _test_images(work))


def _register_and_check(
    uri: str, work: Path, reference: dict[str, np.ndarray], tmp_path: Path, name: str = "tiny"
) -> None:
    from mlflow import MlflowClient

    from nnseg.deploy.registry import register_model

    assert register_model(work, name, tracking_uri=uri, alias="champion", experiment=name) == (name, "1")
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    version = client.get_model_version(name, "1")
    logged = client.get_logged_model(version.tags["nnseg.logged_model_id"])
    assert version.model_id in (None, "", logged.model_id)
    assert logged.params["configuration"] == "3d_fullres" and logged.params["folds"] == "0"
    assert client.get_experiment(logged.experiment_id).tags["mlflow.experimentKind"] == "custom_model_development"
    _check_pyfunc(uri, name, work, reference, tmp_path / "pyfunc")
    _check_resolved(uri, name, work, reference, tmp_path / "cache")


def test_register_embedded_store(work: Path, reference: dict, tmp_path: Path, global_uri: pytest.MonkeyPatch) -> None:
    uri = f"sqlite:///{(tmp_path / 'store' / 'mlflow.db').as_posix()}"
    global_uri.setenv("MLFLOW_TRACKING_URI", uri)
    global_uri.setenv("MLFLOW_REGISTRY_URI", uri)
    _register_and_check(uri, work, reference, tmp_path)


def test_register_server(
    work: Path, reference: dict, tmp_path: Path, mlflow_server: str, global_uri: pytest.MonkeyPatch
) -> None:
    global_uri.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    global_uri.setenv("MLFLOW_REGISTRY_URI", mlflow_server)
    # the server is shared by the session: a registered name of its own
    _register_and_check(mlflow_server, work, reference, tmp_path, name=f"tiny-{uuid.uuid4().hex[:6]}")


def test_training_run_is_model_development_with_logged_model(preprocessed_work: Path, tmp_path: Path) -> None:
    from mlflow import MlflowClient
    from mlflow.entities import LoggedModelStatus

    from nnseg.training.config import TrainConfig
    from nnseg.training.loop import train

    uri = f"sqlite:///{(tmp_path / 'runs.db').as_posix()}"
    config = TrainConfig(
        fold=0, epochs=1, iters_per_epoch=1, val_iters=1, device="cpu", loader_threads=1, tracking_uri=uri
    )
    result = train(preprocessed_work, config, show_progress=False)
    client = MlflowClient(tracking_uri=uri)
    run = client.get_run(result.run_id)
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    models = client.search_logged_models([experiment.experiment_id])
    assert len(models) == 1
    model = models[0]
    assert model.source_run_id == run.info.run_id and model.status == LoggedModelStatus.READY
    assert [o.model_id for o in run.outputs.model_outputs] == [model.model_id]
    assert {m.key for m in model.metrics} == {"final_val_mean_dice"}
    assert run.data.metrics["final_val_mean_dice"] == model.metrics[0].value
    final = preprocessed_work / "models" / "3d_fullres" / "fold_0" / "checkpoint_final.pt"
    from nnseg.digest import file_sha256

    assert model.tags["nnseg.checkpoint.sha256"] == file_sha256(final)
    assert model.tags["nnseg.checkpoint.uri"] == f"runs:/{run.info.run_id}/model/checkpoint_final.pt"
    assert model.params["configuration"] == "3d_fullres"


def test_bad_input(work: Path, tmp_path: Path) -> None:
    from nnseg.deploy.registry import register_model
    from nnseg.tracking.registry import download_model as resolve_model_uri

    uri = f"sqlite:///{(tmp_path / 'mlflow.db').as_posix()}"
    with pytest.raises(NnsegError, match="not a registered model URI"):
        resolve_model_uri("models:/a/b/c", uri)
    with pytest.raises(NnsegError, match="not a registered model URI"):
        resolve_model_uri("runs:/abc/model", uri)
    with pytest.raises(NnsegError, match="no registered model named 'nope'"):
        resolve_model_uri("models:/nope/1", uri)
    register_model(work, "small", tracking_uri=uri)
    with pytest.raises(NnsegError, match=r"has version\(s\) 1"):
        resolve_model_uri("models:/small/7", uri)
    with pytest.raises(NnsegError, match=r"has version\(s\) 1"):
        resolve_model_uri("models:/small@prod", uri)
    with pytest.raises(NnsegError, match="model name"):
        register_model(work, "bad/name", tracking_uri=uri)
    with pytest.raises(NnsegError, match="no trained 3d_lowres model"):
        register_model(work, "small", tracking_uri=uri, configuration="3d_lowres")
    with pytest.raises(NnsegError, match="tracking URI"):
        register_model(work, "small", tracking_uri="not a uri")
    with pytest.raises(NnsegError, match="not found"):
        register_model(tmp_path / "missing", "small", tracking_uri=uri)


def test_cli(work: Path, reference: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """nnseg register, then nnseg predict -m models:/NAME@ALIAS: the registered model's label maps."""
    from nnseg.cli import main
    from nnseg.cli.common import EXIT_BAD_INPUT, EXIT_OK
    from nnseg.io import read_volume

    uri = f"sqlite:///{(tmp_path / 'mlflow.db').as_posix()}"
    assert main(["register", "-m", str(work), "--name", "cli", "--tracking-uri", uri, "--alias", "prod"]) == EXIT_OK
    assert "registered cli version 1" in capsys.readouterr().out
    images = _test_images(work)
    out = tmp_path / "pred"
    predict = ["predict", "-i", str(images[0].parent), "-o", str(out), "--device", "cpu", "--backend", "torch"]
    assert main([*predict, "-m", "models:/cli@prod", "--tracking-uri", uri]) == EXIT_OK
    for image in images:
        predicted = read_volume(out / image.name.replace("_0000", "")).array
        np.testing.assert_array_equal(predicted, reference[image.name])
    assert main([*predict, "-m", "models:/cli/7", "--tracking-uri", uri]) == EXIT_BAD_INPUT
    assert "cli" in capsys.readouterr().err
    assert main(["register", "-m", str(tmp_path / "nope"), "--name", "cli", "--tracking-uri", uri]) == EXIT_BAD_INPUT
    assert "not found" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["register", "--name", "cli"])
    assert exit_info.value.code == EXIT_BAD_INPUT
    assert "-m/--model" in capsys.readouterr().err


class _Marker:
    """Unpickling this creates a marker file: the attack a pickled pyfunc model allows."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (Path(self.path).touch, ())


def test_a_registered_model_loads_without_unpickling_and_checks_its_files(
    work: Path, reference: dict, tmp_path: Path, global_uri: pytest.MonkeyPatch
) -> None:
    """No pickle in the stored model (MLmodel names nnseg's loader module); a pickle planted in the store never
    runs; a checkpoint changed in the store stops both mlflow.pyfunc.load_model and nnseg's own download."""
    import pickle

    import mlflow
    import pandas as pd
    from mlflow import MlflowClient

    from nnseg.deploy.registry import register_model
    from nnseg.inference.model import open_model

    uri = f"sqlite:///{(tmp_path / 'store' / 'mlflow.db').as_posix()}"
    global_uri.setenv("MLFLOW_TRACKING_URI", uri)
    global_uri.setenv("MLFLOW_REGISTRY_URI", uri)
    register_model(work, "safe", tracking_uri=uri)
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    logged = client.get_logged_model(client.get_model_version("safe", "1").tags["nnseg.logged_model_id"])
    stored = Path(logged.artifact_location.removeprefix("file://"))
    assert "loader_module: nnseg.deploy.pyfunc_model" in (stored / "MLmodel").read_text()
    assert not [p for p in stored.rglob("*.pkl")], "nothing in the stored model is pickled"

    marker = tmp_path / "code_ran"
    (stored / "python_model.pkl").write_bytes(pickle.dumps(_Marker(str(marker))))
    model = mlflow.pyfunc.load_model("models:/safe/1")
    image = _test_images(work)[0]
    result = model.predict(pd.DataFrame({"image": [str(image)], "output": [str(tmp_path / "out" / image.name)]}))
    assert list(result["status"]) == ["ok"] and not marker.exists()
    assert np.array_equal(read_volume(tmp_path / "out" / image.name).array, reference[image.name])

    (checkpoint,) = stored.rglob("checkpoint_final.pt")
    checkpoint.write_bytes(checkpoint.read_bytes()[:-16] + b"\0" * 16)
    with pytest.raises(NnsegError, match="do not match the SHA-256s recorded at registration"):
        mlflow.pyfunc.load_model("models:/safe/1")
    with pytest.raises(NnsegError, match="do not match the hashes recorded at registration"):
        open_model("models:/safe/1", tracking_uri=uri, cache_dir=tmp_path / "cache")
