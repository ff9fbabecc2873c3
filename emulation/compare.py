"""`edgestage compare SCENARIO`: every strategy of a scenario alone on the same workload, and an
oracle over a stated set of candidate plans; one table and one figure.

    table = run_compare("scenarios/bench/burst.toml", "runs/burst-compare")

Each strategy runs on its own (OUT/<strategy>/, a full run directory): the scenario with only that
strategy, so every request of the workload is that strategy's, with the same arrivals, devices,
seeds, link traces and events in every run, and no strategy's load lands on another's queues.
Every run has the same time dilation K, chosen once before the first (`auto` measures this
machine once; emulation/variants.py runs them).

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

This module runs them; the table and figure come from the directory (analysis/compare_tables.py:
OUT/compare.csv and compare.json, one row per strategy and the oracle, and the benchmark targets of
a targets file checked on it; analysis/compare_figure.py: OUT/compare.png).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from analysis.compare_figure import plot_compare
from analysis.compare_tables import compare_table, compare_targets
from analysis.targets import DEFAULT_TARGETS
from emulation.scenario import Scenario, anchor_plugins, parse_scenario, scenario_tables
from nodes.planning.strategy_specs import PLANNED_KINDS

if TYPE_CHECKING:
    from emulation.dilation import Dilation

# (model sequence, fractions of T at the boundaries) of the oracle's multi-stage candidates
ORACLE_FRACTIONS = ((("large", "medium"), (0.1,)), (("large", "medium"), (0.3,)),
                    (("large", "small"), (0.7,)), (("large", "medium", "small"), (0.2, 0.8)))
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


def fixed_plans(scenario: Scenario, names: list[str] | None = None) -> dict[str, str]:
    """strategy -> its plan without hosts, for the scenario's fixed strategies (of those `names`)."""
    from nodes.planning.strategies import Cluster, PlanRequest, build_strategies

    roles = {"cloud": "cloud", "edge": "edge", "d": "device"}
    models = {h: tuple(scenario.nodes.role(r).models) for h, r in roles.items()}
    cluster = Cluster("edge", roles, models, scenario.generation.steps)
    chosen_per_request = (*PLANNED_KINDS, "cascade", "plugin")
    fixed = {n: s for n, s in scenario.strategies.items()
             if s.kind not in chosen_per_request and (names is None or n in names)}
    out = {}
    for name, strategy in build_strategies(fixed).items():
        try:
            probe = PlanRequest(request_id="r", device="d", n=1, strategy=name)
            out[name] = strategy.plan_for(probe, cluster).plan.key
        except ValueError:
            continue  # a strategy these roles cannot serve: no candidate to share
    return out


def compared_tables(scenario_path: str | Path, with_file: str | Path | None = None) -> dict:
    """The scenario file's tables, and the `[strategies.*]` of `with_file` beside its own (a
    researcher's strategy on a benchmark scenario as it is; plugin files relative to `with_file`).
    ValueError, one line, for a file with other tables or a strategy name the scenario has."""
    from nodes.planning.strategy_specs import default_strategies
    from nodes.schema import read_toml

    data, _ = scenario_tables(scenario_path)
    if with_file is None:
        return data
    extra, _ = read_toml(with_file, "strategies file")
    other = sorted(set(extra) - {"strategies"})
    if other or not isinstance(extra.get("strategies"), dict) or not extra["strategies"]:
        raise ValueError(f"{with_file}: a --with file holds [strategies.*] tables only"
                         + (f" (it has [{other[0]}])" if other else ""))
    anchor_plugins(extra, Path(with_file).parent)
    own = data.get("strategies")
    if not isinstance(own, dict):  # the file gives none: the default ones are its strategies
        own = {n: s.model_dump(exclude_none=True) for n, s in default_strategies().items()}
    clash = sorted(set(own) & set(extra["strategies"]))
    if clash:
        raise ValueError(f"{with_file}: strategy {clash[0]!r} is also in {scenario_path}")
    return {**data, "strategies": {**own, **extra["strategies"]}}


def ran_strategies(base: Scenario, only: list[str] | None, scenario_path: str | Path) -> list[str]:
    """The strategies compare runs: every one the workload sends requests under, or those `only`
    names; ValueError naming one that is not there."""
    names = base.strategy_names()
    unknown = [n for n in only or () if n not in names]
    if unknown:
        raise ValueError(f"--only {unknown[0]}: not a strategy of {scenario_path} (it has: "
                         f"{', '.join(names)})")
    return [n for n in names if not only or n in only]


