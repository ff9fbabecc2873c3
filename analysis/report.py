"""A run's report: `report.md` and its figures in `plots/`, made from the run directory alone.

The runner writes it at the end of every run; `edgestage report RUN_DIR` writes it again (after
editing the analysis, say). Figures:
    latency_cdf.png        each strategy's request latencies as a CDF
    latency_parts.png      where a request's time goes, per strategy (mean seconds)
    cost_and_quality.png   per strategy, what it costs (p50 latency, bytes on the wire per image)
                           against what it buys (FID, class accuracy)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from analysis.run_report import load_run  # noqa: E402
from analysis.summary import per_request  # noqa: E402

# latency parts as the records name them, grouped as a reader thinks of them
PARTS = {"uplink and planning": ["uplink_s", "planning_s"], "compute": ["compute_s"],
         "state transfer": ["transfer_s", "handoff_s"], "queueing": ["queueing_s"],
         "result transfer": ["result_transfer_s"]}
# summary.json key -> (column heading, format)
SUMMARY_COLUMNS = {"done": ("done", "{:.0f}"), "failed": ("failed", "{:.0f}"),
                   "latency_p50_s": ("p50 latency (s)", "{:.3f}"),
                   "latency_p95_s": ("p95 latency (s)", "{:.3f}"), "fid": ("FID", "{:.2f}"),
                   "kid": ("KID", "{:.4f}"), "class_accuracy": ("class accuracy", "{:.3f}"),
                   "wire_bytes_per_image": ("wire bytes / image", "{:,.0f}")}


def write_report(run_dir: str | Path) -> Path:
    """Write <run_dir>/report.md and <run_dir>/plots/*.png; the report's path.
    ValueError if the directory holds no run (requests.parquet and summary.json)."""
    d = Path(run_dir)
    run = load_run(d)
    if "requests" not in run or "summary" not in run:
        raise ValueError(f"{d} is not a run directory (no requests.parquet or summary.json)")
    plots = d / "plots"
    plots.mkdir(exist_ok=True)
    requests = run["requests"]
    if "warmup" in requests.columns:
        requests = requests[requests["warmup"].ne(True)]
    strategies = run["summary"].get("strategies", {})
    figures = []
    if not requests.empty:
        figures.append(("Latency", plot_latency_cdf(requests, plots / "latency_cdf.png")))
        figures.append(("Where the time goes", plot_latency_parts(requests, plots / "latency_parts.png")))
    if strategies:
        figure = plot_cost_and_quality(strategies, plots / "cost_and_quality.png")
        figures.append(("Cost and quality", figure))
    text = report_markdown(run, [(title, path.relative_to(d)) for title, path in figures])
    path = d / "report.md"
    tmp = d / ".report.md.tmp"
    tmp.write_text(text)
    tmp.replace(path)
    return path


def summary_frame(strategies: dict[str, dict[str, Any]]) -> pd.DataFrame:
    """The per-strategy table of report.md, formatted ("-" where a figure is missing)."""
    frame = pd.DataFrame.from_dict(strategies, orient="index").reindex(columns=list(SUMMARY_COLUMNS))
    out = pd.DataFrame(index=frame.index)
    for key, (heading, fmt) in SUMMARY_COLUMNS.items():
        out[heading] = [("-" if pd.isna(v) else fmt.format(v)) for v in frame[key]]
    out.index.name = "strategy"
    return out


def report_markdown(run: dict[str, Any], figures: list[tuple[str, Path]]) -> str:
    summary, manifest = run["summary"], run.get("manifest", {})
    lines = [f"# {summary.get('scenario') or 'run'}: {summary.get('status', '?')}", ""]
    created = manifest.get("created")
    backend = manifest.get("network", {}).get("impairment_backend")
    lines += [f"Run {created or '(time unknown)'}, impairment backend {backend or '?'}, "
              f"kernel {manifest.get('kernel', '?')}; settings and versions in `manifest.json`.", ""]
    strategies = summary.get("strategies", {})
    if strategies:
        table = summary_frame(strategies)
        align = ("left",) + ("right",) * table.shape[1]
        lines += ["## Per strategy", "", table.to_markdown(colalign=align, disable_numparse=True), ""]
        lines += ["FID and KID pool each strategy's images; on a few dozen images they are biased: "
                  "compare strategies within this run.", ""]
    accuracy = summary.get("accuracy") or {}
    if accuracy:
        frame = pd.Series({k: (f"{v:.3f}" if isinstance(v, float) else v) for k, v in accuracy.items()},
                          name="value").to_frame()
        lines += ["## How far the figures hold", "", frame.to_markdown(), "",
                  "Details per transfer and per message size: `accuracy.json`.", ""]
    memory = summary.get("node_memory") or {}
    if memory:
        frame = pd.Series(memory, name="MB").to_frame()
        lines += ["## Node memory (all nodes up)", "", frame.to_markdown(floatfmt=".1f"), ""]
    for title, path in figures:
        lines += [f"## {title}", "", f"![{title}]({path.as_posix()})", ""]
    return "\n".join(lines)


def plot_latency_cdf(requests: pd.DataFrame, path: Path) -> Path:
    reqs = per_request(requests)
    ok = reqs[reqs["outcome"] == "ok"]
    fig, ax = plt.subplots(figsize=(6, 4))
    for strategy, group in ok.groupby("strategy", sort=False):
        values = group["total_s"].astype(float).sort_values().to_numpy()
        ax.step(values, [(i + 1) / len(values) for i in range(len(values))], where="post",
                label=f"{strategy} (n={len(values)})")
    ax.set_xlabel("request latency (s)")
    ax.set_ylabel("fraction of requests")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def latency_parts_frame(requests: pd.DataFrame) -> pd.DataFrame:
    """Per strategy, mean seconds per ok request in each part of PARTS."""
    ok = requests[(requests["outcome"] == "ok") & requests["stage_index"].notna()]
    columns = [c for cs in PARTS.values() for c in cs]
    per = ok.groupby("request_id").agg({**{c: "sum" for c in columns}, "strategy": "first"})
    frame = pd.DataFrame({name: per[cs].sum(axis=1) for name, cs in PARTS.items()})
    frame["strategy"] = per["strategy"]
    return frame.groupby("strategy", sort=False).mean()


def plot_latency_parts(requests: pd.DataFrame, path: Path) -> Path:
    frame = latency_parts_frame(requests)
    fig, ax = plt.subplots(figsize=(6, 4))
    frame.plot.bar(stacked=True, ax=ax, rot=0)
    ax.set_xlabel("")
    ax.set_ylabel("mean seconds per request")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def plot_cost_and_quality(strategies: dict[str, dict[str, Any]], path: Path) -> Path:
    frame = pd.DataFrame.from_dict(strategies, orient="index").reindex(
        columns=["latency_p50_s", "wire_bytes_per_image", "fid", "class_accuracy"])  # quality may be off
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, (cost, cost_label) in zip(axes, (("latency_p50_s", "p50 latency (s)"),
                                             ("wire_bytes_per_image", "bytes on the wire per image")),
                                      strict=True):
        twin = ax.twinx()
        x = range(len(frame))
        ax.bar([i - 0.2 for i in x], frame[cost].astype(float), width=0.4, color="tab:blue")
        twin.bar([i + 0.2 for i in x], frame["fid"].astype(float), width=0.4, color="tab:orange")
        ax.set_xticks(list(x), frame.index, fontsize=8)
        ax.set_ylabel(cost_label, color="tab:blue")
        twin.set_ylabel("FID (lower is better)", color="tab:orange")
        for i, accuracy in enumerate(frame["class_accuracy"]):
            if pd.notna(accuracy):
                twin.annotate(f"acc {accuracy:.2f}", (i + 0.2, 0), textcoords="offset points",
                              xytext=(0, 3), ha="center", fontsize=7, rotation=90)
    fig.suptitle("what each strategy costs (blue) and what it buys (orange)")
    return _save(fig, path)


def _save(fig: plt.Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
