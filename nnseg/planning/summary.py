"""A short human summary of a plan: what to check before spending GPU days."""

from __future__ import annotations

from nnseg.planning.plan import Plan


def _fmt(values, digits: int = 3) -> str:
    return " x ".join(f"{v:.{digits}g}" if isinstance(v, float) else str(v) for v in values)


def plan_summary(plan: Plan) -> str:
    """One table row per configuration: spacing, median shape, patch, batch, stages, normalization."""
    header = (
        "config",
        "spacing (mm)",
        "median shape",
        "patch",
        "batch",
        "network",
        "stages",
        "features",
        "budget",
        "normalization",
    )
    rows = [header]
    for name, config in plan.configurations.items():
        norms = ", ".join(
            f"{n.channel}:{n.scheme}{'+mask' if n.use_nonzero_mask else ''}" for n in config.normalization
        )
        rows.append(
            (
                name,
                _fmt(config.spacing),
                _fmt([round(s) for s in config.median_shape]),
                _fmt(config.patch_size),
                str(config.batch_size),
                config.network.architecture,
                str(config.network.n_stages),
                f"{config.network.features_per_stage[0]}..{config.network.features_per_stage[-1]}",
                f"{100 * config.budget_used:.0f}%",
                norms,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    intro = (
        f"plan for {plan.dataset_name} ({plan.num_training_cases} cases, preset {plan.preset!r}); "
        f"axes transposed {list(plan.transpose_forward)} (coarsest first)"
    )
    return "\n".join([intro, *lines])
