"""Deep supervision: heads at their own resolution with downsampled targets (nnU-Net, nnseg now) vs heads
upsampled to the patch (MONAI DynUNet's default, nnseg before). Same data, plan, seed and iterations.

    .venv/bin/python benchmarks/deep_supervision.py [--cases 20] [--epochs 20] [--iters 25] [--out /tmp/nnseg_ds]

Prints per variant: seconds per training step (mean over the run, validation excluded) and the final
sliding-window validation Dice per class on fold 0's held-out cases; then a paired step-time comparison
(forward + loss + backward, alternating variants in one process) at a larger patch with more classes.
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

import torch
from monai.networks.nets import DynUNet

import nnseg
from nnseg.networks import unet
from nnseg.preprocessing.preprocess import preprocess_dataset
from nnseg.synth import SynthConfig, generate_dataset
from nnseg.training.config import TrainConfig
from nnseg.training.loop import Trainer, train


def _upsampled_heads(self: unet.PlainUNet, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
    """The old behaviour: DynUNet stacks its heads upsampled (nearest) to the patch; the target stays full size."""
    out = DynUNet.forward(self, x)
    if self.training and self.deep_supervision:
        return list(out.unbind(dim=1))
    return out


def _run(work: Path, args: argparse.Namespace, name: str) -> dict:
    step_times: list[float] = []
    original_step = Trainer.train_step

    def timed_step(trainer: Trainer, batch) -> float:
        started = time.perf_counter()
        loss = original_step(trainer, batch)
        step_times.append(time.perf_counter() - started)
        return loss

    Trainer.train_step = timed_step  # type: ignore[method-assign]
    try:
        config = TrainConfig(
            fold=0,
            epochs=args.epochs,
            iters_per_epoch=args.iters,
            val_iters=args.val_iters,
            device="cpu",
            tracking=False,
            experiment=name,
        )
        result = train(work, config, resume=False, show_progress=False)
    finally:
        Trainer.train_step = original_step  # type: ignore[method-assign]
    validation = result.validation or {}
    return {
        "step_s": sum(step_times) / len(step_times),
        **validation.get("mean_dice_per_class", {}),
        "mean": validation.get("mean_dice", float("nan")),
    }


def paired_step_times(edge: int, classes: int, rounds: int) -> dict[str, float]:
    """Median seconds of forward + loss + backward per variant, alternating, for a 5-stage U-Net at ``edge``^3."""
    from nnseg.networks import build_network
    from nnseg.networks.plans import UNetPlan
    from nnseg.training.losses import SegmentationLoss

    n = 5
    plan = UNetPlan(
        n_stages=n,
        features_per_stage=(16, 32, 64, 128, 128),
        kernel_sizes=((3, 3, 3),) * n,
        strides=((1, 1, 1),) + ((2, 2, 2),) * (n - 1),
        n_conv_per_stage=(2,) * n,
        n_conv_per_stage_decoder=(2,) * (n - 1),
    )
    torch.manual_seed(0)
    net = build_network(plan, 1, classes).train()
    loss = SegmentationLoss(batch_dice=False)
    x, y = torch.randn(2, 1, edge, edge, edge), torch.randint(0, classes, (2, 1, edge, edge, edge))
    original = unet.PlainUNet.forward
    times: dict[str, list[float]] = {"downsampled": [], "upsampled": []}
    try:
        for _ in range(rounds):
            for name in times:
                unet.PlainUNet.forward = original if name == "downsampled" else _upsampled_heads  # type: ignore[method-assign]
                started = time.perf_counter()
                loss(net(x), y).backward()
                net.zero_grad()
                times[name].append(time.perf_counter() - started)
    finally:
        unet.PlainUNet.forward = original  # type: ignore[method-assign]
    return {name: sorted(values)[len(values) // 2] for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=20)
    parser.add_argument("--shape", default="40,48,48")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--iters", type=int, default=25)
    parser.add_argument("--val-iters", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("/tmp/nnseg_ds"))
    parser.add_argument("--paired-edge", type=int, default=96, help="patch edge of the paired step-time check")
    parser.add_argument("--paired-classes", type=int, default=14)
    parser.add_argument("--paired-rounds", type=int, default=4)
    parser.add_argument("--skip-training", action="store_true", help="only the paired step-time check")
    args = parser.parse_args()
    if not args.skip_training:
        _training_table(args)
    paired = paired_step_times(args.paired_edge, args.paired_classes, args.paired_rounds)
    print(
        f"\npaired step (forward + loss + backward), batch 2, {args.paired_edge}^3, {args.paired_classes} classes, "
        f"median of {args.paired_rounds}: downsampled targets {paired['downsampled']:.2f} s, upsampled heads "
        f"{paired['upsampled']:.2f} s ({paired['upsampled'] / paired['downsampled']:.2f}x)"
    )


def _training_table(args: argparse.Namespace) -> None:
    raw, work = args.out / "raw", args.out / "work"
    if not (raw / "dataset.json").is_file():
        shape = tuple(int(s) for s in args.shape.split(","))
        generate_dataset(raw, SynthConfig(num_cases=args.cases, shape=shape, seed=3), show_progress=False)
    shutil.rmtree(work, ignore_errors=True)
    nnseg.plan(raw, work, preset="cpu", show_progress=False)
    preprocess_dataset(work, configurations=["3d_fullres"], show_progress=False)
    rows = {}
    rows["heads at own resolution, targets downsampled (now)"] = _run(work, args, "downsampled")
    original_forward = unet.PlainUNet.forward
    unet.PlainUNet.forward = _upsampled_heads  # type: ignore[method-assign]
    try:
        rows["heads upsampled to the patch (before)"] = _run(work, args, "upsampled")
    finally:
        unet.PlainUNet.forward = original_forward  # type: ignore[method-assign]
    classes = [k for k in next(iter(rows.values())) if k not in ("step_s", "mean")]
    print(f"{args.epochs} x {args.iters} iterations, fold 0, cpu preset, {args.cases} CT phantoms {args.shape}")
    print(f"| variant | s/step | {' | '.join(classes)} | mean Dice |")
    print("|---|---:|" + "---:|" * (len(classes) + 1))
    for name, row in rows.items():
        cells = " | ".join(f"{row[c]:.4f}" for c in classes)
        print(f"| {name} | {row['step_s']:.3f} | {cells} | {row['mean']:.4f} |")


if __name__ == "__main__":
    main()
