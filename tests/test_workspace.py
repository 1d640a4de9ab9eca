"""Workspace is the only code that spells the work folder's file and folder names."""

from __future__ import annotations

import ast
from pathlib import Path

import nnseg
from nnseg.workspace import FoldPaths, Workspace, fold_folders

ARTIFACT_NAMES = {
    "fingerprint.json",
    "plans.json",
    "splits.json",
    "check_report.json",
    "inference.json",
    "mlflow.db",
    "mlartifacts",
    "preprocessed",
    "models",
    "checkpoint_latest.pt",
    "checkpoint_best.pt",
    "checkpoint_final.pt",
    "curves.png",
    "validation",
    "summary.json",
    "tracking_fallback.jsonl",
    "predicted_next_stage",
    "fold_",
    "fold_all",
    "fold_*",
    "fold_[0-9]*",
}


def _string_constants(tree: ast.AST) -> list[tuple[int, str]]:
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    return [
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
    ]


def test_no_module_but_workspace_spells_an_artifact_name() -> None:
    package = Path(nnseg.__file__).parent
    offenders = []
    for path in sorted(package.rglob("*.py")):
        if path.name == "workspace.py":
            continue
        for line, text in _string_constants(ast.parse(path.read_text())):
            if text.strip("/") in ARTIFACT_NAMES:
                offenders.append(f"{path.relative_to(package)}:{line}: {text!r}")
    assert offenders == []


def test_the_check_itself_finds_a_spelled_name() -> None:
    tree = ast.parse('"""plans.json in a docstring is fine."""\nPATH = root / "plans.json"\n')
    assert [text for _, text in _string_constants(tree)] == ["plans.json"]


def test_fold_folders_keep_fold_all_apart(tmp_path: Path) -> None:
    models = Workspace(tmp_path).models("3d_fullres")
    for fold in ("0", "1", "all"):
        (models / f"fold_{fold}").mkdir(parents=True)
    assert [f.root.name for f in fold_folders(models)] == ["fold_0", "fold_1", "fold_all"]
    assert [f.root.name for f in fold_folders(models, cross_validation_only=True)] == ["fold_0", "fold_1"]
    assert FoldPaths(models / "fold_all").is_all and not FoldPaths(models / "fold_0").is_all
    assert Workspace.containing(models / "fold_0") is None
    (tmp_path / "plans.json").write_text("{}")
    assert Workspace.containing(models / "fold_0") == Workspace(tmp_path)
