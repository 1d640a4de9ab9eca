"""TrainConfig is the one source of ``nnseg train``'s option names, defaults, help and checks."""

from __future__ import annotations

import argparse
from dataclasses import fields

import pytest

from nnseg.cli import build_parser
from nnseg.inference.config import PredictConfig
from nnseg.options import OptionError, config_from_args, flags_of
from nnseg.training.config import TrainConfig


def _subparser(name: str) -> argparse.ArgumentParser:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices[name]


@pytest.mark.parametrize(
    "command, config_type, required",
    [
        ("train", TrainConfig, []),
        ("predict", PredictConfig, ["-i", "x", "-o", "y", "-m", "z"]),
    ],
)
def test_cli_defaults_and_help_come_from_the_config(command: str, config_type: type, required: list[str]) -> None:
    parser = _subparser(command)
    assert config_from_args(config_type, parser.parse_args(required)) == config_type()
    text = parser.format_help().replace("\n", " ")
    text = " ".join(text.split())
    for item in fields(config_type):
        assert any(flag in text for flag in flags_of(item)), item.name
        if item.default not in (None, True, False):
            shown = f"{item.default:.4g}" if isinstance(item.default, float) else str(item.default)
            assert f"(default {shown})" in text, item.name


def test_every_option_reaches_the_config() -> None:
    args = _subparser("train").parse_args(
        [
            "--config",
            "2d",
            "--fold",
            "all",
            "--epochs",
            "3",
            "--lr",
            "0.1",
            "--no-amp",
            "--no-deep-supervision",
            "--max-hours",
            "0.5",
            "--no-tracking",
            "--momentum",
            "0.9",
        ]
    )
    config = config_from_args(TrainConfig, args)
    assert (config.configuration, config.fold, config.epochs, config.initial_lr) == ("2d", "all", 3, 0.1)
    assert not config.mixed_precision and not config.deep_supervision and not config.tracking
    assert config.max_wall_time_s == 1800 and config.momentum == 0.9
    predict = config_from_args(
        PredictConfig,
        _subparser("predict").parse_args(
            ["-i", "x", "-o", "y", "-m", "z", "-f", "0", "all", "--no-tta", "--step-size", "0.25"]
        ),
    )
    assert predict.folds == (0, "all") and not predict.mirror and predict.step_size == 0.25


@pytest.mark.parametrize(
    "values",
    [
        {"epochs": 0},
        {"initial_lr": float("nan")},
        {"fold": -1},
        {"device": "gpu"},
        {"max_hours": -1.0},
        {"batch_size": 0},
    ],
)
def test_the_python_api_applies_the_same_checks(values: dict) -> None:
    with pytest.raises(OptionError):
        TrainConfig(**values)


def test_predict_config_checks_each_fold() -> None:
    with pytest.raises(OptionError, match="folds"):
        PredictConfig(folds=(0, -2))


def test_python_values_are_converted_as_on_the_command_line() -> None:
    config = TrainConfig(time_budget="20m", head_bias_prior="no", fold="all")
    assert (config.time_budget, config.head_bias_prior, config.fold) == (1200.0, False, "all")
