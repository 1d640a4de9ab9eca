"""Is the data pipeline off the critical path? Loader samples/s vs training-step samples/s for a real plan.

Measures, for the configuration of a work folder (plan + preprocessed cache):
(a) the patch sampler alone (memory-mapped reads, padding, foreground oversampling), one thread;
(b) the background prefetcher with N threads, as training uses it;
(c) augmentation (batched torch ops) on the training device;
(d) a full training step (augmentation + forward + backward + SGD).
If (b) and (c) are each much faster than (d), the network never waits for data.

    .venv/bin/python benchmarks/loader_vs_step.py --work /tmp/nnseg_train/work [--config 3d_fullres] [--seconds 10]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from nnseg.planning import Plan
from nnseg.training.augment import TrainingAugmentation
from nnseg.training.config import TrainConfig
from nnseg.training.data import PatchSampler, Prefetcher
from nnseg.training.loop import Trainer


def rate(step, seconds: float, batch: int) -> float:
    step()
    count, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        step()
        count += 1
    return count * batch / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--config", default="3d_fullres")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    plan = Plan.load(args.work / "plans.json")
    config = plan.configuration(args.config)
    folder = args.work / "preprocessed" / config.data_identifier
    cases = sorted(p.stem for p in folder.glob("*.json"))
    augment = TrainingAugmentation.for_patch_size(config.patch_size)
    batch = config.batch_size
    sampler = PatchSampler(folder, cases, augment.sampling_patch_size, batch, dimensions=config.dimensions)
    sampled = rate(sampler.next_batch, args.seconds, batch)
    loader = Prefetcher(
        PatchSampler(folder, cases, augment.sampling_patch_size, batch, dimensions=config.dimensions),
        threads=args.threads,
    )
    prefetched = rate(lambda: next(loader), args.seconds, batch)
    loader.close()
    example = sampler.next_batch()
    image, seg = torch.from_numpy(example.image), torch.from_numpy(example.seg)
    generator = torch.Generator().manual_seed(0)
    augmented = rate(lambda: augment(image, seg, generator), args.seconds, batch)
    trainer = Trainer(
        args.work,
        TrainConfig(configuration=args.config, device="cpu", tracking=False, epochs=1, iters_per_epoch=1),
        resume=False,
        show_progress=False,
    )
    stepped = rate(lambda: trainer.train_step(example), args.seconds, batch)
    print(
        f"{args.config}: patch {config.patch_size}, batch {batch}, sampled region {augment.sampling_patch_size}, "
        f"torch {torch.get_num_threads()} threads"
    )
    print("| stage | samples/s | x training step |\n|---|---:|---:|")
    for name, value in (
        ("sampler (1 thread)", sampled),
        (f"prefetcher ({args.threads} threads)", prefetched),
        ("augmentation (batched torch)", augmented),
        ("training step (aug+fwd+bwd+SGD)", stepped),
    ):
        print(f"| {name} | {value:.1f} | {value / stepped:.1f} |")


if __name__ == "__main__":
    main()