def variants(scenario_path: str | Path, oracle: bool = True, with_file: str | Path | None = None,
             only: list[str] | None = None) -> list[tuple[str, str | None, Scenario]]:
    """(run name, the oracle candidate's plan or None, its scenario) for every strategy (or those
    `only` names) and every candidate that no fixed strategy already runs, all validated before any
    run starts."""
    data = compared_tables(scenario_path, with_file)
    base = parse_scenario(data, source=str(scenario_path))
    names = ran_strategies(base, only, scenario_path)
    runs: list[tuple[str, str | None, dict]] = [(name, None, base.alone(data, name)) for name in names]
    if oracle:
        shared = set(fixed_plans(base, names).values())
        workload = {k: v for k, v in (data.get("workload") or {}).items() if k != "strategies"}
        runs += [(name, plan, {**data, "workload": workload,
                               "strategies": {name: _split(plan, base.generation.steps)}})
                 for name, plan in oracle_candidates(base).items() if plan not in shared]
    out = []
    for name, plan, tables in runs:
        changed = {**tables, "name": f"{data.get('name') or 'scenario'}-{name}"}
        out.append((name, plan, parse_scenario(changed, source=f"{scenario_path} ({name})")))
    return out


def run_compare(scenario_path: str | Path, out_dir: str | Path, oracle: bool = True,
                progress: bool = True, on_run: Callable[[str, Path], None] | None = None,
                targets: str | Path | None = None, with_file: str | Path | None = None,
                only: list[str] | None = None) -> pd.DataFrame:
    """Run every strategy (those of `with_file` too; only those `only` names, if given) and oracle
    candidate; the table of OUT/compare.csv, with the targets of the file `targets` (default: the
    shipped scenarios/bench-targets.toml) checked into compare.json.  A bad targets file or
    scenario stops it before any run starts."""
    from emulation.variants import run_variants

    targets_file = Path(targets or DEFAULT_TARGETS).resolve()
    compare_targets(targets_file)  # a bad file: one line naming file and entry, before any run
    runs = variants(scenario_path, oracle, with_file, only)
    base = parse_scenario(compared_tables(scenario_path, with_file), source=str(scenario_path))
    ran = ran_strategies(base, only, scenario_path)
    by_plan = {plan: name for name, plan in fixed_plans(base, ran).items()}
    candidates = {}
    if oracle:
        candidates = {plan: by_plan.get(plan, name) for name, plan in oracle_candidates(base).items()}
    out = Path(out_dir)

    def write_meta(dilation: Dilation | None) -> None:
        assert dilation is not None  # the variants differ only in their strategies
        (out / "compare.json").write_text(json.dumps(
            {"scenario": str(scenario_path), "time_dilation": dilation.k, "how": dilation.how,
             "scheduler": base.generation.scheduler, "steps": base.generation.steps,
             "runs": [name for name, _, _ in runs], "strategies": list(base.strategies),
             "oracle_candidates": candidates, "floor": floor_of(base),
             "with": None if with_file is None else str(Path(with_file).resolve()),
             "targets_file": str(targets_file)}, indent=1))

    run_variants({name: scenario for name, _, scenario in runs}, out, before=write_meta, quality=False,
                 progress=progress, on_run=on_run)
    table = compare_table(out)
    plot_compare(out)
    return table


def rerun(scenario_path: str | Path, out_dir: str | Path, names: list[str], progress: bool = True,
          on_run: Callable[[str, Path], None] | None = None,
          targets: str | Path | None = None) -> pd.DataFrame:
    """Run again, in an existing compare directory, the runs `names` (after a change to a planner,
    say): at the K the directory's other runs had, each replacing its old run directory; then the
    table and the figure again (the targets of the file `targets`, else of the one compare.json
    names).  compare.json records which runs were repeated."""
    from emulation.dilation import Dilation
    from emulation.variants import run_variants

    out = Path(out_dir)
    try:
        meta = json.loads((out / "compare.json").read_text())
    except (OSError, ValueError):
        raise ValueError(f"{out}: not a compare directory (no readable compare.json)") from None
    targets_file = Path(targets or meta.get("targets_file") or DEFAULT_TARGETS).resolve()
    compare_targets(targets_file)
    runs = {name: scenario for name, _, scenario in variants(scenario_path, True, meta.get("with"))}
    unknown = [n for n in names if n not in runs or n not in meta["runs"]]
    if unknown:
        raise ValueError(f"--again {', '.join(unknown)}: not a run of {out} "
                         f"(its runs: {', '.join(meta['runs'])})")
    dilation = Dilation(k=meta["time_dilation"], how=f"the compare's K, {meta['how']}", measured=[])
    run_variants({name: runs[name] for name in names}, out, dilation=dilation, replace=True, quality=False,
                 progress=progress, on_run=on_run)
    meta["repeated"] = sorted(set(meta.get("repeated", [])) | set(names))
    meta["targets_file"] = str(targets_file)
    (out / "compare.json").write_text(json.dumps(meta, indent=1))
    table = compare_table(out)
    plot_compare(out)
    return table
