"""nnseg: self-configuring 3D medical image segmentation (the nnU-Net recipe) with MLflow tracking.

The Python API mirrors the ``nnseg`` command line::

    import nnseg
    report = nnseg.check_dataset("Dataset001_Phantoms")
    result = nnseg.plan("Dataset001_Phantoms", "work")   # fingerprint.json + plans.json
    labels = nnseg.open_model("work").predictor().predict("case_0000.nii.gz")   # or an export, models:/NAME/1

Every name loads on first use, so ``import nnseg`` and the CLI start fast.
"""

from __future__ import annotations

import importlib
from typing import Any

from nnseg.version import __version__

#: public name -> (module, attribute), imported on first use: ``import nnseg`` (and the CLI) starts fast
_LAZY = {
    "CheckReport": ("nnseg.dataset", "CheckReport"),
    "Dataset": ("nnseg.dataset", "Dataset"),
    "Fingerprint": ("nnseg.fingerprint", "Fingerprint"),
    "Geometry": ("nnseg.io", "Geometry"),
    "Model": ("nnseg.inference.model", "Model"),
    "NnsegError": ("nnseg.errors", "NnsegError"),
    "Plan": ("nnseg.planning", "Plan"),
    "PlanResult": ("nnseg.api", "PlanResult"),
    "Predictor": ("nnseg.inference.predictor", "Predictor"),
    "SynthConfig": ("nnseg.synth", "SynthConfig"),
    "TrainConfig": ("nnseg.training.config", "TrainConfig"),
    "Volume": ("nnseg.io", "Volume"),
    "check_dataset": ("nnseg.dataset", "check_dataset"),
    "evaluate": ("nnseg.evaluation.evaluate", "evaluate_folders"),
    "generate_dataset": ("nnseg.synth", "generate_dataset"),
    "load_dataset": ("nnseg.dataset", "load_dataset"),
    "open_model": ("nnseg.inference.model", "open_model"),
    "plan": ("nnseg.api", "plan"),
    "preprocess": ("nnseg.preprocessing.preprocess", "preprocess_dataset"),
    "read_volume": ("nnseg.io", "read_volume"),
    "train": ("nnseg.training.loop", "train"),
    "write_volume": ("nnseg.io", "write_volume"),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module, attribute = _LAZY[name]
        return getattr(importlib.import_module(module), attribute)
    raise AttributeError(f"module 'nnseg' has no attribute {name!r}")


__all__ = ["__version__", *_LAZY]
