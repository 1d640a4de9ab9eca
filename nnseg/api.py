"""The Python API behind the CLI: one function per stage, artifact to artifact."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from nnseg.atomic import remove_stale_temporaries
from nnseg.dataset import check_dataset, load_dataset
from nnseg.errors import NnsegError
from nnseg.fingerprint import Fingerprint, extract_fingerprint
from nnseg.parallel import default_workers
from nnseg.planning import Plan, load_preset
from nnseg.planning.planner import make_plan
from nnseg.planning.transfer import load_source_plan, transfer_topology
from nnseg.version import __version__
from nnseg.workspace import Workspace


@dataclass(frozen=True)
class PlanResult:
    """What :func:`plan` wrote."""

    fingerprint: Fingerprint
    plan: Plan
    fingerprint_path: Path
    plans_path: Path
    transfer_notes: tuple[str, ...] = ()


def plan(
    dataset: str | os.PathLike,
    work: str | os.PathLike | None = None,
    *,
    preset: str | os.PathLike | None = None,
    architecture: str | None = None,
    gpu_memory_gb: float | None = None,
    workers: int | None = None,
    show_progress: bool = True,
    transfer_plan: str | os.PathLike | None = None,
) -> PlanResult:
    """Check, fingerprint and plan a dataset: writes ``<work>/fingerprint.json`` and ``<work>/plans.json``.

    Args:
        dataset: dataset folder (nnU-Net or MSD layout).
        work: work folder (default ``./nnseg_work``).
        preset: planner preset name (``plans/<name>.json``) or path (default: ``default``, or with
            ``transfer_plan`` the constants the source was planned with).
        architecture: the network to plan instead of the preset's (``nnseg.networks.available()``).
        gpu_memory_gb: plan for this much GPU memory instead of the preset's.
        workers: reader processes (default: from CPU cores and free memory).
        show_progress: progress bars on stderr.
        transfer_plan: the work folder of another dataset whose checkpoints should fit: each configuration takes
            its network, patch and batch from that plan (spacing and normalization stay this dataset's; see
            :mod:`nnseg.planning.transfer`), for ``nnseg train --pretrained``.

    Raises:
        DatasetError: the dataset fails ``nnseg check`` (nothing is written).
        NnsegError: a bad preset or option; with ``transfer_plan``, a missing plan or no shared configuration.

    Example:
        >>> import nnseg
        >>> result = nnseg.plan("Dataset001_Liver", "work")  # doctest: +SKIP
    """
    source = None
    if transfer_plan is not None:
        if architecture is not None or gpu_memory_gb is not None:
            raise NnsegError(
                "--transfer-plan takes the network from the source plan; drop --architecture / --gpu-memory-gb"
            )
        source = load_source_plan(transfer_plan)
    if preset is None and source is not None:
        chosen_preset = source[0].preset_values
    else:
        chosen_preset = load_preset(preset or "default", gpu_memory_gb=gpu_memory_gb, architecture=architecture)
    spec = load_dataset(dataset)
    check_dataset(spec, workers=workers or default_workers(), show_progress=show_progress).raise_if_errors()
    fingerprint = extract_fingerprint(spec, workers=workers, show_progress=show_progress)
    result_plan = make_plan(
        fingerprint, spec.labels, chosen_preset, nnseg_version=__version__, dataset_root=str(spec.root)
    )
    notes: tuple[str, ...] = ()
    if source is not None:
        transferred = transfer_topology(result_plan, source[0], source[1])
        result_plan, notes = transferred.plan, transferred.notes
    workspace = Workspace.at(work)
    remove_stale_temporaries(workspace.root)
    fingerprint_path = fingerprint.save(workspace.fingerprint)
    plans_path = result_plan.save(workspace.plans)
    return PlanResult(fingerprint, result_plan, fingerprint_path, plans_path, notes)
