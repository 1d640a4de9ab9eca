"""What the MLflow run of a training records as parameters: plan, recipe, trainer options, fingerprint."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

import numpy as np

from nnseg.recipes import Recipe
from nnseg.training.pretrained import TransferReport
from nnseg.training.run_record import RunRecord


def run_parameters(
    run: RunRecord,
    recipe: Recipe,
    planned_epochs: int,
    *,
    pretrained: TransferReport | None = None,
) -> dict[str, Any]:
    """Nested parameters (flattened by the tracker): the configuration's plan, the ``recipe`` the run trains
    with, the fitted number of epochs (``--time-budget``), the trainer options, the dataset's fingerprint and,
    for a run started from ``--pretrained``, the source checkpoint with its SHA-256 (``pretrained.*``)."""
    fingerprint = {}
    if run.workspace.fingerprint.is_file():
        data = json.loads(run.workspace.fingerprint.read_text())
        spacings = np.array([c["spacing"] for c in data["cases"]])
        shapes = np.array([c["shape_after_crop"] for c in data["cases"]])
        fingerprint = {
            "cases": len(data["cases"]),
            "median_spacing": np.median(spacings, 0).round(4).tolist(),
            "median_shape_after_crop": np.median(shapes, 0).tolist(),
            "median_relative_size_after_crop": data["median_relative_size_after_crop"],
        }
    config = asdict(run.config_plan)
    config.pop("normalization")
    parameters: dict[str, Any] = {
        "plan": {
            "preset": run.plan.preset,
            **config,
            "normalization": [n.scheme for n in run.config_plan.normalization],
        },
        "recipe": asdict(recipe),
        "planned_epochs": planned_epochs,
        "trainer": {
            **asdict(run.config),
            "train_cases": len(run.train_ids),
            "val_cases": len(run.val_ids),
            "world_size": run.dist.world_size,
        },
        "fingerprint": fingerprint,
        "nnseg_version": run.plan.nnseg_version,
    }
    if pretrained is not None:  # the source checkpoint, its SHA-256 and what was transferred
        parameters["pretrained"] = pretrained.as_params()
    return parameters
