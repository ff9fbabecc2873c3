"""`edgestage compare SCENARIO`: every strategy of a scenario alone on the same workload, and an
oracle over a stated set of candidate plans; one table and one figure.

    table = run_compare("scenarios/bench/burst.toml", "runs/burst-compare")

Each strategy runs on its own (OUT/<strategy>/, a full run directory): the scenario with only that
strategy, so every request of the workload is that strategy's, with the same arrivals, devices,
seeds, link traces and events in every run, and no strategy's load lands on another's queues.
Every run has the same time dilation K, chosen once before the first (`auto` measures this
machine once).

The oracle (evaluation only) replays the same workload once per candidate plan (OUT/oracle-<k>/:
a `fixed_split` strategy that runs that plan) and takes, per request, the fastest candidate that
completed it and meets the quality floor (the quality table's figures of the plan).  Candidates:
each model alone, the fixed strategies' plans, and the grid plans of the quality table that
ORACLE_FRACTIONS names, run where the fixed strategies put their models (large on the cloud,
medium on the edge, small on the requesting device), restricted to those meeting the floor; a
candidate a fixed strategy already runs is not run again (its run is used).  The floor is the
scenario's `elastic` strategy's.  What the bound does not capture: plans outside the candidate
set (other boundaries, other hosts); a per-request choice that would have changed the load seen by
later requests (each candidate run's queues come from that candidate alone).

OUT/compare.csv and compare.json hold one row per strategy and the oracle (mean, p50, p95 latency
in emulated seconds, FID and class accuracy from the quality table, bytes on the wire per image,
device energy per image, failures); OUT/compare.png plots latency per strategy, latency over the
run's time with the link changes marked, and the plans elastic chose over time.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from emulation.scenario import Scenario, parse_scenario, scenario_tables
from nodes.planning.plan import parse_plan
from nodes.planning.strategy_specs import PLANNED_KINDS

# (model sequence, fractions of T at the boundaries) of the oracle's multi-stage candidates
ORACLE_FRACTIONS = ((("large", "medium"), (0.1,)), (("large", "medium"), (0.3,)),
                    (("large", "small"), (0.7,)), (("large", "medium", "small"), (0.2, 0.8)))
COLUMNS = ["strategy", "requests", "done", "failed", "latency_mean_s", "latency_p50_s", "latency_p95_s",
           "fid", "class_accuracy", "wire_bytes_per_image", "report_bytes_per_image",
           "device_energy_per_image_j", "overrun_steps", "escalation_rate"]
_TIER = {"large": "cloud", "medium": "edge", "small": "device"}


def floor_of(scenario: Scenario) -> dict[str, float | None]:
    """The quality floor of the scenario's first elastic (else routing) strategy; none: no floor."""
    planned = [s for s in scenario.strategies.values() if s.kind in PLANNED_KINDS]
    planned.sort(key=lambda s: s.kind != "elastic")
    spec = planned[0] if planned else None
    return {"min_class_accuracy": spec.min_class_accuracy if spec else None,
            "max_fid": spec.max_fid if spec else None}


def oracle_candidates(scenario: Scenario) -> dict[str, str]:
    """name -> plan text (no hosts) of the oracle's candidates the hosts can run and the floor admits."""
    from analysis.quality_table import lookup
    from nodes.planning.planner import QualityFloor
    from nodes.planning.quality_table import read_table

    steps = scenario.generation.steps
    table = pd.DataFrame(read_table(scenario.generation.scheduler, steps))
    held = {_TIER[m] for m in _TIER if m in scenario.nodes.role(_TIER[m]).models}
    plans = [f"{m}:0-{steps}" for m in _TIER] + list(fixed_plans(scenario).values())
    for models, fractions in ORACLE_FRACTIONS:
        cuts = [0, *[round(steps * f) for f in fractions], steps]
        plans.append(",".join(f"{m}:{a}-{b}" for m, a, b in zip(models, cuts, cuts[1:], strict=False)))
    floor = QualityFloor(**floor_of(scenario))
    out = {}
    for plan in dict.fromkeys(plans):
        models = [part.split(":")[0] for part in plan.split(",")]
        if {_TIER[m] for m in models} <= held and floor.admits(lookup(table, plan)):
            out[f"oracle-{len(out) + 1}"] = plan
    return out


