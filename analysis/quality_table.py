"""The quality table a planner reads: quality per plan over a fixed grid of plans, for one scheduler
and step count (issue 12, "The quality table the planner uses").

The grid (`grid(T)`):
  - each model alone: `large:0-T`, `medium:0-T`, `small:0-T`;
  - large→medium, large→small, medium→small with the boundary at every 10 % of the steps
    (round(T*k/10), k = 1..9, deduplicated, strictly inside 0 < b < T);
  - large→medium→small on a coarse grid of boundary pairs (20 %, 50 %), (30 %, 60 %), (40 %, 70 %),
    (20 %, 80 %), (50 %, 80 %); (40 %, 70 %) is the shipped scenarios' `fixed_split`.

Each plan is judged on n images of its own by analysis.plan_quality.plans_quality (FIGURES: both
judges' figures and PSNR vs large-only; cached per plan), so a table is a view over per-plan figures:

    table = measure_table("dpm", 30, n=500, cache_dir=SHIPPED_DIR)
    write_table(table, table_path("dpm", 30))
    figures = lookup(load_table("dpm", 30), "large:0-14,small:14-30")

The shipped tables (nodes/pretrained/quality-table/, README.md there says how they were made) are
regenerated with `edgestage quality-table --scheduler dpm --steps 30 --cache-dir
nodes/pretrained/plan-quality`.  A library: returns data, prints nothing.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from nodes.planning.plan import Plan, Stage, parse_plan
from nodes.planning.quality_table import (  # noqa: F401  (table_path, TABLE_DIR: this module's API too)
    COLUMNS,
    FIGURES,
    TABLE_DIR,
    _shown,
    read_table,
    table_path,
)
from nodes.schema import check_scheduler_name

SINGLE_MODELS = ("large", "medium", "small")
PAIRS = (("large", "medium"), ("large", "small"), ("medium", "small"))
CHAIN = ("large", "medium", "small")
# (first, second) boundary of large→medium→small in tenths of T; (4, 7) is the shipped fixed_split
CHAIN_TENTHS = ((2, 5), (3, 6), (4, 7), (2, 8), (5, 8))


# --- the grid -------------------------------------------------------------------------------------
def _tenth(steps: int, k: int) -> int:
    return round(steps * k / 10)


def _plan(models: Sequence[str], boundaries: Sequence[int], steps: int) -> str:
    starts, ends = [0, *boundaries], [*boundaries, steps]
    return ",".join(f"{m}:{a}-{b}" for m, a, b in zip(models, starts, ends, strict=True))


def grid(steps: int) -> list[str]:
    """The plans of the table's grid for a T-step schedule, without hosts, in a fixed order (each
    model alone, then the two-stage pairs by boundary, then the three-stage chain)."""
    if steps < 1:
        raise ValueError(f"steps must be positive, got {steps}")
    plans = [_plan([m], [], steps) for m in SINGLE_MODELS]
    # rounding can make two tenths one step at small T: a boundary is listed once
    cuts = sorted({b for k in range(1, 10) if 0 < (b := _tenth(steps, k)) < steps})
    plans += [_plan(pair, [b], steps) for pair in PAIRS for b in cuts]
    pairs = sorted({(b1, b2) for k1, k2 in CHAIN_TENTHS
                    if 0 < (b1 := _tenth(steps, k1)) < (b2 := _tenth(steps, k2)) < steps})
    plans += [_plan(CHAIN, list(pair), steps) for pair in pairs]
    return list(dict.fromkeys(plans))


# --- measuring ------------------------------------------------------------------------------------
def _row(plan: str, scheduler: str, steps: int, figures: dict[str, Any]) -> dict[str, Any]:
    parsed = parse_plan(plan, steps)
    return {"plan": plan, "models": ",".join(parsed.models()),
            "boundaries": ",".join(str(s.start) for s in parsed.stages[1:]),
            "scheduler": scheduler, "steps": steps, "n": int(figures["n_images"]),
            **{f: figures[f] for f in FIGURES}, "cache_file": _shown(figures["cache_file"])}


def measure_table(scheduler: str, steps: int, n: int = 500, cache_dir: Path | None = None,
                  progress: bool = False, plans: Sequence[str] | None = None) -> pd.DataFrame:
    """One row per plan of `grid(steps)` (or of `plans`), each judged on `n` images of its own.

    `cache_dir` as analysis.plan_quality.plans_quality: None reads the shipped figures, then the
    user's cache, and writes new ones to the user's cache; a folder given is the only one read and
    written (the shipped one, nodes/pretrained/plan-quality, when building the shipped tables)."""
    from analysis.plan_quality import plans_quality  # torch: only when measuring

    check_scheduler_name(scheduler)
    chosen = list(plans) if plans is not None else grid(steps)
    figures = plans_quality(chosen, scheduler, steps, n=n, cache_dir=cache_dir, progress=progress)
    return pd.DataFrame([_row(plan, scheduler, steps, f) for plan, f in figures.items()], columns=COLUMNS)


# --- the table on disk ----------------------------------------------------------------------------
def write_table(df: pd.DataFrame, path: Path) -> Path:
    """The table as CSV, written whole or not at all (a reader never sees half a table)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        df.loc[:, list(COLUMNS)].to_csv(tmp, index=False, float_format="%.6g")
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def load_table(scheduler: str, steps: int, path: Path | None = None) -> pd.DataFrame:
    """The table of `scheduler`/`steps` (default: the shipped one) as a DataFrame; ValueError as
    nodes.planning.quality_table.read_table (how to make a missing one, file:line of a bad row)."""
    return pd.DataFrame(read_table(scheduler, steps, path), columns=COLUMNS)


