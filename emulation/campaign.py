"""`edgestage campaign SCENARIO`: many runs of one scenario, each its own run directory under one
campaign directory with an index, resumable.

    campaign = plan_campaign("scenarios/smoke.toml", [("topology.backhaul.bw_mbit", [2, 10])],
                             each_strategy=True, repetitions=3)
    index = run_campaign(campaign, "runs/backhaul-campaign")     # the rows of OUT/index.csv

A campaign is the product of
- a grid: one or more fields, each with its values (`--set FIELD=V1,V2`, written into the scenario's
  tables as `edgestage sweep` writes one: emulation/sweep.py); the grid is their product;
- optionally each strategy alone (`--strategies each`): the scenario with only that strategy, as
  `edgestage compare` runs it; otherwise every run interleaves all the scenario's strategies;
- repetitions 0..N-1, each on a fresh network with its own seeds (SEED_RULE): repetition 0 keeps
  the scenario's seeds, repetition r >= 1 takes `workload.seed` (arrivals and image noise:
  emulation/workload.py) and `topology.seed` (loss draws, mobility) from a hash of the seed and r.

Runs go repetition by repetition (all of repetition 0, then all of repetition 1, ...), so that slow
drift of the machine falls on every configuration alike and an interrupted campaign holds whole
repetitions first.  Every run is validated before the first starts (a bad field or value: one
line, nothing written) and all run through emulation/variants.py at one time dilation K, chosen
once (unless the grid varies `run.time_dilation`: then each run its own).

Run names (the run directories, OUT/<name>/) join what varies, filesystem-safe:
`topology.backhaul.bw_mbit=10,strategy=elastic,rep=1` (the grid's fields in the order given, then
the strategy with --strategies each, then the repetition, always).

The index: OUT/campaign.json (the definition: scenario file and a digest of its tables, grid,
strategies, repetitions, seed rule; K and why; per run its name, directory, varied fields,
strategy, repetition, seeds and status) and OUT/index.csv (one row per run), both rewritten before
the first run and after each, so an interrupted campaign's index says what finished.  A run's
status is its manifest's (`completed`, `interrupted`, `failed`), `killed` for a manifest still
saying `running` (the campaign writes its index between runs: that runner is gone), `pending` for
no run directory yet.

Resume: the same campaign again into the same OUT runs only the runs not `completed`, at the K the
campaign recorded, each partial run directory removed first; OUT holding a campaign of another
definition is refused (one line naming what differs).  A run that fails stops the campaign (its
index says so); running it again retries that run and goes on.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from emulation.scenario import Scenario, parse_scenario, scenario_tables
from emulation.sweep import run_name, with_field

if TYPE_CHECKING:
    from emulation.dilation import Dilation

SEED_RULE = ("repetition 0: the scenario's seeds; repetition r >= 1: X.seed = the first 8 bytes (big-endian) "
             "of sha256('X.seed:<the scenario's X.seed>:<r>') mod 2**31 for workload, 2**63 for topology")
_SEED_BOUND = {"workload": 2**31, "topology": 2**63}  # the scenario schema's ranges
# what must match for a campaign directory to be resumed by a campaign command
DEFINITION_KEYS = ("scenario_sha256", "grid", "strategies", "repetitions", "seed_rule")
MAX_NAME = 200  # bytes of a run directory's name: file systems allow 255
# a run that overran runs once more at the same K; one that overruns again stays `overran`, and
# is left out of what analysis/load.py loads of the campaign
ATTEMPTS = 2
OVERRAN_DIR = ".overran"


@dataclass(frozen=True)
class CampaignRun:
    """One run of a campaign: its name (its run directory under OUT), what it varies, its scenario."""

    name: str
    fields: dict[str, Any]  # grid field -> value
    strategy: str | None  # the strategy it runs alone; None: all the scenario's strategies
    repetition: int
    seeds: dict[str, int]  # workload, topology
    scenario: Scenario = field(repr=False)


@dataclass(frozen=True)
class Campaign:
    scenario: str  # the scenario file, as given
    definition: dict[str, Any]  # DEFINITION_KEYS: what a resumed campaign must share
    runs: list[CampaignRun]


def repetition_seed(seed: int, repetition: int, which: str) -> int:
    """The `which` ("workload" or "topology") seed of `repetition`, from the scenario's `seed`
    (SEED_RULE): independent of other repetitions' and of the other seed, the same every time."""
    if repetition == 0:
        return seed
    digest = hashlib.sha256(f"{which}.seed:{seed}:{repetition}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % _SEED_BOUND[which]


def plan_campaign(scenario_path: str | Path, grid: list[tuple[str, list[Any]]] | None = None,
                  each_strategy: bool = False, repetitions: int = 1) -> Campaign:
    """Every run of the campaign, each scenario validated: ValueError (one line naming the field
    or value) before anything is written."""
    grid = list(grid or [])
    _check_grid(grid, repetitions)
    data, _ = scenario_tables(scenario_path)
    base_name = data.get("name") or "scenario"
    points = [_grid_point(scenario_path, data, grid, values)
              for values in itertools.product(*(values for _, values in grid))]
    runs = []
    for repetition in range(repetitions):  # outermost: see the module docstring
        for fields, tables, scenario in points:
            for strategy, strategy_tables in _strategy_tables(tables, scenario, each_strategy):
                runs.append(_run(scenario_path, base_name, fields, strategy, repetition, strategy_tables,
                                 scenario))
    _check_names([r.name for r in runs])
    definition = {"scenario_sha256": _digest(data), "grid": [[f, values] for f, values in grid],
                  "strategies": "each" if each_strategy else "together", "repetitions": repetitions,
                  "seed_rule": SEED_RULE}
    # as campaign.json will hold it, so that a stored definition compares equal
    return Campaign(str(scenario_path), json.loads(json.dumps(definition, default=str)), runs)


def _check_grid(grid: list[tuple[str, list[Any]]], repetitions: int) -> None:
    if not isinstance(repetitions, int) or repetitions < 1:
        raise ValueError(f"--repetitions: must be a positive integer, got {repetitions!r}")
    fields = [f for f, _ in grid]
    for name, values in grid:
        if fields.count(name) > 1:
            raise ValueError(f"--set {name}: given twice (give all its values in one --set)")
        if not values:
            raise ValueError(f"--set {name}: no values")
        if len(set(map(repr, values))) != len(values):
            raise ValueError(f"--set {name}: a value is repeated")


def _grid_point(path: str | Path, data: dict, grid: list[tuple[str, list[Any]]],
                values: tuple[Any, ...]) -> tuple[dict[str, Any], dict, Scenario]:
    """(field -> value, the tables with them written, its scenario) of one point of the grid."""
    fields = {f: v for (f, _), v in zip(grid, values, strict=True)}
    tables = data
    for name, value in fields.items():
        tables = with_field(tables, name, value)
    where = " with " + ", ".join(f"{f}={v!r}" for f, v in fields.items()) if fields else ""
    return fields, tables, _validated(tables, f"{path}{where}")


def _strategy_tables(tables: dict, scenario: Scenario, each: bool) -> list[tuple[str | None, dict]]:
    """(strategy, tables) of each strategy alone, as emulation/compare.py's variants() makes them
    (that strategy's table, and a plugin's fallback's), or (None, the tables) for all of them together."""
    if not each:
        return [(None, tables)]
    return [(name, scenario.alone(tables, name)) for name in scenario.strategy_names()]


def _run(path: str | Path, base_name: str, fields: dict[str, Any], strategy: str | None, repetition: int,
         tables: dict, point: Scenario) -> CampaignRun:
    parts = [run_name(f, v) for f, v in fields.items()]
    parts += [run_name("strategy", strategy)] if strategy is not None else []
    name = ",".join([*parts, f"rep={repetition}"])
    # the grid point's seeds (defaults included, or the grid's own): what repetition 0 keeps
    seeds = {which: repetition_seed(getattr(point, which).seed, repetition, which) for which in _SEED_BOUND}
    for which, seed in seeds.items():
        tables = with_field(tables, f"{which}.seed", seed)
    tables = {**tables, "name": f"{base_name}-{name}"}
    scenario = _validated(tables, f"{path} ({name})")
    return CampaignRun(name, fields, strategy, repetition, seeds, scenario)


def _validated(tables: dict, source: str) -> Scenario:
    try:
        return parse_scenario(tables, source=source)
    except ValueError as exc:
        raise ValueError(str(exc).splitlines()[0]) from None


def _check_names(names: list[str]) -> None:
    if len(set(names)) != len(names):
        twice = next(n for n in names if names.count(n) > 1)
        raise ValueError(f"--set: two runs share the directory name {twice!r} (values that differ only "
                         "in characters a file name cannot hold)")
    for name in names:
        if len(name.encode()) > MAX_NAME:
            raise ValueError(f"run name {name[:60]!r}...: longer than {MAX_NAME} bytes "
                             "(fewer or shorter fields)")


def _digest(data: dict) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


def run_status(run_dir: Path) -> str:
    """A run's status as the index gives it: its manifest's, `killed` for one still `running`
    (read between runs, its runner is gone), `overran` for a completed run in which a profiled
    step overran (overrun_steps: it ran at another fidelity than the campaign's K promises),
    `incomplete` (a directory without a readable manifest), `pending` (no directory)."""
    if not run_dir.is_dir():
        return "pending"
    try:
        status = json.loads((run_dir / "manifest.json").read_text()).get("status")
    except (OSError, ValueError, AttributeError):
        return "incomplete"
    if status == "completed" and overrun_steps(run_dir):
        return "overran"
    return "killed" if status == "running" else str(status or "incomplete")


def overrun_steps(run_dir: Path) -> int:
    """Profiled steps of the run that took longer than K x their profile (its summary.json, every
    strategy); 0 where the summary is missing or says nothing of overruns."""
    try:
        strategies = json.loads((run_dir / "summary.json").read_text()).get("strategies") or {}
    except (OSError, ValueError, AttributeError):
        return 0
    return sum(int(e.get("overrun_steps") or 0) for e in strategies.values() if isinstance(e, dict))


def set_aside(out_dir: str | Path, name: str) -> Path:
    """Move the run `name` that overran out of the campaign, to OUT/.overran/<name>.<i> (kept for
    a look, never loaded: analysis/load.py skips hidden folders), so that it can run again."""
    aside = Path(out_dir) / OVERRAN_DIR
    aside.mkdir(exist_ok=True)
    attempt = 1 + sum(1 for p in aside.iterdir() if p.name.rsplit(".", 1)[0] == name)
    target = aside / f"{name}.{attempt}"
    os.replace(Path(out_dir) / name, target)
    return target


def completed_runs(campaign: Campaign, out_dir: str | Path) -> list[str]:
    """The runs of `campaign` already completed in OUT (none where OUT is new or empty).
    ValueError where OUT holds a campaign of another definition, or something else."""
    out = Path(out_dir)
    stored = stored_index(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out}: exists and is not a directory")
    if stored is None:
        if out.exists() and any(out.iterdir()):
            raise ValueError(f"--out {out}: exists, is not empty and holds no campaign.json "
                             "(choose a new directory)")
        return []
    for key in DEFINITION_KEYS:
        if stored.get(key) != campaign.definition[key]:
            raise ValueError(f"--out {out}: holds a campaign of another definition ({key}: "
                             f"{_short(stored.get(key))} there, {_short(campaign.definition[key])} here); "
                             "choose another --out")
    return [r.name for r in campaign.runs if run_status(out / r.name) == "completed"]


def stored_index(out: Path) -> dict[str, Any] | None:
    path = out / "campaign.json"
    if not path.is_file():
        return None
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError):
        raise ValueError(f"--out {out}: campaign.json is not readable JSON") from None
    if not isinstance(meta, dict):
        raise ValueError(f"--out {out}: campaign.json is not a campaign index")
    return meta