def _split(plan: str, steps: int) -> dict[str, Any]:
    """A fixed_split strategy that runs `plan` (stages' models on their tiers)."""
    split = []
    for part in plan.split(","):
        model, span = part.split(":")
        start, end = (int(x) for x in span.split("-"))
        split.append({"model": model, "tier": _TIER[model], "share": (end - start) / steps})
    if len(split) == 1:
        return {"kind": f"{_TIER[split[0]['model']]}_only", "model": split[0]["model"]}
    return {"kind": "fixed_split", "split": split}


def fixed_plans(scenario: Scenario) -> dict[str, str]:
    """strategy -> its plan without hosts, for the scenario's fixed strategies."""
    from nodes.planning.strategies import Cluster, PlanRequest, build_strategies

    roles = {"cloud": "cloud", "edge": "edge", "d": "device"}
    models = {h: tuple(scenario.nodes.role(r).models) for h, r in roles.items()}
    cluster = Cluster("edge", roles, models, scenario.generation.steps)
    fixed = {n: s for n, s in scenario.strategies.items() if s.kind not in (*PLANNED_KINDS, "cascade")}
    out = {}
    for name, strategy in build_strategies(fixed).items():
        try:
            out[name] = strategy.plan_for(PlanRequest("r", "d", 1, name), cluster).plan.key
        except ValueError:
            continue  # a strategy these roles cannot serve: no candidate to share
    return out


def variants(scenario_path: str | Path, oracle: bool = True) -> list[tuple[str, str | None, Scenario]]:
    """(run name, the oracle candidate's plan or None, its scenario) for every strategy and every
    candidate that no fixed strategy already runs, all validated before any run starts."""
    data, _ = scenario_tables(scenario_path)
    base = parse_scenario(data, source=str(scenario_path))
    runs: list[tuple[str, str | None, dict]] = [
        (name, None, {name: spec.model_dump(exclude_none=True)}) for name, spec in base.strategies.items()]
    if oracle:
        shared = set(fixed_plans(base).values())
        runs += [(name, plan, {name: _split(plan, base.generation.steps)})
                 for name, plan in oracle_candidates(base).items() if plan not in shared]
    out = []
    for name, plan, strategies in runs:
        changed = {**data, "strategies": strategies, "name": f"{data.get('name') or 'scenario'}-{name}"}
        out.append((name, plan, parse_scenario(changed, source=f"{scenario_path} ({name})")))
    return out


def run_compare(scenario_path: str | Path, out_dir: str | Path, oracle: bool = True,
                progress: bool = True, on_run: Callable[[str, Path], None] | None = None) -> pd.DataFrame:
    """Run every strategy and oracle candidate; the table of OUT/compare.csv."""
    from emulation.dilation import choose_dilation
    from emulation.runner import check_can_run, run_scenario

    runs = variants(scenario_path, oracle)
    out = Path(out_dir)
    check_can_run(out)
    base = parse_scenario(scenario_tables(scenario_path)[0], source=str(scenario_path))
    dilation = choose_dilation(base)  # once: the same K for every run
    out.mkdir(parents=True, exist_ok=True)
    by_plan = {plan: name for name, plan in fixed_plans(base).items()}
    candidates = {}
    if oracle:
        candidates = {plan: by_plan.get(plan, name) for name, plan in oracle_candidates(base).items()}
    (out / "compare.json").write_text(json.dumps(
        {"scenario": str(scenario_path), "time_dilation": dilation.k, "how": dilation.how,
         "scheduler": base.generation.scheduler, "steps": base.generation.steps,
         "runs": [name for name, _, _ in runs], "strategies": list(base.strategies),
         "oracle_candidates": candidates, "floor": floor_of(base)}, indent=1))
    for name, _, scenario in runs:
        run_scenario(scenario, out / name, progress=progress, quality=False, dilation=dilation)
        if on_run:
            on_run(name, out / name)
    table = compare_table(out)
    plot_compare(out)
    return table


