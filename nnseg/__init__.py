"""nnseg: self-configuring 3D medical image segmentation (the nnU-Net recipe) with MLflow tracking.

The Python API mirrors the ``nnseg`` command line::

    import nnseg
    report = nnseg.check_dataset("Dataset001_Phantoms")
    result = nnseg.plan("Dataset001_Phantoms", "work")   # fingerprint.json + plans.json
"""

from __future__ import annotations

__version__ = "0.1.0"

from nnseg.api import PlanResult, plan
from nnseg.dataset import CheckReport, Dataset, check_dataset, load_dataset
from nnseg.errors import NnsegError
from nnseg.io import Geometry, Volume, read_volume, write_volume
from nnseg.fingerprint import Fingerprint
from nnseg.planning import Plan
from nnseg.synth import SynthConfig, generate_dataset

__all__ = [
    "CheckReport",
    "Dataset",
    "Fingerprint",
    "Geometry",
    "NnsegError",
    "Plan",
    "PlanResult",
    "SynthConfig",
    "Volume",
    "__version__",
    "check_dataset",
    "generate_dataset",
    "load_dataset",
    "plan",
    "read_volume",
    "write_volume",
]
