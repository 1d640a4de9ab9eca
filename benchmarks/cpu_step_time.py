"""Measure training-step time on this machine for U-Nets planned at several patch sizes.

Calibrates the CPU preset (plans/cpu.json): prints, per patch size and base width,
the plan's forward FLOPs, the measured wall time of one SGD step (forward + backward +
update, batch 2, deep supervision on) and the effective throughput
3 x FLOPs x batch / time, which the preset's ``effective_gflops`` encodes.

    .venv/bin/python benchmarks/cpu_step_time.py [--steps 3] [--threads N]
    .venv/bin/python benchmarks/cpu_step_time.py --plans nnseg_work/plans.json --config 3d_fullres
"""

from __future__ import annotations

import argparse
import time

import torch

from nnseg.networks import build_network
from nnseg.networks.plans import NetworkPlan, UNetPlan
from nnseg.networks.topology import conv_flops, features_per_stage, pool_and_kernel_layout
from nnseg.planning.plan import Plan
from nnseg.planning.presets import load_preset


def time_step(
    network_plan: NetworkPlan, patch: tuple[int, ...], batch: int, in_channels: int, num_classes: int, steps: int
) -> float:
    net = build_network(network_plan, in_channels, num_classes)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.99, nesterov=True)
    x = torch.randn(batch, in_channels, *patch)
    y = torch.randint(0, num_classes, (batch, *patch))
    loss_fn = torch.nn.CrossEntropyLoss()

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        out = net(x)
        out = out[0] if isinstance(out, list) else out  # deep supervision: a list, highest resolution first
        loss_fn(out, y).backward()
        optimizer.step()

    step()  # warm-up
    started = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - started) / steps


def plain_plan(patch: tuple[int, ...], spacing: tuple[float, ...], base: int, cap: int) -> tuple[NetworkPlan, tuple]:
    topo = pool_and_kernel_layout(spacing, patch, 4)
    return UNetPlan.from_topology(
        topo, features_per_stage(topo.n_stages, base, cap), load_preset("default")
    ), topo.patch_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--plans", default=None, help="time a configuration of this plans.json instead")
    parser.add_argument("--config", default="3d_fullres")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cases = []
    if args.plans:
        plan = Plan.load(args.plans)
        config = plan.configuration(args.config)
        cases.append((config.network, config.patch_size, config.batch_size, len(plan.channel_names), plan.num_classes))
    else:
        for patch, base in [
            ((32, 32, 32), 16),
            ((48, 48, 48), 16),
            ((64, 64, 64), 16),
            ((48, 48, 48), 32),
            ((64, 64, 64), 32),
            ((80, 96, 96), 32),
        ]:
            network, padded = plain_plan(patch, (1.0, 1.0, 1.0), base, 320)
            cases.append((network, padded, 2, 1, 3))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"{'patch':>14} {'base':>5} {'stages':>6} {'batch':>5} {'GFLOP fwd':>10} {'step s':>8} {'eff GFLOP/s':>12}")
    for network, patch, batch, in_channels, num_classes in cases:
        flops = conv_flops(
            patch,
            network.strides,
            network.kernel_sizes,
            network.features_per_stage,
            network.n_conv_per_stage,
            network.n_conv_per_stage_decoder,
            in_channels,
            num_classes,
        )
        seconds = time_step(network, patch, batch, in_channels, num_classes, args.steps)
        effective = 3 * flops * batch / seconds / 1e9
        print(
            f"{'x'.join(map(str, patch)):>14} {network.features_per_stage[0]:>5} {network.n_stages:>6} {batch:>5} "
            f"{flops / 1e9:>10.2f} {seconds:>8.2f} {effective:>12.1f}"
        )


if __name__ == "__main__":
    main()
