"""`edgestage compare`'s figure, OUT/compare.png and its PDF twin, from its directory (compare.json,
compare.csv and the runs): latency per strategy, latency over the run's time with the link changes
marked, and the plans elastic chose over time."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from analysis.compare_tables import first_rows, measured_requests
from analysis.outputs import save_figure

_HOST_COLOURS = {"cloud": "tab:blue", "edge": "tab:orange", "device": "tab:green"}


def plot_compare(out_dir: str | Path) -> Path:
    """Write OUT/compare.png and OUT/compare.pdf; the PNG's path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    meta = json.loads((out / "compare.json").read_text())
    table = pd.read_csv(out / "compare.csv")
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    ax = axes[0]
    x = range(len(table))
    ax.bar([i - 0.2 for i in x], table["latency_mean_s"], width=0.4, label="mean",
           yerr=error_bars(table, "latency_mean_s"), capsize=3)
    ax.bar([i + 0.2 for i in x], table["latency_p95_s"], width=0.4, label="p95",
           yerr=error_bars(table, "latency_p95_s"), capsize=3)
    ax.set_xticks(list(x), table["strategy"], rotation=30, ha="right")
    ax.set_ylabel("latency (emulated s)")
    ax.legend(fontsize=8)
    ax.set_title(f"K = {meta['time_dilation']:g}; whiskers: 95 % bootstrap CI")
    ax = axes[1]
    events: list[float] = []
    for name in meta["strategies"]:
        run = out / name
        if not (run / "requests.parquet").is_file():
            continue
        first = first_rows(run)
        first = first[first["outcome"] == "ok"]
        ax.plot(first["t_scheduled"], first["total_s"], marker=".", lw=0.8, label=name)
        events = events or link_changes(run)
    for t in events:
        ax.axvline(t, color="grey", lw=0.6, ls=":")
    ax.set_xlabel("request sent (emulated s from t = 0)")
    ax.set_ylabel("latency (emulated s)")
    ax.set_title("latency over time (dotted: link changes)")
    ax.legend(fontsize=7)
    _plot_plans(axes[2], out / "elastic")
    return save_figure(fig, out / "compare.png")  # and compare.pdf


def error_bars(table: pd.DataFrame, column: str) -> list[pd.Series] | None:
    """matplotlib's yerr (below, above) from a column's interval columns; None for a compare.csv
    made before them.  No interval (one request): no whisker."""
    low, high = column.removesuffix("_s") + "_ci_low_s", column.removesuffix("_s") + "_ci_high_s"
    if low not in table or high not in table:
        return None
    return [(table[column] - table[low]).clip(lower=0).fillna(0),
            (table[high] - table[column]).clip(lower=0).fillna(0)]


def link_changes(run: Path) -> list[float]:
    """Emulated seconds, from the run's clock origin, at which a link of the run changed."""
    from analysis.run_tables import read_link_events

    return sorted({round(e["t"], 3) for e in read_link_events(run) if e.get("t") is not None and e["t"] >= 0})


def _plot_plans(ax: Any, run: Path) -> None:
    """Elastic's plans over time: each request a bar, its stages stacked by steps, coloured by host."""
    from matplotlib.patches import Patch

    ax.set_title("elastic: the plans it chose over time")
    if not (run / "requests.parquet").is_file():
        ax.text(0.5, 0.5, "no elastic run", ha="center", va="center", transform=ax.transAxes)
        return
    rows = measured_requests(run)
    rows = rows[(rows["outcome"] == "ok") & rows["stage_index"].notna()]
    times = sorted(rows["t_scheduled"].unique())
    gaps = [b - a for a, b in zip(times, times[1:], strict=False) if b > a]
    width = 0.8 * (sorted(gaps)[len(gaps) // 2] if gaps else 0.02)  # the median spacing
    for row in rows.itertuples():
        colour = _HOST_COLOURS.get(row.host, _HOST_COLOURS["device"])  # device hosts have their own names
        ax.bar(row.t_scheduled, row.end_step - row.start_step, bottom=row.start_step, width=width,
               color=colour)
    for t in link_changes(run):
        ax.axvline(t, color="grey", lw=0.6, ls=":")
    ax.legend(handles=[Patch(color=c, label=h) for h, c in _HOST_COLOURS.items()], fontsize=7)
    ax.set_xlabel("request sent (emulated s from t = 0)")
    ax.set_ylabel("denoising step")