# --- the planner's question -----------------------------------------------------------------------
def _merged(plan: Plan) -> Plan:
    """Adjacent stages of one model as one stage: a plan split with the same model on both sides
    computes the unsplit plan's images (tested to 1e-5 for every scheduler:
    tests/nodes/diffusion/test_split_exactness.py)."""
    stages: list[Stage] = []
    for s in plan.stages:
        if stages and stages[-1].model == s.model:
            stages[-1] = Stage(s.model, stages[-1].start, s.end)
        else:
            stages.append(Stage(s.model, s.start, s.end))
    return Plan(tuple(stages))


def _answer(plan: str, row: dict[str, Any], estimated: bool, sources: list[str]) -> dict[str, Any]:
    return {"plan": plan, "scheduler": row["scheduler"], "steps": int(row["steps"]), "n": int(row["n"]),
            **{f: _none_if_nan(row[f]) for f in FIGURES}, "estimated": estimated, "from": sources}


def _none_if_nan(value: Any) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def _interpolated(plan: str, lo: dict[str, Any], hi: dict[str, Any], at: float) -> dict[str, Any]:
    """Figures a fraction `at` of the way from `lo` to `hi`; a figure one side lacks (large-only's
    PSNR, infinite) is None."""
    out = _answer(plan, lo, True, [lo["plan"], hi["plan"]])
    out["n"] = min(int(lo["n"]), int(hi["n"]))
    for f in FIGURES:
        a, b = _none_if_nan(lo[f]), _none_if_nan(hi[f])
        out[f] = None if a is None or b is None else a + at * (b - a)
    return out


def _table_steps(table: pd.DataFrame) -> int:
    steps = {int(s) for s in table["steps"]}
    if len(steps) != 1:
        raise ValueError(f"a quality table is for one step count, this one has {sorted(steps)}")
    return steps.pop()


def lookup(table: pd.DataFrame, plan: str) -> dict[str, Any]:
    """The figures of `plan` (hosts ignored) from `table`: each of FIGURES (fid, class_accuracy,
    svm_class_accuracy, ...), n, `estimated` and `from` (the table's plans they come from).

    The rule for a plan not in the table's grid:
      - adjacent stages of one model are merged first (`small:0-5,small:5-30` is `small:0-30`);
      - a plan in the table: its row (`estimated` False);
      - a two-stage plan whose model pair is in the table: linear interpolation in the boundary
        between the nearest boundaries of that pair below and above it; the pair's limits are the
        single-model plans (boundary 0 is the second model alone, T the first alone), so every
        boundary has two neighbours where those plans are in the table (`estimated` True);
      - a three-stage plan whose model sequence is in the table: the figures of the table's plan of
        that sequence nearest in its boundaries (least sum of absolute boundary differences; of
        equally near ones, the one with the worse FID, so that an estimate does not promise more
        than its neighbours; `estimated` True);
      - any other plan (a model sequence the table does not hold, a plan that does not tile the
        table's steps): ValueError naming the plan."""
    steps = _table_steps(table)
    try:
        bare = _merged(parse_plan(plan, steps))
    except ValueError as exc:
        raise ValueError(f"plan {plan!r} has no figures in the quality table of {steps} steps: "
                         f"{exc}") from None
    text = str(bare)
    rows = {r["plan"]: r for r in table.to_dict(orient="records")}
    if text in rows:
        return _answer(text, rows[text], False, [text])
    models = bare.models()
    # for each of the table's plans of this model sequence: its boundaries
    same = {p: [s.start for s in parse_plan(p).stages[1:]] for p, r in rows.items()
            if r["models"] == ",".join(models)}
    if not same:
        held = ", ".join(sorted({" -> ".join(r["models"].split(",")) for r in rows.values()}))
        raise ValueError(f"plan {text!r}: the quality table has no plan of the models "
                         f"{' -> '.join(models)} (it holds {held})")
    if len(models) == 2:
        return _two_stage(text, bare, rows, same, steps)
    return _nearest(text, bare, rows, same)


def _two_stage(text: str, plan: Plan, rows: dict[str, dict[str, Any]], same: dict[str, list[int]],
               steps: int) -> dict[str, Any]:
    first, second = plan.models()
    points = {b[0]: p for p, b in same.items()}
    # the pair's limits: all steps on the second model (boundary 0) or on the first (boundary T)
    for at, model in ((0, second), (steps, first)):
        if (single := f"{model}:0-{steps}") in rows:
            points[at] = single
    b = plan.stages[1].start
    below = max((x for x in points if x < b), default=None)
    above = min((x for x in points if x > b), default=None)
    if below is None or above is None:
        raise ValueError(f"plan {text!r}: the quality table has no plan of {first} -> {second} with a "
                         f"boundary {'below' if below is None else 'above'} {b} to interpolate from")
    return _interpolated(text, rows[points[below]], rows[points[above]], (b - below) / (above - below))


def _nearest(text: str, plan: Plan, rows: dict[str, dict[str, Any]],
             same: dict[str, list[int]]) -> dict[str, Any]:
    wanted = [s.start for s in plan.stages[1:]]

    def distance(p: str) -> tuple[int, float]:
        # worse FID first among equals: higher FID sorts first through its negation
        return sum(abs(a - b) for a, b in zip(same[p], wanted, strict=True)), -float(rows[p]["fid"])

    best = min(same, key=distance)
    return _answer(text, rows[best], True, [best])
