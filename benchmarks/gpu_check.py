"""The CUDA paths on a real GPU, nnseg against nnU-Net v2 at the same plan (run by ``benchmarks/gpu_check.sh``).

One CT phantom dataset; nnU-Net's default 3d_fullres plan (``nnseg plan`` reproduces it; checked). Then:

1. training, CUDA, mixed precision (nnseg: autocast + GradScaler; nnU-Net: its own AMP): the same
   ``--epochs`` x ``--iters`` iterations each (nnU-Net through a schedule-only trainer subclass, its
   ``torch.compile`` off so both run eager); the iteration time is the last epoch's time (5 validation
   iterations included, as both do) over ``--iters``; peak GPU memory is ``torch.cuda.max_memory_allocated``
   of each trainer's process;
2. prediction of the held-out cases with TTA (all mirror axes), whole command, seconds per case, and the
   Dice of each tool's model on their labels (a sanity check: a few iterations only);
3. nnseg training under ``torchrun`` (NCCL, one process) for one short epoch: the distributed path runs.

Writes ``gpu_check.md`` (the table) and ``gpu_check.json`` into ``--out``.

    python3 benchmarks/gpu_check.py --out $OUT [--device cuda] [--nnunet-python python3]
    # on this CPU, to try the script itself:  --device cpu --shape 32,40,40 --iters 2 --epochs 2 \\
    #     --nnunet-python /tmp/nnunet-venv/bin/python
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _nnunet import install_trainer, nnunet_env  # noqa: E402

from nnseg.api import plan
from nnseg.evaluation import evaluate_folders
from nnseg.preprocessing.preprocess import preprocess_dataset
from nnseg.synth import SynthConfig, generate_dataset
from nnseg.training.config import TrainConfig
from nnseg.training.loop import Trainer

DATASET_ID = 997
DATASET = f"Dataset{DATASET_ID}_GpuCheck"


def run(command: list[str], env: dict[str, str] | None = None) -> tuple[float, str]:
    """(seconds, stdout) of a command that must succeed."""
    print("$", " ".join(command), flush=True)
    started = time.perf_counter()
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}")
    return time.perf_counter() - started, result.stdout


def nnunet_entry(python: str, module: str, function: str, *args: str) -> list[str]:
    """An nnU-Net console entry point through ``python`` (no console scripts needed)."""
    code = f"import sys; from {module} import {function} as f; sys.argv = ['nnunet'] + sys.argv[1:]; f()"
    return [python, "-c", code, *args]


def dice(predictions: Path, raw: Path) -> float:
    labels = json.loads((raw / "dataset.json").read_text())["labels"]
    summary = evaluate_folders(
        predictions, raw / "labelsTs", {k: v for k, v in labels.items() if v}, show_progress=False
    )
    return float(summary.mean_dice)


def nnunet_side(out: Path, raw: Path, args: argparse.Namespace) -> dict[str, float]:
    env = nnunet_env(out, augmentation_workers=max(1, (os.cpu_count() or 2) - 2))
    theirs = out / "nnunet" / "nnUNet_raw" / DATASET
    theirs.mkdir(parents=True, exist_ok=True)
    for folder in ("imagesTr", "labelsTr"):
        if not (theirs / folder).exists():
            (theirs / folder).symlink_to((raw / folder).resolve())
    dataset = json.loads((raw / "dataset.json").read_text())
    dataset["overwrite_image_reader_writer"] = "NibabelIO"  # this check carries no SimpleITK to the GPU machine
    (theirs / "dataset.json").write_text(json.dumps(dataset, indent=2))
    name = install_trainer(args.nnunet_python, "nnUNetTrainer_nnsegGpu", args.epochs, args.iters)
    py = args.nnunet_python
    run(
        nnunet_entry(
            py,
            "nnunetv2.experiment_planning.plan_and_preprocess_entrypoints",
            "plan_and_preprocess_entry",
            *("-d", str(DATASET_ID), "-c", "3d_fullres", "-np", "8"),
        ),
        env,
    )
    train_seconds, stdout = run(
        nnunet_entry(
            py,
            "nnunetv2.run.run_training",
            "run_training_entry",
            *(str(DATASET_ID), "3d_fullres", "0", "-tr", name, "-device", args.device),
        ),
        env,
    )
    epoch_times = [float(t) for t in re.findall(r"Epoch time: ([0-9.]+) s", stdout)]
    peak = re.search(r"NNSEG_PEAK_GPU_BYTES (\d+)", stdout)
    predicted = out / "pred_nnunet"
    shutil.rmtree(predicted, ignore_errors=True)
    predict_seconds, _ = run(
        nnunet_entry(
            py,
            "nnunetv2.inference.predict_from_raw_data",
            "predict_entry_point",
            *("-i", str(raw / "imagesTs"), "-o", str(predicted), "-d", str(DATASET_ID), "-c", "3d_fullres"),
            *("-f", "0", "-tr", name, "-device", args.device, "--disable_progress_bar"),
        ),
        env,
    )
    return {
        "iteration_s": epoch_times[-1] / args.iters if epoch_times else float("nan"),
        "train_s": train_seconds,
        "peak_gpu_gib": int(peak.group(1)) / 2**30 if peak else float("nan"),
        "predict_s": predict_seconds,
        "dice": dice(predicted, raw),
    }


def nnseg_side(out: Path, raw: Path, args: argparse.Namespace) -> dict[str, float]:
    work = out / "nnseg_work"
    if not (work / "plans.json").is_file():
        plan(raw, work, preset="default", show_progress=False)
    preprocess_dataset(work, configurations=["3d_fullres"], show_progress=False)
    config = TrainConfig(
        fold=0, epochs=args.epochs, iters_per_epoch=args.iters, val_iters=5, device=args.device, tracking=False
    )
    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    trainer = Trainer(work, config, resume=False, show_progress=False)
    trainer.run()
    train_seconds = time.perf_counter() - started
    peak = torch.cuda.max_memory_allocated() / 2**30 if args.device.startswith("cuda") else float("nan")
    predicted = out / "pred_nnseg"
    shutil.rmtree(predicted, ignore_errors=True)
    predict_seconds, _ = run(
        [sys.executable, "-m", "nnseg", "predict", "-m", str(work), "-i", str(raw / "imagesTs"), "-o", str(predicted)]
        + ["-f", "0", "--device", args.device, "--tta", "full"]
    )
    return {
        "iteration_s": trainer.history[-1]["epoch_time_s"] / args.iters,
        "train_s": train_seconds,
        "peak_gpu_gib": peak,
        "predict_s": predict_seconds,
        "dice": dice(predicted, raw),
    }


def distributed_side(out: Path, args: argparse.Namespace) -> float:
    """One short epoch of nnseg under torchrun (NCCL on CUDA, gloo on CPU); seconds."""
    seconds, _ = run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1"]
        + ["-m", "nnseg", "train", "--work", str(out / "nnseg_work"), "--fold", "1", "--epochs", "1"]
        + ["--iters-per-epoch", "5", "--val-iters", "2", "--device", args.device, "--no-tracking"]
        + ["--no-final-validation"]
    )
    return seconds


def check_same_plan(out: Path) -> str:
    theirs = json.loads((out / "nnunet" / "nnUNet_preprocessed" / DATASET / "nnUNetPlans.json").read_text())
    config = theirs["configurations"]["3d_fullres"]
    ours = json.loads((out / "nnseg_work" / "plans.json").read_text())["configurations"]["3d_fullres"]
    if ours["patch_size"] != config["patch_size"] or ours["batch_size"] != config["batch_size"]:
        raise RuntimeError(f"plans differ: nnseg {ours['patch_size']} x {ours['batch_size']}, nnU-Net {config}")
    features = config["architecture"]["arch_kwargs"]["features_per_stage"]
    return f"patch {config['patch_size']}, batch {config['batch_size']}, features {features[0]}..{features[-1]}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--nnunet-python", default=sys.executable)
    parser.add_argument("--shape", default="96,128,128")
    parser.add_argument("--cases", type=int, default=8)
    parser.add_argument("--test-cases", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--iters", type=int, default=50)
    args = parser.parse_args()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    raw = out / "raw"
    if not (raw / "dataset.json").is_file():
        shape = tuple(int(s) for s in args.shape.split(","))
        config = SynthConfig(num_cases=args.cases, num_test=args.test_cases, shape=shape, seed=7)  # type: ignore[arg-type]
        generate_dataset(raw, config, show_progress=False)
    device = torch.cuda.get_device_name(0) if args.device.startswith("cuda") else "CPU"
    results: dict[str, object] = {"device": device, "torch": torch.__version__, "budget": f"{args.epochs}x{args.iters}"}
    rows = {"nnseg": nnseg_side(out, raw, args), "nnU-Net": nnunet_side(out, raw, args)}
    results["plan"] = check_same_plan(out)
    results["rows"] = rows
    results["torchrun_seconds"] = distributed_side(out, args)
    cases = args.test_cases
    lines = [
        f"{device}, torch {torch.__version__}; nnU-Net's default 3d_fullres plan ({results['plan']}); "
        f"{args.epochs} x {args.iters} iterations, AMP; predicting {cases} held-out cases with TTA",
        "",
        "| tool | s / iteration | peak GPU memory (GiB) | predict s / case (whole command) | Dice (sanity) |",
        "|---|---:|---:|---:|---:|",
    ]
    for tool, row in rows.items():
        lines.append(
            f"| {tool} | {row['iteration_s']:.3f} | {row['peak_gpu_gib']:.2f} | {row['predict_s'] / cases:.2f} "
            f"| {row['dice']:.3f} |"
        )
    torchrun = results["torchrun_seconds"]
    lines.append(f"\nnnseg under torchrun (one process, one epoch of 5 iterations): {torchrun:.1f} s")
    table = "\n".join(lines)
    print(table)
    (out / "gpu_check.md").write_text(table + "\n")
    (out / "gpu_check.json").write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
