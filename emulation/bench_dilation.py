"""Benchmark: does time dilation's "auto" hold?  `edgestage bench dilation [SCENARIO] [--runs 10]`
runs the scenario (default: the main job's, scenarios/default.toml) N times in a row, each time
choosing K afresh as `edgestage run` does (emulation/dilation.py), and counts the profiled steps
that overran their K x profile in each run.  The target (issue 18): 0 overrun steps in 10
consecutive runs of the default scenario on the 2-core development machine.

Quality figures are left out (they are computed after the run and do not bear on the pacing);
each run's directory is kept under OUT for a look.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

TARGET_OVERRUN_STEPS = 0


def bench(scenario_path: str | Path, runs: int, out_dir: str | Path,
          on_run: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Run the scenario `runs` times into OUT/run-<i>; per run its K, why, the worst measured
    ratio and its overrun steps, and over all runs the median K and the total overrun."""
    from emulation.campaign import overrun_steps
    from emulation.dilation import choose_dilation
    from emulation.runner import check_can_run, run_scenario
    from emulation.scenario import load_scenario

    scenario = load_scenario(scenario_path)
    out = Path(out_dir)
    check_can_run(out)
    rows = []
    for i in range(runs):
        began = time.monotonic()
        dilation = choose_dilation(scenario)
        run_dir = out / f"run-{i}"
        result = run_scenario(scenario, run_dir, progress=False, quality=False, dilation=dilation)
        worst = max(dilation.measured, key=lambda r: r["ratio"]) if dilation.measured else {}
        row = {"run": i, "run_dir": str(run_dir), "status": result.summary.get("status"), "k": dilation.k,
               "worst_model": worst.get("model"), "worst_real_step_ms": worst.get("real_step_ms"),
               "overrun_steps": overrun_steps(run_dir), "wall_s": round(time.monotonic() - began, 1)}
        rows.append(row)
        if on_run:
            on_run(row)
    total = sum(r["overrun_steps"] for r in rows)
    return {"scenario": str(scenario_path), "runs": rows, "k_median": statistics.median(r["k"] for r in rows),
            "k_min": min(r["k"] for r in rows), "k_max": max(r["k"] for r in rows),
            "overrun_steps": total, "runs_with_overrun": sum(r["overrun_steps"] > 0 for r in rows),
            "wall_s_median": statistics.median(r["wall_s"] for r in rows),
            "target_overrun_steps": TARGET_OVERRUN_STEPS, "met": total <= TARGET_OVERRUN_STEPS}
