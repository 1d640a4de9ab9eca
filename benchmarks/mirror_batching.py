"""Sliding-window TTA: one forward per mirror vs mirrors sharing forward passes, and the best window batch.

    python benchmarks/mirror_batching.py [--patch 48,48,64] [--features 16,32,64,128,128] [--repeats 3]

Part 1 times the network part for one chunk of windows with the 8 mirror combinations, run one forward
per mirror (nnseg before, and nnU-Net) or all in one stacked forward. Part 2 runs ``predict_sliding_window``
on a volume with 8 mirrors for several ``window_batch`` values (network inputs per forward).
"""

from __future__ import annotations

import argparse
import time

import torch

from nnseg.inference.sliding_window import mirror_combinations, predict_sliding_window
from nnseg.networks import build_network
from nnseg.networks.plans import UNetPlan


def _plan(patch: tuple[int, ...], features: tuple[int, ...]) -> UNetPlan:
    n = len(features)
    strides = ((1, 1, 1),) + ((2, 2, 2),) * (n - 1)
    return UNetPlan(
        n_stages=n,
        features_per_stage=features,
        kernel_sizes=((3, 3, 3),) * n,
        strides=strides,
        n_conv_per_stage=(2,) * n,
        n_conv_per_stage_decoder=(2,) * (n - 1),
    )


@torch.inference_mode()
def _per_flip(net: torch.nn.Module, batch: torch.Tensor, flips: list[tuple[int, ...]]) -> torch.Tensor:
    summed = torch.zeros(batch.shape[0], 3, *batch.shape[2:])
    for flip in flips:
        dims = [a + 2 for a in flip]
        out = net(torch.flip(batch, dims) if dims else batch)
        summed += torch.flip(out, dims) if dims else out
    return summed


@torch.inference_mode()
def _stacked(net: torch.nn.Module, batch: torch.Tensor, flips: list[tuple[int, ...]]) -> torch.Tensor:
    stacked = torch.cat([torch.flip(batch, [a + 2 for a in f]) if f else batch for f in flips])
    outs = net(stacked).split(batch.shape[0])
    return sum(torch.flip(o, [a + 2 for a in f]) if f else o for o, f in zip(outs, flips))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--patch", default="48,48,64")
    parser.add_argument("--features", default="16,32,64,128,128")
    parser.add_argument("--window-batch", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    args = parser.parse_args()
    patch = tuple(int(v) for v in args.patch.split(","))
    features = tuple(int(v) for v in args.features.split(","))
    net = build_network(_plan(patch, features), 1, 3, deep_supervision=False).eval()
    batch = torch.randn(args.window_batch, 1, *patch)
    flips = mirror_combinations((0, 1, 2))
    torch.testing.assert_close(_per_flip(net, batch, flips), _stacked(net, batch, flips), rtol=1e-4, atol=1e-4)
    print(f"| strategy | s per window ({len(flips)} mirrors) | peak extra batch |")
    print("|---|---:|---:|")
    results = {}
    for name, run, size in (
        ("one forward per mirror (today)", _per_flip, args.window_batch),
        ("mirrors stacked in one forward", _stacked, args.window_batch * len(flips)),
    ):
        run(net, batch, flips)  # warm-up
        times = []
        for _ in range(args.repeats):
            started = time.perf_counter()
            run(net, batch, flips)
            times.append((time.perf_counter() - started) / args.window_batch)
        results[name] = min(times)
        print(f"| {name} | {min(times):.3f} | {size} windows |")
    first, second = results.values()
    print(f"\nstacked / per-mirror time: {second / first:.2f} (threads: {torch.get_num_threads()})")
    volume = torch.randn(1, *[p * 2 for p in patch])
    print(f"\n| window_batch (inputs per forward) | s per volume {tuple(volume.shape[1:])}, 8 mirrors |")
    print("|---:|---:|")
    with torch.inference_mode():
        predict_sliding_window(net, volume[:, : patch[0]], patch, 3, window_batch=2)  # warm-up (kernel selection)
        for size in args.sizes:
            times = []
            for _ in range(max(1, args.repeats - 1)):
                started = time.perf_counter()
                predict_sliding_window(net, volume, patch, 3, mirror_axes=(0, 1, 2), window_batch=size)
                times.append(time.perf_counter() - started)
            print(f"| {size} | {min(times):.1f} |", flush=True)


if __name__ == "__main__":
    main()
