"""Sliding-window TTA: one forward per mirror (today) vs all mirrors of a window batch in one forward.

    python benchmarks/mirror_batching.py [--patch 48,48,64] [--features 16,32,64,128,128] [--repeats 3]

Times only the network part of ``predict_sliding_window`` for one chunk of windows with the 8 mirror
combinations, both ways, with a U-Net of the cpu preset's shape; prints seconds per window and the ratio.
"""

from __future__ import annotations

import argparse
import time

import torch

from nnseg.inference.sliding_window import mirror_combinations
from nnseg.networks import build_network
from nnseg.planning.plan import NetworkPlan


def _plan(patch: tuple[int, ...], features: tuple[int, ...]) -> NetworkPlan:
    n = len(features)
    strides = ((1, 1, 1),) + ((2, 2, 2),) * (n - 1)
    return NetworkPlan(n_stages=n, features_per_stage=features, kernel_sizes=((3, 3, 3),) * n, strides=strides,
                       n_conv_per_stage=(2,) * n, n_conv_per_stage_decoder=(2,) * (n - 1))


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
    for name, run, size in (("one forward per mirror (today)", _per_flip, args.window_batch),
                            ("mirrors stacked in one forward", _stacked, args.window_batch * len(flips))):
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


if __name__ == "__main__":
    main()
