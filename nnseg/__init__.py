"""nnseg: self-configuring 3D medical image segmentation (the nnU-Net recipe) with MLflow tracking.

The Python API mirrors the ``nnseg`` command line::

    import nnseg
    report = nnseg.check_dataset("Dataset001_Phantoms")
    result = nnseg.plan("Dataset001_Phantoms", "work")   # fingerprint.json + plans.json
    labels = nnseg.Predictor.from_checkpoints("work/models/3d_fullres").predict("case_0000.nii.gz")

Torch-dependent parts (``Predictor``, ``train``, ``TrainConfig``, ``preprocess``) load on first use,
so ``nnseg check`` and ``nnseg plan`` start fast.
"""

from __future__ import annotations

from nnseg.api import PlanResult, plan
from nnseg.dataset import CheckReport, Dataset, check_dataset, load_dataset
from nnseg.errors import NnsegError
from nnseg.fingerprint import Fingerprint
from nnseg.io import Geometry, Volume, read_volume, write_volume
from nnseg.planning import Plan
from nnseg.synth import SynthConfig, generate_dataset
from nnseg.version import __version__

_LAZY = {
    "Predictor": ("nnseg.inference.predictor", "Predictor"),
    "train": ("nnseg.training.loop", "train"),
    "TrainConfig": ("nnseg.training.config", "TrainConfig"),
    "preprocess": ("nnseg.preprocessing.preprocess", "preprocess_dataset"),
    "evaluate": ("nnseg.evaluation.evaluate", "evaluate_folders"),
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        module, attribute = _LAZY[name]
        return getattr(importlib.import_module(module), attribute)
    raise AttributeError(f"module 'nnseg' has no attribute {name!r}")


__all__ = [
    "CheckReport",
    "Dataset",
    "Fingerprint",
    "Geometry",
    "NnsegError",
    "Plan",
    "PlanResult",
    "Predictor",
    "TrainConfig",
    "SynthConfig",
    "Volume",
    "__version__",
    "check_dataset",
    "generate_dataset",
    "evaluate",
    "load_dataset",
    "plan",
    "preprocess",
    "read_volume",
    "train",
    "write_volume",
]