def _short(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 80 else text[:77] + "..."


def run_campaign(campaign: Campaign, out_dir: str | Path, quality: bool = True, progress: bool = True,
                 on_run: Callable[[str, Path], None] | None = None) -> pd.DataFrame:
    """Run every run of `campaign` not yet completed in OUT (new, empty, or this campaign's) on
    this machine; the rows of OUT/index.csv.  The index is rewritten before the first run, after
    each, and when a run fails or is interrupted (the exception goes on).  A run that overran runs
    again (ATTEMPTS in all, at the same K; the attempt set aside: set_aside); with `progress`, a
    line on stderr says so."""
    from emulation.variants import run_variants

    out = Path(out_dir)
    done = completed_runs(campaign, out)
    stored = stored_index(out)
    dilation, how = stored_dilation(stored)
    shared: dict[str, Any] = {}

    def before(chosen: Dilation | None) -> None:
        nonlocal dilation
        dilation = chosen
        own = "each run its own: the grid sets run.time_dilation"
        shared.update(time_dilation=chosen.k if chosen else None, how=how or (chosen.how if chosen else own))
        write_index(campaign, out, **shared)

    def after(name: str, run_dir: Path) -> None:
        write_index(campaign, out, **shared)
        if on_run:
            on_run(name, run_dir)

    runs = {r.name: r.scenario for r in campaign.runs}
    todo = [name for name in runs if name not in done]
    replace = stored is not None
    try:
        for _ in range(ATTEMPTS):
            for name in todo:
                if run_status(out / name) == "overran":  # a resumed campaign's, or this one's
                    aside = set_aside(out, name)
                    if progress:
                        print(overrun_note(name, aside), file=sys.stderr, flush=True)
            run_variants(runs, out, dilation=dilation, before=before if not shared else None, replace=replace,
                         quality=quality, progress=progress, on_run=after, skip=set(runs) - set(todo))
            replace = True
            todo = [name for name in todo if run_status(out / name) == "overran"]
            if not todo:
                break
    finally:
        if shared:  # the index was written: it says how far the campaign got
            write_index(campaign, out, **shared)
    return pd.read_csv(out / "index.csv")


def overrun_note(name: str, aside: Path) -> str:
    """The line that says a run overran (set aside to `aside`) and runs again."""
    return (f"{name}: {overrun_steps(aside)} profiled steps overran their K x profile; running it "
            f"again (the run that overran is kept in {aside})")


def stored_dilation(stored: dict[str, Any] | None) -> tuple[Dilation | None, str | None]:
    """The K (and why) of a resumed campaign's first runs, from its campaign.json; (None, None)
    for a new campaign."""
    from emulation.dilation import Dilation

    if stored is None or "time_dilation" not in stored:
        return None, None
    how = stored.get("how")
    if stored["time_dilation"] is None:
        return None, how
    return Dilation(k=stored["time_dilation"], how=f"the campaign's K, {how}", measured=[]), how


def index_rows(campaign: Campaign, out_dir: str | Path) -> list[dict[str, Any]]:
    """campaign.json's `runs`: per run its name, directory (relative to OUT), varied fields,
    strategy, repetition, seeds and status (run_status)."""
    out = Path(out_dir)
    return [{"name": r.name, "run_dir": r.name, "fields": r.fields, "strategy": r.strategy,
             "repetition": r.repetition, "seeds": r.seeds, "status": run_status(out / r.name)}
            for r in campaign.runs]


def write_index(campaign: Campaign, out_dir: str | Path, time_dilation: float | None, how: str) -> None:
    """OUT/campaign.json and OUT/index.csv, each replaced whole (a reader never sees half of one)."""
    out = Path(out_dir)
    rows = index_rows(campaign, out)
    meta = {"scenario": campaign.scenario, **campaign.definition, "time_dilation": time_dilation,
            "how": how, "runs": rows}
    _replace(out / "campaign.json", json.dumps(meta, indent=1, default=str))
    columns = ["name", "run_dir", *(f for f, _ in campaign.definition["grid"]), "strategy", "repetition",
               "seed_workload", "seed_topology", "status"]
    table = pd.DataFrame([{**r, **r["fields"], "seed_workload": r["seeds"]["workload"],
                           "seed_topology": r["seeds"]["topology"]} for r in rows], columns=columns)
    _replace(out / "index.csv", table.to_csv(index=False))


def _replace(path: Path, text: str) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text)
    os.replace(partial, path)
