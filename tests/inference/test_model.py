"""open_model: what -m means, one place — work folder, models/<config>, fold folder, checkpoint file; the
configuration it picks, the postprocessing that travels with the predictor, and clear refusals."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import nnseg
from nnseg.errors import NnsegError
from nnseg.inference.model import open_model
from nnseg.postprocessing import PostprocessingRule
from nnseg.workspace import Workspace


@pytest.fixture(scope="module")
def work(trained_work: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the trained work folder (3d_fullres and 2d, fold 0) with find-best's choice for 3d_fullres."""
    work = Path(shutil.copytree(trained_work, tmp_path_factory.mktemp("model") / "work"))
    rule = PostprocessingRule(foreground_largest_component=True)
    choice = {"configurations": ["3d_fullres"], "postprocessing": rule.to_dict()}
    Workspace(work).inference_choice.write_text(json.dumps(choice))
    return work


def test_every_kind_of_path_opens_the_same_checkpoint(work: Path) -> None:
    fold = Workspace(work).fold_paths("3d_fullres", 0)
    opened = [
        open_model(work),
        open_model(work / "models" / "3d_fullres"),
        open_model(fold.root),
        open_model(fold.final),
    ]
    assert {m.configuration for m in opened} == {"3d_fullres"}
    assert {tuple(s.path for s in m.checkpoints) for m in opened} == {(fold.final,)}
    assert all(m.folds == ("0",) and m.scheme == m.plan.scheme and not m.is_export for m in opened)
    # find-best's postprocessing applies to the whole configuration only, as nnseg predict has always done
    assert [m.postprocessing is not None for m in opened] == [True, True, False, False]
    assert [m.work for m in opened] == [work, work, None, None]


def test_the_configuration_is_chosen_or_checked(work: Path) -> None:
    assert open_model(work, "2d").configuration == "2d"
    assert open_model(work, "2d").postprocessing is None  # find-best chose 3d_fullres
    with pytest.raises(NnsegError, match="no trained 3d_lowres model"):
        open_model(work, "3d_lowres")
    with pytest.raises(NnsegError, match="-c 2d: .* holds a 3d_fullres model; leave -c out"):
        open_model(Workspace(work).fold("3d_fullres", 0), "2d")
    with pytest.raises(NnsegError, match="not found"):
        open_model(work / "missing")


def test_the_predictor_carries_the_models_postprocessing(work: Path) -> None:
    model = nnseg.open_model(work)
    rule = model.postprocessing
    assert rule is not None and rule.foreground_largest_component
    predictor = model.predictor(device="cpu")
    assert predictor.postprocess is not None
    assert model.predictor(device="cpu", postprocess=False).postprocess is None
    labels = np.zeros((8, 8, 8), np.uint8)
    labels[1:3, 1:3, 1:3] = 1
    labels[5:7, 5:7, 5:7] = 2  # a second, separate component: the rule keeps only the largest
    labels[6, 6, 6] = 0
    assert np.array_equal(predictor.postprocess(labels), rule.apply(labels))
    assert model.describe() == [s.describe() for s in model.checkpoints]
