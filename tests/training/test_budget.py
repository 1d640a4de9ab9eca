"""``nnseg train --time-budget``: the epochs fitted to a wall-time budget, and a run that ends on time."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from nnseg.checkpoint import Checkpoint
from nnseg.options import OptionError, duration
from nnseg.training.budget import SAFETY_FRACTION, StepTimes, TimeBudget, count_windows


def test_durations() -> None:
    assert [duration("--time-budget", v) for v in ("90s", "20m", "1.5h", "45", 30)] == [90, 1200, 5400, 45, 30]
    for bad in ("0m", "-3", "ten minutes", "nan"):
        with pytest.raises(OptionError, match="--time-budget must be a"):
            duration("--time-budget", bad)


def test_window_count_matches_the_sliding_window() -> None:
    from nnseg.inference.sliding_window import window_starts

    for shape, patch in [((50, 47, 45), (48, 48, 48)), ((130, 90, 60), (64, 48, 32)), ((20, 300), (16, 64))]:
        starts = window_starts(shape, patch, 0.5)
        expected = 1
        for axis in starts:
            expected *= len(axis)
        assert count_windows(shape, patch) == expected


def test_fit_uses_the_probe_then_the_measured_epochs() -> None:
    times = StepTimes(train_step_s=0.5, eval_forward_s=0.1)
    budget = TimeBudget.from_probe(
        120,
        times,
        iters_per_epoch=10,
        val_iters=3,
        validation_shapes=[(40, 40, 40)] * 2,
        patch_size=(32, 32, 32),
        mirrors=8,
        max_epochs=1000,
    )
    assert budget.epoch_estimate_s == pytest.approx(5.5)
    assert budget.final_reserve_s == pytest.approx(2 * 8 * 8 * 0.1 + 2 * 0.5)
    first = budget.fit(elapsed_s=3.0, epochs_done=0)
    assert first == int((120 * (1 - SAFETY_FRACTION) - 3 - budget.final_reserve_s) // 5.5)
    # the machine turns out twice as slow: fewer epochs, never fewer than already done
    assert budget.fit(elapsed_s=40.0, epochs_done=4, measured_epoch_s=[12, 11, 11, 11]) == 4 + int(
        (120 * (1 - SAFETY_FRACTION) - 40 - budget.final_reserve_s) // 11
    )
    assert budget.fit(elapsed_s=500.0, epochs_done=9, measured_epoch_s=[11] * 9) == 9
    assert TimeBudget(1e6, 0, 1.0, max_epochs=7).fit(0, 0) == 7  # --epochs caps the fit


def test_a_two_minute_budget_ends_on_time_with_checkpoint_and_validation(preprocessed_work: Path) -> None:
    """The Done-when of the time budget: within 10 % of 2 minutes, final checkpoint and validation written."""
    command = [sys.executable, "-m", "nnseg", "train", "--work", str(preprocessed_work), "--device", "cpu"]
    command += ["--time-budget", "2m", "--iters-per-epoch", "10", "--val-iters", "2"]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    seconds = time.perf_counter() - started
    assert done.returncode == 0, done.stderr[-2000:]
    assert "time budget 2 min" in done.stdout
    assert 108 <= seconds <= 132, seconds
    fold = preprocessed_work / "models" / "3d_fullres" / "fold_0"
    final = Checkpoint.load(fold / "checkpoint_final.pt")
    assert final.finished and final.epochs_trained > 1
    assert (fold / "validation" / "summary.json").is_file()
    # the MLflow run (embedded store) records the budget and the fitted length
    from mlflow.tracking import MlflowClient

    from nnseg.tracking import default_tracking_uri

    client = MlflowClient(tracking_uri=default_tracking_uri(preprocessed_work))
    (run,) = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert float(run.data.params["trainer.time_budget"]) == 120.0
    assert int(run.data.params["planned_epochs"]) >= 1 and run.data.params["recipe.name"] == "small_budget"
    fitted = client.get_metric_history(run.info.run_id, "planned_epochs")
    assert fitted[-1].value == final.epochs_trained
