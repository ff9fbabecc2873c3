"""`edgestage sweep SCENARIO --set FIELD=V1,V2,...`: one run per value of one scenario field, then
one table and one figure across the runs.

    table = run_sweep("scenarios/smoke.toml", "topology.backhaul.bw_mbit", [2, 10, 50], "runs/backhaul")

FIELD is a dotted path into the scenario file's tables (`topology.backhaul.bw_mbit`,
`workload.images_per_request`, `generation.steps`, `topology.compute.edge`, ...); every value is
written there and the whole scenario validated before the first run starts, so a bad field or
value stops the sweep with one line and nothing written.  Runs go to OUT/<field>=<value>/ (each a
full run directory with its report); OUT/sweep.csv has one row per value and strategy (rewritten
after each run, so an interrupted sweep keeps the runs it finished) and OUT/sweep.png plots p50
latency, bytes on the wire per image and FID against the value.
"""

from __future__ import annotations

import copy
import json
import re
import tomllib
from pathlib import Path
from typing import Any

import pandas as pd

from emulation.scenario import Scenario, parse_scenario, scenario_tables

COLUMNS = ["strategy", "done", "failed", "latency_p50_s", "latency_p95_s", "wire_bytes_per_image", "fid",
           "class_accuracy"]
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
    """Run the scenario once per value; the table of OUT/sweep.csv (one row per value and strategy)."""
    from emulation.runner import check_can_run, run_scenario

    runs = variants(scenario_path, field, values)
    out = Path(out_dir)
    check_can_run(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "sweep.json").write_text(json.dumps(
        {"scenario": str(scenario_path), "field": field, "values": values,
         "runs": [run_name(field, v) for v, _ in runs]}, indent=1))
    rows: list[dict[str, Any]] = []
    for value, scenario in runs:
        run_dir = out / run_name(field, value)
        result = run_scenario(scenario, run_dir, progress=progress, quality=quality)
        for strategy, entry in result.summary["strategies"].items():
            rows.append({field: value, **{c: entry.get(c) for c in COLUMNS[1:]}, "strategy": strategy,
                         "run_dir": run_dir.name})
        table = pd.DataFrame(rows, columns=[field, *COLUMNS, "run_dir"])
        table.to_csv(out / "sweep.csv", index=False)
    plot_sweep(table, field, out / "sweep.png")
    return table


def plot_sweep(table: pd.DataFrame, field: str, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    numeric = pd.api.types.is_numeric_dtype(table[field])
    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    panels = (("latency_p50_s", "p50 latency (s)"), ("wire_bytes_per_image", "bytes on the wire per image"),
              ("fid", "FID (lower is better)"))
    positions = {v: i for i, v in enumerate(dict.fromkeys(table[field]))}
    for ax, (column, label) in zip(axes, panels, strict=True):
        if table[column].isna().all():
            ax.text(0.5, 0.5, "not measured in these runs", ha="center", va="center", transform=ax.transAxes)
        for strategy, group in table.groupby("strategy", sort=False):
            x = group[field] if numeric else group[field].map(positions)
            ax.plot(x, group[column].astype(float), marker="o", label=strategy)
        if not numeric:
            ax.set_xticks(list(positions.values()), [str(v) for v in positions])
        ax.set_xlabel(field)
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