def rerun(scenario_path: str | Path, out_dir: str | Path, names: list[str], progress: bool = True,
          on_run: Callable[[str, Path], None] | None = None) -> pd.DataFrame:
    """Run again, in an existing compare directory, the runs `names` (after a change to a planner,
    say): at the K the directory's other runs had, each replacing its old run directory; then the
    table and the figure again.  compare.json records which runs were repeated."""
    import shutil

    from emulation.dilation import Dilation
    from emulation.runner import run_scenario

    out = Path(out_dir)
    try:
        meta = json.loads((out / "compare.json").read_text())
    except (OSError, ValueError):
        raise ValueError(f"{out}: not a compare directory (no readable compare.json)") from None
    runs = {name: scenario for name, _, scenario in variants(scenario_path, oracle=True)}
    unknown = [n for n in names if n not in runs or n not in meta["runs"]]
    if unknown:
        raise ValueError(f"--again {', '.join(unknown)}: not a run of {out} "
                         f"(its runs: {', '.join(meta['runs'])})")
    dilation = Dilation(k=meta["time_dilation"], how=f"the compare's K, {meta['how']}", measured=[])
    for name in names:
        shutil.rmtree(out / name, ignore_errors=True)
        run_scenario(runs[name], out / name, progress=progress, quality=False, dilation=dilation)
        if on_run:
            on_run(name, out / name)
    meta["repeated"] = sorted(set(meta.get("repeated", [])) | set(names))
    (out / "compare.json").write_text(json.dumps(meta, indent=1))
    table = compare_table(out)
    plot_compare(out)
    return table


def _requests(run_dir: Path) -> pd.DataFrame:
    req = pd.read_parquet(run_dir / "requests.parquet")
    return req[req["warmup"].ne(True)]


def _first_rows(run_dir: Path) -> pd.DataFrame:
    """One row per measured request (its first stage's, or its only row if it got no plan)."""
    req = _requests(run_dir)
    return req[req["stage_index"].fillna(0) == 0]


def _plan_quality(plans: pd.Series, scheduler: str, steps: int) -> pd.DataFrame:
    from analysis.quality_table import load_table, lookup

    table = load_table(scheduler, steps)
    cache = {p: lookup(table, parse_plan(p).key) for p in plans.dropna().unique()}
    return pd.DataFrame({"fid": plans.map(lambda p: cache[p]["fid"] if p in cache else math.nan),
                         "class_accuracy": plans.map(lambda p: cache[p]["class_accuracy"] if p in cache
                                                     else math.nan)})


def _row(name: str, first: pd.DataFrame, summary: dict[str, Any] | None, scheduler: str, steps: int) -> dict:
    ok = first[first["outcome"] == "ok"]
    quality = _plan_quality(ok["plan"], scheduler, steps)
    weights = ok["n_images"].astype(float).to_numpy()
    totals = ok["total_s"].astype(float)
    entry = summary or {}
    if "cascade" in ok and ok["cascade"].notna().any():  # its quality is the cascade table's row
        from nodes.planning.cascade_table import cascade_figures, parse_cascade

        rows = [cascade_figures(*parse_cascade(c), scheduler, steps) for c in ok["cascade"]]
        quality = pd.DataFrame({k: [r[k] for r in rows] for k in ("fid", "class_accuracy")})
    return {"strategy": name, "requests": len(first), "done": len(ok), "failed": len(first) - len(ok),
            "latency_mean_s": totals.mean(), "latency_p50_s": totals.quantile(0.5),
            "latency_p95_s": totals.quantile(0.95),
            "fid": float((quality["fid"] * weights).sum() / weights.sum()) if len(ok) else None,
            "class_accuracy": float((quality["class_accuracy"] * weights).sum() / weights.sum()) if len(ok)
            else None,
            "wire_bytes_per_image": entry.get("wire_bytes_per_image"),
            "report_bytes_per_image": entry.get("report_bytes_per_image"),
            "device_energy_per_image_j": entry.get("device_energy_per_image_j"),
            "overrun_steps": entry.get("overrun_steps"), "escalation_rate": entry.get("escalation_rate")}


