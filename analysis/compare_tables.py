"""`edgestage compare`'s table from its directory: one row per strategy and the oracle, and the
benchmark targets checked on it.

    table = compare_table("runs/burst-compare")

What it reads: OUT/compare.json (`scheduler`, `steps`, `strategies`: the runs that are
strategies, `oracle_candidates`: plan -> the run that ran it, `floor`: the quality floor,
`targets_file`), and each run's requests.parquet and summary.json.  Quality comes from the quality
table's figures of each request's plan (a cascade's from the cascade table).  The oracle takes, per
request, the fastest candidate run that completed it with a plan meeting the floor.

Statistics (analysis/statistics.py, seeded: the same directory gives the same figures): each row's
latency mean and p95 carry a 95 % bootstrap interval (`latency_mean_ci_low_s`, ...), and
OUT/compare_paired.csv (compare.json's `paired`) sets every strategy and the oracle against a
reference (cloud_only where it ran, else the first strategy) on the measured request ids both
completed: the ratio of mean latencies with its paired interval, the Wilcoxon signed-rank p-value
and the number of pairs.  The targets are judged on those intervals (analysis/targets.py).
"""

from __future__ import annotations

import json
import math
from functools import cache
from pathlib import Path
from typing import Any

import pandas as pd

from analysis.statistics import Paired, mean_interval, paired_ratio, percentile_interval, settings
from analysis.targets import DEFAULT_TARGETS, PairedRatio, Target, check_targets, load_targets
from nodes.planning.quality_table import SECOND_JUDGE

# the quality figures a row carries: the first judge's FID and class accuracy, and the second
# judge's figures beside them (nodes/planning/quality_table.py), so a target can ask both
QUALITY = ("fid", "class_accuracy", *SECOND_JUDGE)
COLUMNS = ["strategy", "requests", "done", "failed", "latency_mean_s", "latency_mean_ci_low_s",
           "latency_mean_ci_high_s", "latency_p50_s", "latency_p95_s", "latency_p95_ci_low_s",
           "latency_p95_ci_high_s", *QUALITY, "wire_bytes_per_image", "report_bytes_per_image",
           "device_energy_per_image_j", "overrun_steps", "escalation_rate"]
# compare_paired.csv: each strategy against the reference over the requests both completed; the
# ratio is the strategy's mean latency over the reference's (below 1: the strategy is faster)
PAIRED_COLUMNS = ["strategy", "reference", "n_pairs", "latency_mean_s", "reference_latency_mean_s",
                  "latency_mean_ratio", "latency_mean_ratio_ci_low", "latency_mean_ratio_ci_high",
                  "wilcoxon_p", "note"]
REFERENCE = "cloud_only"


def compare_targets(path: str | Path | None = None) -> list[Target]:
    """The targets of a file (default: the shipped scenarios/bench-targets.toml), checked against
    this table's columns; ValueError (one line naming file and entry) on a bad file."""
    return load_targets(path or DEFAULT_TARGETS, COLUMNS)


def compare_table(out_dir: str | Path, targets: str | Path | None = None,
                  reference: str | None = None) -> pd.DataFrame:
    """compare.csv from the run directories under OUT (compare.json names them), compare_paired.csv
    against `reference` (default cloud_only where it ran, else the first strategy), and the targets
    (the file `targets`, else compare.json's `targets_file`, else the shipped one) checked into
    compare.json."""
    out = Path(out_dir)
    meta = json.loads((out / "compare.json").read_text())
    targets_file = str(targets or meta.get("targets_file") or DEFAULT_TARGETS)
    checks = compare_targets(targets_file)
    rows = []
    firsts: dict[str, pd.DataFrame] = {}
    scheduler, steps = meta["scheduler"], meta["steps"]
    for name in meta["strategies"]:
        if (out / name / "requests.parquet").is_file():  # else an interrupted compare
            summary = json.loads((out / name / "summary.json").read_text())["strategies"].get(name)
            firsts[name] = first_rows(out / name)
            rows.append(table_row(name, firsts[name], summary, scheduler, steps))
    candidates = [first_rows(out / name) for name in dict.fromkeys(meta["oracle_candidates"].values())
                  if (out / name / "requests.parquet").is_file()]
    if candidates:
        firsts["oracle"] = oracle_rows(candidates, meta["floor"], scheduler, steps)
        rows.append(table_row("oracle", firsts["oracle"], None, scheduler, steps))
    table = pd.DataFrame(rows, columns=COLUMNS)
    table.to_csv(out / "compare.csv", index=False)
    latencies = {name: completed_latencies(first) for name, first in firsts.items()}
    pairs = paired_table(latencies, reference)
    pairs.to_csv(out / "compare_paired.csv", index=False)
    meta["table"] = json.loads(table.to_json(orient="records"))
    meta["paired"] = json.loads(pairs.to_json(orient="records"))
    meta["statistics"] = settings()
    meta["targets_file"] = targets_file
    meta["targets"] = (check_targets(table, checks, meta["floor"], paired=pair_lookup(latencies))
                       if len(table) else [])
    (out / "compare.json").write_text(json.dumps(meta, indent=1))
    return table


def completed_latencies(first: pd.DataFrame) -> pd.Series:
    """Latency (total_s, emulated seconds) of each request completed, by request_id."""
    ok = first[first["outcome"] == "ok"]
    latencies = pd.Series(ok["total_s"].astype(float).to_numpy(), index=ok["request_id"].to_numpy())
    return latencies[~latencies.index.duplicated()]


def paired(a: pd.Series, b: pd.Series) -> Paired:
    """mean(a) / mean(b) over the request ids both completed, with its interval and test."""
    common = a.index.intersection(b.index, sort=False)
    return paired_ratio(a.loc[common].to_numpy(), b.loc[common].to_numpy())


