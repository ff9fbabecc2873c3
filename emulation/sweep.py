"""`edgestage sweep SCENARIO --set FIELD=V1,V2,...`: one run per value of one scenario field, then
one table and one figure across the runs.

    table = run_sweep("scenarios/smoke.toml", "topology.backhaul.bw_mbit", [2, 10, 50], "runs/backhaul")

FIELD is a dotted path into the scenario file's tables (`topology.backhaul.bw_mbit`,
`workload.images_per_request`, `generation.steps`, `topology.cpu_shares.edge`, ...); every value is
written there and the whole scenario validated before the first run starts, so a bad field or
value stops the sweep with one line and nothing written.  Runs go to OUT/<field>=<value>/ (each a
full run directory with its report), all at one time dilation K chosen before the first
(emulation/variants.py; a sweep over `run.time_dilation` itself runs each at its own).
OUT/sweep.csv has one row per value and strategy (rewritten after each run, so an interrupted
sweep keeps the runs it finished) and OUT/sweep.png plots p50 latency, bytes on the wire per image
and FID against the value (analysis/sweep_tables.py makes both from the directory).
"""

from __future__ import annotations

import copy
import json
import re
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from analysis.sweep_tables import plot_sweep, sweep_table
from emulation.scenario import Scenario, parse_scenario, scenario_tables

if TYPE_CHECKING:
    from emulation.dilation import Dilation

_FIELD = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+$")


def parse_values(text: str) -> list[Any]:
    """`2,10,50` -> [2, 10, 50]; each item a TOML value (`"20ms"` or a bare word: a string)."""
    values = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            raise ValueError(f"--set: empty value in {text!r}")
        try:
            values.append(tomllib.loads(f"v = {item}")["v"])
        except tomllib.TOMLDecodeError:
            values.append(item)
    return values


def parse_assignment(text: str) -> tuple[str, list[Any]]:
    """`topology.backhaul.bw_mbit=2,10,50` -> ("topology.backhaul.bw_mbit", [2, 10, 50])."""
    field, sep, values = text.partition("=")
    if not sep or not _FIELD.match(field.strip()):
        raise ValueError(f"--set {text!r}: expected TABLE.FIELD=V1,V2,... "
                         "(e.g. topology.backhaul.bw_mbit=2,10,50)")
    return field.strip(), parse_values(values)


def with_field(data: dict, field: str, value: Any) -> dict:
    """A deep copy of the scenario's tables with `field` (dotted) set to `value`."""
    out = copy.deepcopy(data)
    *tables, key = field.split(".")
    node = out
    for i, name in enumerate(tables):
        child = node.setdefault(name, {})
        if not isinstance(child, dict):
            raise ValueError(f"--set {field}: {'.'.join(tables[: i + 1])} is a value, not a table")
        node = child
    node[key] = value
    return out


def variants(scenario_path: str | Path, field: str, values: list[Any]) -> list[tuple[Any, Scenario]]:
    """Every value's scenario, all validated (ValueError naming the value) before any runs."""
    if not values:
        raise ValueError("--set: no values")
    if len(set(map(repr, values))) != len(values):
        raise ValueError(f"--set {field}: a value is repeated")
    data, _ = scenario_tables(scenario_path)
    out = []
    for value in values:
        changed = with_field(data, field, value)
        changed["name"] = f"{data.get('name') or 'scenario'}-{run_name(field, value)}"
        try:
            out.append((value, parse_scenario(changed, source=f"{scenario_path} with {field}={value!r}")))
        except ValueError as exc:
            raise ValueError(str(exc).splitlines()[0]) from None
    return out


def run_name(field: str, value: Any) -> str:
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", f"{field}={value}")


def run_sweep(scenario_path: str | Path, field: str, values: list[Any], out_dir: str | Path,
              quality: bool = True, progress: bool = True) -> pd.DataFrame:
    """Run the scenario once per value, all at one K (emulation/variants.py); the table of
    OUT/sweep.csv (one row per value and strategy, rewritten after each run)."""
    from emulation.variants import run_variants

    runs = {run_name(field, value): scenario for value, scenario in variants(scenario_path, field, values)}
    if len(runs) != len(values):
        raise ValueError(f"--set {field}: two values give one run directory name ({', '.join(runs)})")
    out = Path(out_dir)

    def write_meta(dilation: Dilation | None) -> None:
        (out / "sweep.json").write_text(json.dumps(
            {"scenario": str(scenario_path), "field": field, "values": values, "runs": list(runs),
             "time_dilation": dilation.k if dilation else None,
             "how": dilation.how if dilation else "each run its own: the sweep sets run.time_dilation"},
            indent=1))

    run_variants(runs, out, before=write_meta, quality=quality, progress=progress,
                 on_run=lambda name, run_dir: sweep_table(out))
    table = sweep_table(out)
    plot_sweep(table, field, out / "sweep.png")
    return table