def compare_table(out_dir: str | Path) -> pd.DataFrame:
    """compare.csv from the run directories under OUT (compare.json names them)."""
    out = Path(out_dir)
    meta = json.loads((out / "compare.json").read_text())
    rows = []
    scheduler, steps = meta["scheduler"], meta["steps"]
    for name in meta["strategies"]:
        if (out / name / "requests.parquet").is_file():  # else an interrupted compare
            summary = json.loads((out / name / "summary.json").read_text())["strategies"].get(name)
            rows.append(_row(name, _first_rows(out / name), summary, scheduler, steps))
    candidates = [_first_rows(out / name) for name in dict.fromkeys(meta["oracle_candidates"].values())
                  if (out / name / "requests.parquet").is_file()]
    if candidates:
        best = _oracle(candidates, meta["floor"], scheduler, steps)
        rows.append(_row("oracle", best, None, scheduler, steps))
    table = pd.DataFrame(rows, columns=COLUMNS)
    table.to_csv(out / "compare.csv", index=False)
    meta["table"] = json.loads(table.to_json(orient="records"))
    meta["targets"] = target_checks(table, meta["floor"]) if len(table) else []
    (out / "compare.json").write_text(json.dumps(meta, indent=1))
    return table


FIXED = ("cloud_only", "edge_only", "device_only", "fixed_split")


def target_checks(table: pd.DataFrame, floor: dict[str, float | None]) -> list[dict[str, Any]]:
    """The issue's targets that this table can check, each with its value and whether it is met
    (None where a strategy it needs is missing)."""
    rows = table.set_index("strategy")
    checks: list[dict[str, Any]] = []

    def add(check: str, value: float | None, target: str, met: bool | None) -> None:
        checks.append({"check": check, "value": value, "target": target, "met": met})

    def has(*names: str) -> bool:
        return all(n in rows.index and rows.loc[n, "done"] > 0 for n in names)

    if has("elastic", "cloud_only"):
        e, c = rows.loc["elastic"], rows.loc["cloud_only"]
        equal = abs(e["class_accuracy"] - c["class_accuracy"]) <= 0.01 and e["fid"] <= 1.05 * c["fid"]
        speedup = c["latency_mean_s"] / e["latency_mean_s"]
        add("cloud_only mean / elastic mean (at equal quality: class accuracy within 1 point, FID "
            "within 5 %)", speedup, ">= 2 in the burst; >= 1 elsewhere", bool(equal and speedup >= 1))
    if has("elastic", "oracle"):
        ratio = rows.loc["elastic", "latency_mean_s"] / rows.loc["oracle", "latency_mean_s"]
        add("elastic mean / oracle mean", ratio, "<= 1.10", bool(ratio <= 1.10))
    qualified = [n for n in FIXED if has(n) and _meets(rows.loc[n], floor)]
    if has("elastic") and qualified:
        best = min(qualified, key=lambda n: rows.loc[n, "latency_p95_s"])
        cut = 1 - rows.loc["elastic", "latency_p95_s"] / rows.loc[best, "latency_p95_s"]
        add(f"elastic p95 below the best fixed strategy meeting the floor ({best})", cut,
            ">= 0.30 in the trace and outage scenarios", bool(cut >= 0.30))
    if has("elastic", "oracle"):
        extra = int(rows.loc["elastic", "failed"] - rows.loc["oracle", "failed"])
        add("requests elastic failed that a candidate served (elastic failed - oracle failed)", extra, "0",
            extra <= 0)
    for name in [n for n in rows.index if n.startswith("cascade")]:
        if has(name, "cloud_only"):
            small = 1 - rows.loc[name, "escalation_rate"]
            drop = rows.loc["cloud_only", "class_accuracy"] - rows.loc[name, "class_accuracy"]
            add(f"{name}: share of images served by the device's model alone", small, ">= 0.50",
                bool(small >= 0.50))
            add(f"{name}: class accuracy below cloud_only's", drop, "<= 0.01", bool(drop <= 0.01))
    for name in [n for n in rows.index if n.startswith("elastic_energy")]:
        if has(name, "device_only"):
            joules = rows["device_energy_per_image_j"]
            cut = 1 - joules[name] / joules["device_only"]
            better = rows.loc[name, "fid"] <= rows.loc["device_only", "fid"]
            add(f"{name}: device J/image below device_only (quality equal or better)", cut, ">= 0.30",
                bool(cut >= 0.30 and better))
    return checks


def _meets(row: pd.Series, floor: dict[str, float | None]) -> bool:
    low, high = floor.get("min_class_accuracy"), floor.get("max_fid")
    return (low is None or row["class_accuracy"] >= low) and (high is None or row["fid"] <= high)


