"""Datasets: the nnU-Net v2 and MSD layouts, and their integrity check."""

from nnseg.dataset.check import CheckReport, check_dataset
from nnseg.dataset.problems import Problem
from nnseg.dataset.spec import Case, Dataset, load_dataset

__all__ = ["Case", "CheckReport", "Dataset", "Problem", "check_dataset", "load_dataset"]
