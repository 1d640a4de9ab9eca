"""The cascade's input on the next stage's grid: shapes as preprocessing makes them, labels from probabilities."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from nnseg.dataset import load_dataset
from nnseg.dataset.reading import read_case_images, read_case_labels
from nnseg.planning import Plan
from nnseg.preprocessing.cascade import segmentation_for_stage, stage_shape
from nnseg.preprocessing.preprocess import preprocess_case


def test_a_first_stage_segmentation_lands_on_the_next_stage_grid(preprocessed_work_template: Path) -> None:
    plan = Plan.load(preprocessed_work_template / "plans.json")
    fullres = plan.configuration("3d_fullres")
    coarse = replace(fullres, name="3d_lowres", spacing=tuple(2 * s for s in fullres.spacing))
    dataset = load_dataset(plan.dataset_root)
    case = dataset.cases[0]
    images, labels = read_case_images(case, dataset.num_channels), read_case_labels(case)
    fine = preprocess_case(images.array, images.geometry, labels.array, plan, fullres, case_id=case.case_id)
    low = preprocess_case(images.array, images.geometry, labels.array, plan, coarse, case_id=case.case_id)
    assert stage_shape(low.properties, plan, fullres) == fine.data.shape[1:]
    assert stage_shape(fine.properties, plan, coarse) == low.data.shape[1:]

    # the coarse labels as (certain) probabilities: upsampled, they cover the fine labels closely
    assert low.seg is not None and fine.seg is not None
    onehot = torch.nn.functional.one_hot(torch.from_numpy(np.maximum(low.seg, 0)).long(), plan.num_classes)
    staged = segmentation_for_stage(onehot.permute(3, 0, 1, 2).float(), low.properties, plan, fullres)
    assert staged.shape == fine.seg.shape and staged.dtype == np.int16
    reference = np.maximum(fine.seg, 0)
    for value in (1, 2):
        overlap = np.logical_and(staged == value, reference == value).sum()
        dice = 2 * overlap / max((staged == value).sum() + (reference == value).sum(), 1)
        assert dice > 0.5, (value, dice)
    assert (staged == reference).mean() > 0.9
