"""The label scheme: objective, outputs, training targets, painting, ignore label, JSON, bad declarations."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nnseg.labels import LabelError, LabelScheme, evaluated_classes, segment

BRATS = {"background": 0, "whole_tumor": [1, 2, 3], "tumor_core": [2, 3], "enhancing": [3]}


def test_plain_labels_train_softmax_with_one_output_per_value() -> None:
    scheme = LabelScheme.from_json({"background": 0, "liver": 1, "tumour": 2})
    assert scheme.objective == "softmax" and not scheme.has_regions and scheme.ignore_value is None
    assert scheme.num_outputs == 3
    assert scheme.foreground == {"liver": (1,), "tumour": (2,)}
    assert scheme.output_names == ["background", "liver", "tumour"]
    probabilities = torch.tensor([[0.7, 0.2], [0.2, 0.1], [0.1, 0.7]])
    assert scheme.segmentation(probabilities).tolist() == [0, 2]


def test_regions_train_one_sigmoid_per_region_and_paint_in_order() -> None:
    scheme = LabelScheme.from_json(BRATS, [1, 2, 3])
    assert scheme.objective == "sigmoid" and scheme.num_outputs == 3
    assert scheme.foreground == {"whole_tumor": (1, 2, 3), "tumor_core": (2, 3), "enhancing": (3,)}
    assert scheme.value_names == {0: "background", 1: "whole_tumor", 2: "tumor_core", 3: "enhancing"}
    seg = torch.tensor([0, 1, 2, 3]).view(1, 1, 4)
    target, valid = scheme.training_target(seg)
    assert valid is None
    assert target[0].tolist() == [[0, 1, 1, 1], [0, 0, 1, 1], [0, 0, 0, 1]]
    # later regions overwrite earlier ones; a region below 0.5 paints nothing
    probabilities = np.array(
        [[0.9, 0.9, 0.9, 0.2, 0.2], [0.1, 0.8, 0.9, 0.2, 0.2], [0.1, 0.1, 0.7, 0.2, 0.9]], dtype=np.float32
    )
    assert scheme.segmentation(probabilities).tolist() == [1, 2, 3, 0, 3]
    assert segment(probabilities, None).tolist() == [0, 0, 0, 0, 2]  # without an order: argmax
    assert scheme.check_regions_reproduce(np.array([[0, 1, 2, 3, 3]])) == []


def test_ignore_label_is_no_output_and_masks_the_target() -> None:
    scheme = LabelScheme.from_json({"background": 0, "organ": 1, "ignore": 2})
    assert scheme.ignore_value == 2 and scheme.num_outputs == 2 and scheme.foreground == {"organ": (1,)}
    target, valid = scheme.training_target(torch.tensor([0, 1, 2]).view(1, 1, 3))
    assert target.tolist() == [[[0, 1, 0]]]
    assert valid is not None and valid.tolist() == [[[True, True, False]]]
    regions = LabelScheme.from_json({**BRATS, "ignore": 4}, [1, 2, 3])
    assert regions.num_outputs == 3 and regions.ignore_value == 4
    assert regions.check_regions_reproduce(np.array([0, 4, 1])) == []  # ignore voxels are not painted back
    classes, ignore = evaluated_classes({"background": 0, "organ": 1, "ignore": 2})
    assert "ignore" not in classes and ignore == 2


def test_json_round_trip() -> None:
    scheme = LabelScheme.from_json({**BRATS, "ignore": 4}, [1, 2, 3])
    data = scheme.to_json()
    assert data["labels"]["whole_tumor"] == [1, 2, 3] and data["regions_class_order"] == [1, 2, 3]
    assert LabelScheme.from_json(data["labels"], data["regions_class_order"]) == scheme
    assert dict(scheme)["tumor_core"] == (2, 3)  # a read-only mapping like dataset.json's labels


@pytest.mark.parametrize(
    ("labels", "order", "message"),
    [
        ({"organ": 1}, None, "background as value 0"),
        ({"background": 0, "organ": 2}, None, "consecutive"),
        ({"background": 0, "ignore": 1, "organ": 2}, None, 'ignore" must have the highest value (2)'),
        (BRATS, None, 'regions_class_order" is missing'),
        (BRATS, [1, 2], "has 2 values for 3 regions"),
        (BRATS, [1, 2, 7], "names value 7"),
        ({"background": 0, "organ": 1}, [1], "no label is a region"),
        ({"background": 0, "whole": [0, 1]}, [1], "region 'whole' lists [0]"),
        ({"background": 0, "organ": "1"}, None, "must map to an integer"),
    ],
)
def test_bad_schemes_are_refused_with_the_reason(labels: dict, order: list | None, message: str) -> None:
    with pytest.raises(LabelError, match=None) as info:
        LabelScheme.from_json(labels, order)
    assert message in str(info.value)


def test_regions_that_cannot_reproduce_the_file_are_reported() -> None:
    # tumor_core painted last overwrites enhancing: value 3 comes back as 2
    scheme = LabelScheme.from_json({"background": 0, "whole": [1, 2, 3], "enh": [3], "core": [2, 3]}, [1, 3, 2])
    assert scheme.check_regions_reproduce(np.array([0, 1, 2, 3])) == [3]
