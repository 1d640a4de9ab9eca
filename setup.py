"""Package layout that pyproject.toml cannot express: the planner presets in plans/ (top of the repository, where
users look for them) ship inside the wheel as the package data ``nnseg/plans/*.json``."""

from setuptools import find_packages, setup

setup(
    packages=[*find_packages(include=["nnseg*"]), "nnseg.plans"],
    package_dir={"nnseg.plans": "plans"},
    package_data={"nnseg": ["py.typed"], "nnseg.plans": ["*.json"]},
)
