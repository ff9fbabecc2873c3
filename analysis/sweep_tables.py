"""`edgestage sweep`'s table and figure from its directory: one row per value and strategy.

    table = sweep_table("runs/backhaul")          # also writes OUT/sweep.csv
    plot_sweep(table, "topology.backhaul.bw_mbit", Path("runs/backhaul/sweep.png"))

What it reads: OUT/sweep.json (`field`, `values`, `runs`: the run directory of each value, in
order) and each finished run's summary.json (its per-strategy entries); a run not finished yet
(an interrupted sweep) has no rows.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from nodes.planning.quality_table import SECOND_JUDGE

COLUMNS = ["strategy", "done", "failed", "latency_p50_s", "latency_p95_s", "wire_bytes_per_image", "fid",
           "class_accuracy", *SECOND_JUDGE]  # the second judge's figures beside the first's


def sweep_table(out_dir: str | Path) -> pd.DataFrame:
    """OUT/sweep.csv (written here): per value, each strategy's summary.json figures, with the run
    directory's name in `run_dir`."""
    out = Path(out_dir)
    meta = json.loads((out / "sweep.json").read_text())
    field = meta["field"]
    rows: list[dict[str, Any]] = []
    for value, run in zip(meta["values"], meta["runs"], strict=True):
        summary = out / run / "summary.json"
        if not summary.is_file():
            continue
        for strategy, entry in json.loads(summary.read_text())["strategies"].items():
            rows.append({field: value, **{c: entry.get(c) for c in COLUMNS[1:]}, "strategy": strategy,
                         "run_dir": run})
    table = pd.DataFrame(rows, columns=[field, *COLUMNS, "run_dir"])
    table.to_csv(out / "sweep.csv", index=False)
    return table


def plot_sweep(table: pd.DataFrame, field: str, path: Path) -> Path:
    """p50 latency, bytes on the wire per image and FID against the value, a line per strategy;
    `path` (PNG) and its PDF twin."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from analysis.outputs import save_figure

    numeric = pd.api.types.is_numeric_dtype(table[field])
    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    panels = (("latency_p50_s", "p50 latency (emulated s)"),
              ("wire_bytes_per_image", "bytes on the wire per image (B)"),
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
    return save_figure(fig, path)  # and its PDF twin
