"""Workspace: the only code that knows the work folder's file and folder names.

W/fingerprint.json  plans.json  splits.json  check_report.json  inference.json  mlflow.db  mlartifacts/
W/preprocessed/<data identifier>/...               (case files: nnseg.preprocessing.preprocess)
W/nnseg_model.json  labels.json      (a registered model's folder: nnseg.deploy.registry)
W/models/<configuration>/fold_<k>/checkpoint_{latest,best,final}.pt  curves.png  tracking_fallback.jsonl
                                  .nnseg_cache/<backend>_<key>.*   (converted models, nnseg.inference.backends)
                                  validation/<case>.nii.gz|.npz  summary.json
                                  predicted_next_stage/<next configuration>/<case>.npy   (cascade's first stage)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_WORK_DIR = Path("nnseg_work")
FOLD_PREFIX = "fold_"
ALL_FOLDS = "all"


@dataclass(frozen=True)
class FoldPaths:
    """The files of one trained fold (``models/<configuration>/fold_<k>/``), wherever that folder lies."""

    root: Path

    @property
    def latest(self) -> Path:
        """Written every epoch, with the training state to resume from."""
        return self.root / "checkpoint_latest.pt"

    @property
    def best(self) -> Path:
        """The weights at the best pseudo-Dice moving average."""
        return self.root / "checkpoint_best.pt"

    @property
    def final(self) -> Path:
        """The weights when training finished."""
        return self.root / "checkpoint_final.pt"

    @property
    def checkpoints_by_preference(self) -> tuple[Path, ...]:
        """Which checkpoint a predictor takes: final, else best, else latest."""
        return self.final, self.best, self.latest

    @property
    def curves(self) -> Path:
        return self.root / "curves.png"

    @property
    def validation(self) -> Path:
        """Sliding-window predictions of the fold's validation cases (label maps and probabilities)."""
        return self.root / "validation"

    @property
    def validation_summary(self) -> Path:
        return self.validation / "summary.json"

    def next_stage(self, configuration: str) -> Path:
        """The fold's validation segmentations on ``configuration``'s preprocessed grid (the cascade's input):
        ``<case>.npy``, written by the first stage's final validation."""
        return self.root / "predicted_next_stage" / configuration

    def next_stage_case(self, configuration: str, case_id: str) -> Path:
        return self.next_stage(configuration) / f"{case_id}.npy"

    def next_stage_cases(self, configuration: str) -> dict[str, Path]:
        """Case id -> file of every segmentation this fold wrote for ``configuration`` (temporaries excluded)."""
        folder = self.next_stage(configuration)
        if not folder.is_dir():
            return {}
        return {p.stem: p for p in sorted(folder.glob("*.npy")) if not p.name.startswith(".")}

    @property
    def lock(self) -> Path:
        """Held by the process training this fold (:class:`nnseg.locks.FolderLock`)."""
        return self.root / ".nnseg.lock"

    @property
    def cache(self) -> Path:
        """Models converted for another backend from this fold's checkpoints (rebuilt when missing)."""
        return self.root / ".nnseg_cache"

    @property
    def tracking_fallback(self) -> Path:
        """Local record of what could not reach the MLflow server."""
        return self.root / "tracking_fallback.jsonl"

    @property
    def is_fold(self) -> bool:
        return self.root.name.startswith(FOLD_PREFIX)

    @property
    def is_all(self) -> bool:
        """Trained on every case (no cross-validation)."""
        return self.root.name == FOLD_PREFIX + ALL_FOLDS


def fold_folder_name(fold: int | str) -> str:
    return f"{FOLD_PREFIX}{fold}"


def fold_folders(model_dir: str | os.PathLike, *, cross_validation_only: bool = False) -> list[FoldPaths]:
    """The ``fold_*`` folders of a ``models/<configuration>`` folder, sorted."""
    found = [FoldPaths(d) for d in sorted(Path(model_dir).glob(FOLD_PREFIX + "*")) if d.is_dir()]
    return [f for f in found if not f.is_all] if cross_validation_only else found


@dataclass(frozen=True)
class Workspace:
    """Paths of every artifact under one work folder (``--work``, default ``./nnseg_work``)."""

    root: Path

    @classmethod
    def at(cls, root: str | os.PathLike | None) -> Workspace:
        return cls(Path(root) if root is not None else DEFAULT_WORK_DIR)

    @classmethod
    def containing(cls, path: str | os.PathLike) -> Workspace | None:
        """The work folder ``path`` is (or lies in, as ``models/<config>`` or a fold), or None."""
        path = Path(path)
        for candidate in (path, *list(path.parents)[:3]):
            if (candidate / "plans.json").is_file():
                return cls(candidate)
        return None

    @property
    def fingerprint(self) -> Path:
        return self.root / "fingerprint.json"

    @property
    def plans(self) -> Path:
        return self.root / "plans.json"

    @property
    def check_report(self) -> Path:
        return self.root / "check_report.json"

    @property
    def inference_choice(self) -> Path:
        """``inference.json``: the configurations and postprocessing chosen by find-best."""
        return self.root / "inference.json"

    @property
    def splits(self) -> Path:
        return self.root / "splits.json"

    @property
    def registered_manifest(self) -> Path:
        """A registered model's folder: configuration, folds, nnseg version and checkpoint hashes."""
        return self.root / "nnseg_model.json"

    @property
    def registered_labels(self) -> Path:
        return self.root / "labels.json"

    @property
    def mlflow_store(self) -> Path:
        """The embedded MLflow store (a sqlite file); its artifacts go to :attr:`mlflow_artifacts`."""
        return self.root / "mlflow.db"

    @property
    def mlflow_artifacts(self) -> Path:
        return self.root / "mlartifacts"

    def preprocessed(self, data_identifier: str) -> Path:
        return self.root / "preprocessed" / data_identifier

    @property
    def models_root(self) -> Path:
        """Every configuration's trained models (``models/<configuration>/fold_<k>``)."""
        return self.root / "models"

    def trained_configurations(self) -> list[str]:
        """The configurations with a ``models/<configuration>`` folder, sorted."""
        if not self.models_root.is_dir():
            return []
        return sorted(p.name for p in self.models_root.iterdir() if p.is_dir())

    def models(self, configuration: str) -> Path:
        return self.models_root / configuration

    def fold(self, configuration: str, fold: int | str) -> Path:
        return self.models(configuration) / fold_folder_name(fold)

    def fold_paths(self, configuration: str, fold: int | str) -> FoldPaths:
        return FoldPaths(self.fold(configuration, fold))