def pair_lookup(latencies: dict[str, pd.Series]) -> PairedRatio:
    """`paired(a, b)` by strategy name for check_targets (None where either did not run)."""
    @cache
    def lookup(a: str, b: str) -> Paired | None:
        return paired(latencies[a], latencies[b]) if a in latencies and b in latencies else None

    return lookup


def paired_table(latencies: dict[str, pd.Series], reference: str | None = None) -> pd.DataFrame:
    """One row per strategy (and the oracle) other than the reference: it against the reference
    on the requests both completed (PAIRED_COLUMNS); empty where nothing ran."""
    if reference is None:
        reference = REFERENCE if REFERENCE in latencies else next(iter(latencies), None)
    if reference not in latencies:
        if reference is not None and latencies:
            raise ValueError(f"reference {reference!r}: not a strategy of this compare "
                             f"(its runs: {', '.join(latencies)})")
        return pd.DataFrame(columns=PAIRED_COLUMNS)
    base = latencies[reference]
    rows = []
    for name, latency in latencies.items():
        if name == reference:
            continue
        result = paired(latency, base)
        common = latency.index.intersection(base.index, sort=False)
        rows.append({"strategy": name, "reference": reference, "n_pairs": result.n_pairs,
                     "latency_mean_s": latency.loc[common].mean() if len(common) else None,
                     "reference_latency_mean_s": base.loc[common].mean() if len(common) else None,
                     "latency_mean_ratio": result.ratio, "latency_mean_ratio_ci_low": result.low,
                     "latency_mean_ratio_ci_high": result.high, "wilcoxon_p": result.p_value,
                     "note": result.note})
    return pd.DataFrame(rows, columns=PAIRED_COLUMNS)


def measured_requests(run_dir: Path) -> pd.DataFrame:
    """A run's requests.parquet without its warm-up requests."""
    req = pd.read_parquet(run_dir / "requests.parquet")
    return req[req["warmup"].ne(True)]


def first_rows(run_dir: Path) -> pd.DataFrame:
    """One row per measured request (its first stage's, or its only row if it got no plan)."""
    req = measured_requests(run_dir)
    return req[req["stage_index"].fillna(0) == 0]


def plan_quality(plan_keys: pd.Series, scheduler: str, steps: int) -> pd.DataFrame:
    """The QUALITY figures (the quality table's) of each plan (without hosts, the records'
    `plan_key`); NaN where there is none."""
    from analysis.quality_table import load_table, lookup

    plans = plan_keys
    table = load_table(scheduler, steps)
    cache = {p: lookup(table, p) for p in plans.dropna().unique()}
    return pd.DataFrame({k: plans.map(lambda p, k=k: cache[p][k] if p in cache else math.nan)
                         for k in QUALITY})


def table_row(name: str, first: pd.DataFrame, summary: dict[str, Any] | None, scheduler: str,
              steps: int) -> dict[str, Any]:
    """One row of the table: a strategy's (or the oracle's) requests, latency, quality weighted by
    images, and what its summary.json entry says of bytes, energy, overruns and escalations."""
    ok = first[first["outcome"] == "ok"]
    quality = plan_quality(ok["plan_key"], scheduler, steps)
    weights = ok["n_images"].astype(float).to_numpy()
    totals = ok["total_s"].astype(float)
    entry = summary or {}
    if "cascade" in ok and ok["cascade"].notna().any():  # its quality is the cascade table's row
        from nodes.planning.cascade_table import cascade_figures, parse_cascade

        rows = [cascade_figures(*parse_cascade(c), scheduler, steps) for c in ok["cascade"]]
        quality = pd.DataFrame({k: [r[k] for r in rows] for k in QUALITY})
    weighted = {k: float((quality[k] * weights).sum() / weights.sum()) if len(ok) else None
                for k in QUALITY}
    mean, p95 = mean_interval(totals.to_numpy()), percentile_interval(totals.to_numpy(), 95)
    return {"strategy": name, "requests": len(first), "done": len(ok), "failed": len(first) - len(ok),
            "latency_mean_s": totals.mean(), "latency_mean_ci_low_s": mean.low,
            "latency_mean_ci_high_s": mean.high, "latency_p50_s": totals.quantile(0.5),
            "latency_p95_s": totals.quantile(0.95), "latency_p95_ci_low_s": p95.low,
            "latency_p95_ci_high_s": p95.high, **weighted,
            **{k: entry.get(k) for k in ("wire_bytes_per_image", "report_bytes_per_image",
                                         "device_energy_per_image_j", "overrun_steps", "escalation_rate")}}


def oracle_rows(candidates: list[pd.DataFrame], floor: dict[str, float | None], scheduler: str,
                steps: int) -> pd.DataFrame:
    """Per request: the fastest candidate's row among those that completed it with a plan meeting
    the floor (a failed row where none did), in the order the requests were sent."""
    both = pd.concat(candidates, ignore_index=True)
    quality = plan_quality(both["plan_key"], scheduler, steps)
    meets = pd.Series(True, index=both.index)
    if floor.get("min_class_accuracy") is not None:
        meets &= quality["class_accuracy"] >= floor["min_class_accuracy"]
    if floor.get("max_fid") is not None:
        meets &= quality["fid"] <= floor["max_fid"]
    ok = both[(both["outcome"] == "ok") & meets].sort_values("total_s")
    best = ok.drop_duplicates("request_id")
    missing = both[~both["request_id"].isin(best["request_id"])].drop_duplicates("request_id")
    return pd.concat([best, missing], ignore_index=True).sort_values("t_scheduled")
