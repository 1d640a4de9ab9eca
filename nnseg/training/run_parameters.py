"""What the MLflow run of a training records as parameters: plan, recipe, trainer options, fingerprint."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from nnseg.training.loop import Trainer


def run_parameters(trainer: Trainer) -> dict[str, Any]:
    """Nested parameters (flattened by the tracker): the configuration's plan, the recipe the run trains
    with, the fitted number of epochs (``--time-budget``), the trainer options, the dataset's fingerprint and,
    for a run started from ``--pretrained``, the source checkpoint with its SHA-256 (``pretrained.*``)."""
    fingerprint = {}
    if trainer.workspace.fingerprint.is_file():
        data = json.loads(trainer.workspace.fingerprint.read_text())
        spacings = np.array([c["spacing"] for c in data["cases"]])
        shapes = np.array([c["shape_after_crop"] for c in data["cases"]])
        fingerprint = {
            "cases": len(data["cases"]),
            "median_spacing": np.median(spacings, 0).round(4).tolist(),
            "median_shape_after_crop": np.median(shapes, 0).tolist(),
            "median_relative_size_after_crop": data["median_relative_size_after_crop"],
        }
    config = asdict(trainer.config_plan)
    config.pop("normalization")
    parameters: dict[str, Any] = {
        "plan": {
            "preset": trainer.plan.preset,
            **config,
            "normalization": [n.scheme for n in trainer.config_plan.normalization],
        },
        "recipe": asdict(trainer.recipe),
        "planned_epochs": trainer.planned_epochs,
        "trainer": {
            **asdict(trainer.train_config),
            "train_cases": len(trainer.train_ids),
            "val_cases": len(trainer.val_ids),
            "world_size": trainer.dist.world_size,
        },
        "fingerprint": fingerprint,
        "nnseg_version": trainer.plan.nnseg_version,
    }
    if trainer.pretrained is not None:  # the source checkpoint, its SHA-256 and what was transferred
        parameters["pretrained"] = trainer.pretrained.as_params()
    return parameters
