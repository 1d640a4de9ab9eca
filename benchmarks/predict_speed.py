"""Inference speed on this CPU: ``nnseg predict`` vs ``nnUNetv2_predict``, same volumes, same plan, both with TTA.

Both tools get a randomly initialised network of the identical topology (nnU-Net v2's default
3d_fullres plan of the dataset, which ``nnseg plan`` reproduces; the time does not depend on
the weights): nnU-Net's PlainConvUNet written as an nnU-Net model folder, nnseg's DynUNet as
an nnseg checkpoint. Each tool predicts the same test images (mirroring on all axes, 50 %
overlap, CPU); the table gives seconds per case and the ratio. Outputs are compared as a
sanity check of the geometry only (different random weights give different labels).

    .venv/bin/python benchmarks/predict_speed.py --nnunet-python /path/to/nnunet-venv/bin/python \\
        [--cases 6] [--test-cases 3] [--shape 110,122,134]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from nnseg.api import plan
from nnseg.checkpoint import Checkpoint
from nnseg.io import read_volume
from nnseg.networks import build_network
from nnseg.synth import SynthConfig, generate_dataset

NNUNET_MODEL_SCRIPT = r"""
import json, sys, torch
from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
plans_file, dataset_json, out = sys.argv[1:4]
plans = json.load(open(plans_file))
arch = plans["configurations"]["3d_fullres"]["architecture"]
net = get_network_from_plans(arch["network_class_name"], arch["arch_kwargs"], arch["_kw_requires_import"],
                             len(json.load(open(dataset_json))["channel_names"]),
                             len(json.load(open(dataset_json))["labels"]), deep_supervision=True)
torch.save({"network_weights": net.state_dict(), "trainer_name": "nnUNetTrainer",
            "init_args": {"configuration": "3d_fullres"}, "inference_allowed_mirroring_axes": (0, 1, 2)}, out)
print(sum(p.numel() for p in net.parameters()))
"""


def timed(command: list[str], env: dict[str, str] | None = None) -> float:
    started = time.perf_counter()
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{command[0]} failed:\n{result.stderr[-3000:]}")
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nnunet-python", required=True)
    parser.add_argument("--cases", type=int, default=6)
    parser.add_argument("--test-cases", type=int, default=3)
    parser.add_argument("--shape", default="110,122,134")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="nnseg_predict_bench_"))
    raw = out / "raw"
    if not (raw / "dataset.json").is_file():
        shape = tuple(int(s) for s in args.shape.split(","))
        generate_dataset(
            raw,
            SynthConfig(num_cases=args.cases, num_test=args.test_cases, shape=shape, spacing=(1.0, 1.0, 1.0), seed=41),
            show_progress=False,
        )
    nnunet_bin = Path(args.nnunet_python).parent
    env = dict(os.environ)
    for key in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        (out / "nnunet" / key).mkdir(parents=True, exist_ok=True)
        env[key] = str(out / "nnunet" / key)
    link = out / "nnunet" / "nnUNet_raw" / "Dataset999_Bench"
    if not link.exists():
        link.symlink_to(raw.resolve())
    timed([str(nnunet_bin / "nnUNetv2_plan_and_preprocess"), "-d", "999", "--no_pp", "-npfp", "2"], env)
    plans_file = out / "nnunet" / "nnUNet_preprocessed" / "Dataset999_Bench" / "nnUNetPlans.json"
    model = out / "nnunet" / "nnUNet_results" / "Dataset999_Bench" / "nnUNetTrainer__nnUNetPlans__3d_fullres"
    (model / "fold_0").mkdir(parents=True, exist_ok=True)
    shutil.copy(plans_file, model / "plans.json")
    shutil.copy(raw / "dataset.json", model / "dataset.json")
    nnunet_params = subprocess.run(
        [
            args.nnunet_python,
            "-c",
            NNUNET_MODEL_SCRIPT,
            str(plans_file),
            str(raw / "dataset.json"),
            str(model / "fold_0" / "checkpoint_final.pth"),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()

    work = out / "nnseg_work"
    ours = plan(raw, work, preset="default", show_progress=False).plan
    config = ours.configuration("3d_fullres")
    theirs = json.loads(plans_file.read_text())["configurations"]["3d_fullres"]
    if list(config.patch_size) != theirs["patch_size"]:
        raise RuntimeError(f"plans differ: nnseg patch {config.patch_size} vs nnU-Net {theirs['patch_size']}")
    network = build_network(config.network, len(ours.channel_names), ours.num_classes)
    checkpoint = Checkpoint.for_network(ours, "3d_fullres", network).save(
        work / "models" / "3d_fullres" / "fold_0" / "checkpoint_final.pt"
    )

    test_images = raw / "imagesTs"
    n = len(list(test_images.glob("*_0000.nii.gz")))
    their_out, our_out = out / "pred_nnunet", out / "pred_nnseg"
    shutil.rmtree(their_out, ignore_errors=True)
    shutil.rmtree(our_out, ignore_errors=True)
    their_seconds = timed(
        [
            str(nnunet_bin / "nnUNetv2_predict"),
            "-i",
            str(test_images),
            "-o",
            str(their_out),
            "-d",
            "999",
            "-c",
            "3d_fullres",
            "-f",
            "0",
            "-device",
            "cpu",
            "--disable_progress_bar",
        ],
        env,
    )
    our_seconds = timed(
        [
            str(Path(sys.executable).with_name("nnseg")),
            "predict",
            "-i",
            str(test_images),
            "-o",
            str(our_out),
            "-m",
            str(checkpoint),
            "--device",
            "cpu",
        ]
    )
    for path in sorted(their_out.glob("*.nii.gz")):
        a, b = read_volume(path), read_volume(our_out / path.name)
        if a.array.shape != b.array.shape or abs(a.geometry.affine - b.geometry.affine).max() > 1e-4:
            raise RuntimeError(f"{path.name}: outputs differ in shape or geometry")
    ours_params = sum(p.numel() for p in network.parameters())
    print(
        f"{n} test cases of ~{args.shape} voxels; 3d_fullres patch {config.patch_size}, "
        f"{config.network.n_stages} stages; parameters nnU-Net {nnunet_params}, nnseg {ours_params}; CPU, TTA on"
    )
    print("| tool | total (s) | s / case |\n|---|---:|---:|")
    print(f"| nnUNetv2_predict | {their_seconds:.1f} | {their_seconds / n:.1f} |")
    print(f"| nnseg predict | {our_seconds:.1f} | {our_seconds / n:.1f} |")
    print(f"speed-up nnU-Net / nnseg: {their_seconds / our_seconds:.2f}x (includes start-up of each command)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