def _oracle(candidates: list[pd.DataFrame], floor: dict, scheduler: str, steps: int) -> pd.DataFrame:
    """Per request: the fastest candidate's row among those that completed it (a failed row where
    none did)."""
    both = pd.concat(candidates, ignore_index=True)
    quality = _plan_quality(both["plan"], scheduler, steps)
    meets = pd.Series(True, index=both.index)
    if floor.get("min_class_accuracy") is not None:
        meets &= quality["class_accuracy"] >= floor["min_class_accuracy"]
    if floor.get("max_fid") is not None:
        meets &= quality["fid"] <= floor["max_fid"]
    ok = both[(both["outcome"] == "ok") & meets].sort_values("total_s")
    best = ok.drop_duplicates("request_id")
    missing = both[~both["request_id"].isin(best["request_id"])].drop_duplicates("request_id")
    return pd.concat([best, missing], ignore_index=True).sort_values("t_scheduled")


def plot_compare(out_dir: str | Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    meta = json.loads((out / "compare.json").read_text())
    table = pd.read_csv(out / "compare.csv")
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    ax = axes[0]
    x = range(len(table))
    ax.bar([i - 0.2 for i in x], table["latency_mean_s"], width=0.4, label="mean")
    ax.bar([i + 0.2 for i in x], table["latency_p95_s"], width=0.4, label="p95")
    ax.set_xticks(list(x), table["strategy"], rotation=30, ha="right")
    ax.set_ylabel("latency (emulated s)")
    ax.legend(fontsize=8)
    ax.set_title(f"K = {meta['time_dilation']:g}")
    ax = axes[1]
    events: list[float] = []
    for name in meta["strategies"]:
        run = out / name
        if not (run / "requests.parquet").is_file():
            continue
        first = _first_rows(run)
        first = first[first["outcome"] == "ok"]
        ax.plot(first["t_scheduled"], first["total_s"], marker=".", lw=0.8, label=name)
        events = events or _link_changes(run)
    for t in events:
        ax.axvline(t, color="grey", lw=0.6, ls=":")
    ax.set_xlabel("request sent (emulated s from the first)")
    ax.set_ylabel("latency (emulated s)")
    ax.set_title("latency over time (dotted: link changes)")
    ax.legend(fontsize=7)
    _plot_plans(axes[2], out / "elastic")
    fig.tight_layout()
    path = out / "compare.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _link_changes(run: Path) -> list[float]:
    from analysis.run_tables import read_link_events

    manifest = json.loads((run / "manifest.json").read_text())
    k = (manifest.get("clock") or {}).get("time_dilation") or 1
    origin = (manifest.get("clock") or {}).get("origin") or 0
    return sorted({round((e["t"] - origin) / k, 3) for e in read_link_events(run)
                   if "t" in e and e["t"] >= origin})


def _plot_plans(ax: Any, run: Path) -> None:
    """Elastic's plans over time: each request a bar, its stages stacked by steps, coloured by host."""
    ax.set_title("elastic: the plans it chose over time")
    if not (run / "requests.parquet").is_file():
        ax.text(0.5, 0.5, "no elastic run", ha="center", va="center", transform=ax.transAxes)
        return
    rows = _requests(run)
    rows = rows[(rows["outcome"] == "ok") & rows["stage_index"].notna()]
    colours = {"cloud": "tab:blue", "edge": "tab:orange"}
    times = sorted(rows["t_scheduled"].unique())
    gaps = [b - a for a, b in zip(times, times[1:], strict=False) if b > a]
    width = 0.8 * (sorted(gaps)[len(gaps) // 2] if gaps else 0.02)  # the median spacing
    for row in rows.itertuples():
        colour = colours.get(row.host, "tab:green")
        ax.bar(row.t_scheduled, row.end_step - row.start_step, bottom=row.start_step, width=width,
               color=colour)
    for t in _link_changes(run):
        ax.axvline(t, color="grey", lw=0.6, ls=":")
    handles = [_patch(c, label) for label, c in (("cloud", "tab:blue"), ("edge", "tab:orange"),
                                                    ("device", "tab:green"))]
    ax.legend(handles=handles, fontsize=7)
    ax.set_xlabel("request sent (emulated s)")
    ax.set_ylabel("denoising step")


def _patch(colour: str, label: str) -> Any:
    from matplotlib.patches import Patch

    return Patch(color=colour, label=label)
