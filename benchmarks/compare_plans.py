"""Compare nnseg's default plans with nnU-Net v2's on the same synthetic datasets.

Writes phantom datasets with ``nnseg synth`` (isotropic CT, anisotropic MR, 2-channel MR,
large CT that calls for 3d_lowres), plans each with ``nnseg plan`` (preset default) and
with nnU-Net v2 (``benchmarks/nnunet_reference_plans.py`` run by the Python of a venv
where nnunetv2 is installed), and prints a table of the fields that must agree:
target spacing (relative 1e-3), transpose, normalization per channel, patch size,
strides (pooling per axis), kernel sizes, batch size, batch dice, and which
configurations exist.

    .venv/bin/python benchmarks/compare_plans.py --nnunet-python /path/to/nnunet-venv/bin/python \\
        [--preset default|resenc_m|resenc_l] [--out /tmp/nnseg_compare] [--sets ct_iso,mr_aniso,...]

``--preset resenc_m`` / ``resenc_l`` compares with nnU-Net's nnUNetPlannerResEncM / L (the residual-encoder
presets); the network's widths, encoder blocks and decoder convolutions per stage are compared too.

Without ``--nnunet-python`` it only plans with nnseg and prints nnseg's side.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from nnseg.api import plan
from nnseg.networks.plans import ResEncUNetPlan, UNetPlan
from nnseg.synth import SynthConfig, generate_dataset

DATASETS: dict[str, SynthConfig] = {
    "ct_iso": SynthConfig(num_cases=12, shape=(110, 122, 134), spacing=(1.0, 1.0, 1.0), modality="CT", seed=11),
    "mr_aniso": SynthConfig(
        num_cases=12, shape=(120, 192, 192), spacing=(1.2, 0.8, 0.8), modality="MR", anisotropic=True, seed=12
    ),
    "mr_2ch": SynthConfig(
        num_cases=10, shape=(96, 128, 112), spacing=(1.1, 0.9, 0.9), modality="MR", channels=2, seed=13
    ),
    # thick slices along the last array axis: the planner must transpose it to the front
    "mr_thick_x": SynthConfig(num_cases=10, shape=(160, 160, 36), spacing=(0.8, 0.8, 4.0), modality="MR", seed=15),
    "ct_large": SynthConfig(num_cases=5, shape=(256, 384, 384), spacing=(1.0, 0.8, 0.8), modality="CT", seed=14),
}
NNUNET_SCHEMES = {
    "CTNormalization": "ct",
    "ZScoreNormalization": "zscore",
    "NoNormalization": "none",
    "RescaleTo01Normalization": "rescale_to_0_1",
    "RGBTo01Normalization": "rgb_to_0_1",
}
HERE = Path(__file__).resolve().parent


#: nnseg preset -> the nnU-Net 2.8.1 planner class it reproduces
NNUNET_PLANNERS = {
    "default": "ExperimentPlanner",
    "resenc_m": "nnUNetPlannerResEncM",
    "resenc_l": "nnUNetPlannerResEncL",
}


def nnseg_side(raw: Path, work: Path, preset: str) -> tuple[dict, float]:
    started = time.perf_counter()
    result = plan(raw, work, preset=preset, workers=2, show_progress=False)
    seconds = time.perf_counter() - started
    configs = {}
    for name, config in result.plan.configurations.items():
        network = config.network
        if not isinstance(network, (UNetPlan, ResEncUNetPlan)):
            raise SystemExit(f"nnU-Net plans only U-Nets; preset {preset!r} planned a {network.architecture}")
        configs[name] = {
            "spacing": list(config.spacing),
            "patch_size": list(config.patch_size),
            "strides": [list(s) for s in config.network.strides],
            "kernels": [list(k) for k in config.network.kernel_sizes],
            "batch_size": config.batch_size,
            "batch_dice": config.batch_dice,
            "normalization": [n.scheme for n in config.normalization],
            "use_mask": [n.use_nonzero_mask for n in config.normalization],
            "features": list(config.network.features_per_stage),
            "encoder_blocks": list(
                network.n_blocks_per_stage if isinstance(network, ResEncUNetPlan) else network.n_conv_per_stage
            ),
            "decoder_convs": list(network.n_conv_per_stage_decoder),
        }
    return {"transpose": list(result.plan.transpose_forward), "configurations": configs}, seconds


def nnunet_side(raw: Path, out: Path, python: str, preset: str) -> tuple[dict, float]:
    started = time.perf_counter()
    planner = NNUNET_PLANNERS[preset]
    subprocess.run(
        [python, str(HERE / "nnunet_reference_plans.py"), str(raw), str(out), "--np", "2", "--planner", planner],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    seconds = time.perf_counter() - started
    summary = json.loads(out.read_text())
    configs = {}
    for name, config in summary["configurations"].items():
        if "patch_size" not in config:
            continue  # 3d_cascade_fullres only points at 3d_fullres
        configs[name] = {
            "spacing": config["spacing"],
            "patch_size": config["patch_size"],
            "strides": config["pool_op_kernel_sizes"],
            "kernels": config["conv_kernel_sizes"],
            "batch_size": config["batch_size"],
            "batch_dice": config["batch_dice"],
            "normalization": [NNUNET_SCHEMES[s] for s in config["normalization_schemes"]],
            "use_mask": config["use_mask_for_norm"],
            "features": config["features_per_stage"],
            "encoder_blocks": config["n_conv_per_stage"],
            "decoder_convs": config["n_conv_per_stage_decoder"],
        }
    return {"transpose": summary["transpose_forward"], "configurations": configs}, seconds


def compare(ours: dict, theirs: dict) -> list[tuple[str, str, str, str, bool]]:
    """Rows (config, field, nnseg, nnU-Net, agree)."""
    rows = [
        ("-", "transpose", str(ours["transpose"]), str(theirs["transpose"]), ours["transpose"] == theirs["transpose"])
    ]
    names = sorted(set(ours["configurations"]) | set(theirs["configurations"]))
    for name in names:
        a, b = ours["configurations"].get(name), theirs["configurations"].get(name)
        if a is None or b is None:
            rows.append((name, "exists", str(a is not None), str(b is not None), False))
            continue
        spacing_ok = np.allclose(a["spacing"], b["spacing"], rtol=1e-3, atol=0)
        rows.append((name, "spacing", _fmt(a["spacing"]), _fmt(b["spacing"]), bool(spacing_ok)))
        fields = ("patch_size", "strides", "kernels", "batch_size", "batch_dice", "normalization", "use_mask")
        for field in (*fields, "features", "encoder_blocks", "decoder_convs"):
            rows.append((name, field, _compact(a[field]), _compact(b[field]), a[field] == b[field]))
    return rows


def _fmt(values) -> str:
    return "[" + ", ".join(f"{v:.4g}" for v in values) + "]"


def _compact(value) -> str:
    text = json.dumps(value).replace(" ", "")
    if text.startswith("[[") and len(text) > 40:  # strides/kernels: show only the per-stage count and first/last
        return f"{len(value)} stages {json.dumps(value[0]).replace(' ', '')}..{json.dumps(value[-1]).replace(' ', '')}"
    return text


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nnunet-python", default=None, help="python of a venv with nnunetv2 installed")
    parser.add_argument("--preset", choices=list(NNUNET_PLANNERS), default="default")
    parser.add_argument("--out", type=Path, default=Path("/tmp/nnseg_compare_plans"))
    parser.add_argument("--sets", default=",".join(DATASETS), help=f"comma-separated subset of {list(DATASETS)}")
    args = parser.parse_args()
    all_agree = True
    for key in args.sets.split(","):
        raw = args.out / key / "raw"
        if not (raw / "dataset.json").is_file():
            generate_dataset(raw, DATASETS[key], show_progress=False)
        ours, our_seconds = nnseg_side(raw, args.out / key / f"nnseg_work_{args.preset}", args.preset)
        print(f"\n## {key} ({args.preset}): {DATASETS[key].num_cases} cases; nnseg plan {our_seconds:.1f} s", end="")
        if not args.nnunet_python:
            print("\n" + json.dumps(ours, indent=1))
            continue
        theirs, their_seconds = nnunet_side(
            raw, args.out / key / f"nnunet_{args.preset}.json", args.nnunet_python, args.preset
        )
        print(f", nnU-Net fingerprint+plan {their_seconds:.1f} s")
        rows = compare(ours, theirs)
        widths = [max(len(str(r[i])) for r in rows) for i in range(4)]
        print(
            f"| {'config':<{widths[0]}} | {'field':<{widths[1]}} | {'nnseg':<{widths[2]}} | "
            f"{'nnU-Net 2.8.1':<{widths[3]}} | agree |"
        )
        print(
            f"|{'-' * (widths[0] + 2)}|{'-' * (widths[1] + 2)}|{'-' * (widths[2] + 2)}|{'-' * (widths[3] + 2)}|-------|"
        )
        for config, field, a, b, ok in rows:
            print(
                f"| {config:<{widths[0]}} | {field:<{widths[1]}} | {a:<{widths[2]}} | {b:<{widths[3]}} | "
                f"{'yes' if ok else 'NO':<5} |"
            )
            all_agree &= ok
    if args.nnunet_python:
        print("\nALL FIELDS AGREE" if all_agree else "\nSOME FIELDS DIFFER")
    return 0 if all_agree else 1


if __name__ == "__main__":
    sys.exit(main())
