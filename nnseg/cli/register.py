"""``nnseg register``: a trained model (every fold) into the MLflow model registry as one pyfunc model."""

from __future__ import annotations

import argparse
from pathlib import Path

from nnseg.cli.common import EXIT_OK, add_trained_model_options


def add_register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "register",
        help="register a trained model in the MLflow model registry",
        description="Log every fold of a trained configuration, its plan, labels and postprocessing "
        "(inference.json) as one MLflow pyfunc model and register it as a new version of --name. "
        "Load it with mlflow.pyfunc.load_model('models:/NAME/VERSION') (needs nnseg installed) or "
        "predict with nnseg predict -m models:/NAME/VERSION (or models:/NAME@ALIAS).",
    )
    p.add_argument(
        "-m", "--model", type=Path, required=True, help="work folder, models/<config> folder, fold folder or checkpoint"
    )
    p.add_argument("--name", required=True, help="registered model name")
    p.add_argument(
        "--tracking-uri",
        default=None,
        help="MLflow tracking/registry URI (default: MLFLOW_TRACKING_URI, else the work folder's mlflow.db)",
    )
    add_trained_model_options(p, "folds to include (default: every trained fold)")
    p.add_argument("--alias", default=None, help="also point this alias (e.g. champion) at the new version")
    p.add_argument("--experiment", default=None, help="experiment of the logged model (default: the dataset name)")
    p.set_defaults(handler=_run_register)


def _run_register(args: argparse.Namespace) -> int:
    from nnseg.deploy.registry import register_model

    name, version = register_model(
        args.model,
        args.name,
        tracking_uri=args.tracking_uri,
        configuration=args.config,
        folds=args.folds,
        alias=args.alias,
        experiment=args.experiment,
    )
    alias = f" (alias {args.alias}: models:/{name}@{args.alias})" if args.alias else ""
    print(f"registered {name} version {version}: models:/{name}/{version}{alias}")
    return EXIT_OK
