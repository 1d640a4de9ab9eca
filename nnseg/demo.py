"""The end-to-end demo behind ``make demo``: every stage on phantom data, in minutes on a CPU.

synth -> check -> plan (preset cpu) -> preprocess -> train (a short CPU budget) ->
predict the held-out test cases -> evaluate against their labels, printing a Dice table
and where the MLflow store is.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from nnseg.api import plan
from nnseg.dataset import check_dataset
from nnseg.evaluation import evaluate_folders
from nnseg.inference.batch import predict_folder
from nnseg.inference.model import open_model
from nnseg.planning.summary import plan_summary
from nnseg.preprocessing.preprocess import preprocess_dataset
from nnseg.synth import SynthConfig, generate_dataset
from nnseg.tracking import default_tracking_uri, ui_hint
from nnseg.training.config import TrainConfig
from nnseg.training.loop import train


def run_demo(
    out: str | Path,
    *,
    num_cases: int = 10,
    num_test: int = 3,
    epochs: int = 12,
    iters_per_epoch: int = 25,
    seed: int = 0,
    device: str = "auto",
) -> bool:
    """Run every stage in ``out``; print each stage's result; True when all succeeded."""
    out = Path(out)
    raw, work, predictions = out / "raw", out / "work", out / "predictions"
    started = time.perf_counter()
    if (raw / "dataset.json").is_file():
        print(f"[synth] reusing phantom dataset {raw}")
    else:
        generate_dataset(raw, SynthConfig(num_cases=num_cases, num_test=num_test, seed=seed), show_progress=False)
        print(f"[synth] wrote {num_cases} training + {num_test} test phantom cases to {raw}")
    report = check_dataset(raw, show_progress=False)
    print(f"[check] {report.summary().splitlines()[-1]}")
    if not report.ok:
        print(report.summary())
        return False
    planned = plan(raw, work, preset="cpu", show_progress=False)
    print(f"[plan] wrote {planned.fingerprint_path} and {planned.plans_path} (preset 'cpu'):")
    print(plan_summary(planned.plan))
    for done in preprocess_dataset(work, configurations=["3d_fullres"], show_progress=False):
        print(f"[preprocess] {done.configuration}: {done.processed} written, {done.skipped} already done")
    print(
        f"[train] 3d_fullres fold 0: {epochs} epochs x {iters_per_epoch} iterations (a demo budget; "
        "nnU-Net's default is 1000 x 250)"
    )
    result = train(
        work,
        TrainConfig(fold=0, epochs=epochs, iters_per_epoch=iters_per_epoch, device=device),
        show_progress=True,
    )
    if result.validation is not None:
        print(f"[train] fold 0 validation mean Dice {result.validation['mean_dice']:.4f}")
    predictor = open_model(work, "3d_fullres").predictor(device=device)
    predicted = predict_folder(
        predictor, raw / "imagesTs", predictions, overwrite=True, overlay=True, show_progress=False
    )
    print(f"[predict] {len(predicted.written)} test case(s) -> {predictions} ({predictor.times.summary()})")
    if predicted.failed:
        print(f"[predict] failed: {predicted.failed}")
        return False
    summary = evaluate_folders(
        predictions, raw / "labelsTs", {k: v for k, v in planned.plan.labels.items() if v}, show_progress=False
    )
    summary.write(predictions)
    print("[evaluate] test-set Dice:")
    print(summary.table())
    uri = default_tracking_uri(work)
    tools = Path(sys.executable).parent  # nnseg and mlflow are installed beside this interpreter (the venv)
    hint = ui_hint(uri)
    if (tools / "mlflow").is_file():
        hint = f"{tools / 'mlflow'}{hint.removeprefix('mlflow')}"
    print(f"[mlflow] runs are in {uri}\n         open the UI with: {hint}")
    print(f"demo finished in {time.perf_counter() - started:.0f} s; outputs under {out.resolve()}")
    if (tools / "nnseg").is_file():
        print(f"the nnseg command is {tools / 'nnseg'}; `source {tools / 'activate'}` puts nnseg and mlflow on PATH")
    return True
