"""The nnseg command: exit codes, help, and the demo."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from nnseg.cli import main


def test_no_command_prints_help_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "check" in capsys.readouterr().out


def test_console_script_runs_as_module(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "nnseg", "check", str(tmp_path / "missing")], capture_output=True, text=True, check=False
    )
    assert result.returncode == 2
    assert "dataset folder not found" in result.stdout


def test_demo_runs_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The README's main command, with a tiny training budget."""
    assert (
        main(
            [
                "demo",
                "--out",
                str(tmp_path / "demo"),
                "--cases",
                "4",
                "--epochs",
                "1",
                "--iters-per-epoch",
                "2",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    for stage in (
        "[synth]",
        "[check] OK",
        "[plan] wrote",
        "[preprocess]",
        "[train]",
        "[predict] 3 test case(s)",
        "[evaluate] test-set Dice",
        "[mlflow] runs are in sqlite:///",
    ):
        assert stage in out, stage
    assert "mean Dice" in out
    assert (tmp_path / "demo" / "predictions" / "metrics.json").is_file()
    assert (tmp_path / "demo" / "work" / "mlflow.db").is_file()
