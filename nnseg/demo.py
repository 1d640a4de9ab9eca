"""The end-to-end demo behind ``make demo``: every stage that exists, on phantom data."""

from __future__ import annotations

import time
from pathlib import Path

from nnseg.api import plan
from nnseg.dataset import check_dataset
from nnseg.planning.summary import plan_summary
from nnseg.synth import SynthConfig, generate_dataset


def run_demo(out: str | Path, *, num_cases: int = 8, seed: int = 0) -> bool:
    """Run synth -> check -> plan in ``out``; print each stage's result; True when all succeeded."""
    out = Path(out)
    raw = out / "raw"
    started = time.perf_counter()
    if (raw / "dataset.json").is_file():
        print(f"[synth] reusing phantom dataset {raw}")
    else:
        generate_dataset(raw, SynthConfig(num_cases=num_cases, num_test=2, seed=seed))
        print(f"[synth] wrote {num_cases} training + 2 test phantom cases to {raw}")
    report = check_dataset(raw)
    print(f"[check] {report.summary().splitlines()[-1]}")
    if not report.ok:
        print(report.summary())
        return False
    result = plan(raw, out / "work", preset="cpu", show_progress=False)
    print(f"[plan] wrote {result.fingerprint_path} and {result.plans_path} (preset 'cpu'):")
    print(plan_summary(result.plan))
    print(f"demo finished in {time.perf_counter() - started:.1f} s; outputs under {out.resolve()}")
    return True
