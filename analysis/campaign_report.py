"""A campaign's report, made from its directory alone (emulation/campaign.py: campaign.json,
index.csv, a run directory per run): CAMPAIGN/report.md, the same as a self-contained report.html
(analysis/report_html.py), every table as tables/<name>.csv and .tex (booktabs) and every figure in
plots/ as PNG and PDF (analysis/outputs.py), the forms a run's report (analysis/report.py) takes.

    path = write_campaign_report("runs/backhaul-campaign")   # or `edgestage report CAMPAIGN_DIR`

A strategy is the requests' `strategy` column: with `--strategies each` every run holds one, without
it every run interleaves them all.  Rows are per strategy at each grid point (the grid's fields as
columns, named by their dotted paths), across the campaign's repetitions:

    per_strategy    requests, done, failed and repetitions; the mean latency of the done requests
                    of every repetition with its 95 % interval over those requests, and over the
                    repetitions (the mean of the per-repetition means, its interval from them); p50
                    and p95 (with its interval); images delivered and wire bytes per image (over the
                    runs that have a traffic.parquet)
    per_repetition  each repetition's requests, done, failed, mean and p50 latency: what the
                    interval over repetitions is made of
    paired          each strategy against a reference (cloud_only where it ran, else the first) on
                    the same requests: same grid point, same repetition, same request (its id; in a
                    run of several strategies, its round: analysis/interleaving.py), both done
                    (analysis.compare_tables.paired_table): the ratio of mean latencies, its paired
                    interval, the Wilcoxon signed-rank p and the number of pairs
    quality         class accuracy and FID of the plans each strategy used, from each run's
                    summary.json, weighted by the run's done requests (the one table not made from
                    the parquet files: quality is judged per plan, not per request)

Every number of the first three is recomputed from the runs' parquet files as analysis.load.load_runs
loads them (measured requests: warm-ups left out; a request is its first stage's row), so that a test
or a reader can check them (tests/analysis/campaign_checks.py).  Only completed runs count (their
manifest's status; a run the index says `overran` is left out by load_runs); the others are named
in the report.  Figures: quality_vs_latency (the Pareto
view, as in a run's report) and latency_by_repetition.  Every time is emulated (the runs' clock).
Intervals: analysis/statistics.py, seeded, so the same directory gives the same report.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from analysis.compare_tables import REFERENCE, paired_table  # noqa: E402
from analysis.load import RunTables, find_runs, load_runs  # noqa: E402
from analysis.outputs import Block, Figure, Table, save_figure, write_table  # noqa: E402
from analysis.report import (  # noqa: E402
    POINT_COLUMNS,
    QUALITY_KEYS,
    current_strategies,
    markdown,
    plot_quality_vs_latency,
    replace_text,
)
from analysis.statistics import mean_interval, percentile_interval, settings  # noqa: E402
from nodes.planning.quality_table import SECOND_JUDGE  # noqa: E402

# each table's columns after the grid's fields; seconds are emulated, bytes on the wire
PER_STRATEGY_COLUMNS = ["strategy", "repetitions", "requests", "done", "failed", "latency_mean_s",
                        "latency_mean_ci_low_s", "latency_mean_ci_high_s", "latency_mean_of_repetitions_s",
                        "latency_mean_of_repetitions_ci_low_s", "latency_mean_of_repetitions_ci_high_s",
                        "latency_p50_s", "latency_p95_s", "latency_p95_ci_low_s", "latency_p95_ci_high_s",
                        "images", "wire_bytes_per_image"]
PER_REPETITION_COLUMNS = ["strategy", "repetition", "run_id", "requests", "done", "failed", "latency_mean_s",
                          "latency_p50_s"]
PAIRED_COLUMNS = ["strategy", "reference", "n_pairs", "repetitions", "latency_mean_s",
                  "reference_latency_mean_s", "latency_mean_ratio", "latency_mean_ratio_ci_low",
                  "latency_mean_ratio_ci_high", "wilcoxon_p", "note"]
# both judges' figures (nodes/planning/quality_table.py): the first's accuracy and FID, then the second's
JUDGED = ("class_accuracy", "fid", *SECOND_JUDGE)
QUALITY_COLUMNS = ["strategy", "runs", *JUDGED, "n_quality"]
# how a column is shown in report.md, the .tex and the HTML (the CSV keeps full precision)
_COUNTS = {"repetitions", "requests", "done", "failed", "images", "n_pairs", "runs", "n_quality",
           "repetition"}
_FORMATS = {"wire_bytes_per_image": "{:,.0f}", "wilcoxon_p": "{:.2g}", "class_accuracy": "{:.3f}",
            "fid": "{:.2f}", "svm_class_accuracy": "{:.3f}", "pca_fd": "{:.2f}", "judge_agreement": "{:.3f}"}


@dataclass(frozen=True)
class CampaignTables:
    """A campaign's tables (each as its CSV holds it) and what they were made of."""

    fields: list[str]  # the grid's fields, the first columns of every table
    reference: str | None  # the paired table's reference strategy
    per_strategy: pd.DataFrame
    per_repetition: pd.DataFrame
    paired: pd.DataFrame
    quality: pd.DataFrame
    left_out: dict[str, str]  # run -> its status, for every run of campaign.json not completed


def read_campaign(campaign_dir: str | Path) -> dict[str, Any]:
    """CAMPAIGN/campaign.json; ValueError (one line) where there is none or it is not a campaign's."""
    path = Path(campaign_dir) / "campaign.json"
    try:
        meta = json.loads(path.read_text())
    except FileNotFoundError:
        raise ValueError(f"{campaign_dir}: no campaign.json (not a campaign directory)") from None
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: not readable JSON ({exc})") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("runs"), list):
        raise ValueError(f"{path}: not a campaign index (no list of runs)")
    return meta


def grid_fields(meta: dict[str, Any]) -> list[str]:
    """The grid's fields in the order campaign.json gives them (none for a campaign of repetitions)."""
    return [str(entry[0]) for entry in meta.get("grid") or []]


def first_rows(requests: pd.DataFrame) -> pd.DataFrame:
    """One row per measured request of each run: its first stage's (its only row where it got no plan)."""
    if "stage_index" in requests:  # else a frame of one row per request already
        requests = requests[requests["stage_index"].fillna(0) == 0]
    return requests.drop_duplicates(["run_id", "request_id"])


def campaign_tables(campaign_dir: str | Path, reference: str | None = None) -> CampaignTables:
    """The campaign report's tables, from the completed runs' parquet files (and summary.json for
    quality); `reference` (default cloud_only where it ran, else the first strategy) is what the
    paired table compares against. ValueError (one line) where the directory holds no campaign, no
    completed run, or `reference` is not one of its strategies."""
    d = Path(campaign_dir)
    meta = read_campaign(d)
    fields = grid_fields(meta)
    order = {str(r.get("run_dir", r.get("name"))): i
             for i, r in enumerate(meta["runs"]) if isinstance(r, dict)}
    loaded = load_runs(d) if find_runs(d) else None  # load_runs refuses a directory of no run
    runs = loaded.runs if loaded is not None else pd.DataFrame(columns=["run_id", "status"])
    completed = runs[(runs["status"] == "completed") & runs["run_id"].isin(list(order))]
    status = dict(zip(runs["run_id"], runs["status"].fillna("incomplete"), strict=True))
    left_out = {name: str(status.get(name, "incomplete" if (d / name).is_dir() else "pending"))
                for name in order if name not in set(completed["run_id"])}
    if loaded is None or completed.empty:
        raise ValueError(f"{d}: no completed run to report on ({len(order)} in campaign.json)")
    kept = _completed(loaded, completed)
    first, traffic = _in_campaign_order(first_rows(kept.requests), order), kept.traffic
    strategies = list(dict.fromkeys(first["strategy"].dropna()))
    if reference is None:
        reference = REFERENCE if REFERENCE in strategies else strategies[0] if strategies else None
    elif reference not in strategies:
        raise ValueError(f"reference {reference!r}: not a strategy of this campaign "
                         f"(its strategies: {', '.join(strategies)})")
    per_strategy = per_strategy_table(first, traffic, fields)
    return CampaignTables(fields, reference, per_strategy, per_repetition_table(first, fields),
                          paired_campaign_table(first, fields, reference),
                          quality_table(completed, fields, per_strategy), left_out)


def _completed(loaded: RunTables, completed: pd.DataFrame) -> RunTables:
    ids = set(completed["run_id"])
    return RunTables(completed, *(frame[frame["run_id"].isin(ids)] for frame in (loaded.requests,
                                                                                 loaded.traffic)))


def _in_campaign_order(first: pd.DataFrame, order: dict[str, int]) -> pd.DataFrame:
    """The rows in campaign.json's order of runs (load_runs sorts run ids as text, which puts
    bw=10 before bw=5), so that grid points and strategies come out in the order they ran."""
    position = first["run_id"].map(order)
    return first.assign(_position=position).sort_values("_position", kind="stable").drop(columns="_position")


def _groups(frame: pd.DataFrame, keys: list[str]) -> list[tuple[dict[str, Any], pd.DataFrame]]:
    """(key column -> value, rows) per group in order of first appearance; a missing value (a
    field the run's entry lacks) is a group of its own."""
    out = []
    for values, group in frame.groupby(keys, sort=False, dropna=False):
        values = values if isinstance(values, tuple) else (values,)
        out.append((dict(zip(keys, values, strict=True)), group))
    return out


def per_strategy_table(first: pd.DataFrame, traffic: pd.DataFrame, fields: list[str]) -> pd.DataFrame:
    """One row per grid point and strategy: see the module docstring."""
    wire = _wire_bytes_by_request(traffic)
    with_traffic = set(wire.index.get_level_values("run_id")) if wire is not None else set()
    rows = []
    for key, group in _groups(first, [*fields, "strategy"]):
        ok = group[group["outcome"] == "ok"]
        totals = ok["total_s"].astype(float).to_numpy()
        pooled, p95 = mean_interval(totals), percentile_interval(totals, 95)
        by_repetition = mean_interval(ok.groupby("campaign_repetition")["total_s"].mean().to_numpy())
        # none done, or requests that do not say: no count rather than a 0 that reads as measured
        images = ok["n_images"].astype(float).sum(min_count=1) if "n_images" in ok else np.nan
        rows.append({**key, "repetitions": group["campaign_repetition"].nunique(), "requests": len(group),
                     "done": len(ok), "failed": len(group) - len(ok), "latency_mean_s": pooled.estimate,
                     "latency_mean_ci_low_s": pooled.low, "latency_mean_ci_high_s": pooled.high,
                     "latency_mean_of_repetitions_s": by_repetition.estimate,
                     "latency_mean_of_repetitions_ci_low_s": by_repetition.low,
                     "latency_mean_of_repetitions_ci_high_s": by_repetition.high,
                     "latency_p50_s": np.percentile(totals, 50) if len(totals) else None,
                     "latency_p95_s": p95.estimate, "latency_p95_ci_low_s": p95.low,
                     "latency_p95_ci_high_s": p95.high, "images": images,
                     "wire_bytes_per_image": _per_image(ok[ok["run_id"].isin(with_traffic)], wire)})
    return _numeric(pd.DataFrame(rows, columns=[*fields, *PER_STRATEGY_COLUMNS]), PER_STRATEGY_COLUMNS)


def _wire_bytes_by_request(traffic: pd.DataFrame) -> pd.Series | None:
    """Bytes on the wire per (run, request), every link and packet (ACKs included), as summary.json's
    wire_bytes_per_image counts them; None where no run has a traffic table."""
    if traffic.empty or not {"request_id", "wire_bytes"} <= set(traffic.columns):
        return None
    attributed = traffic.dropna(subset=["request_id"])
    return attributed.groupby(["run_id", "request_id"])["wire_bytes"].sum()


def _per_image(ok: pd.DataFrame, wire: pd.Series | None) -> float | None:
    """Wire bytes of these done requests over the images they delivered; None without either."""
    if wire is None or ok.empty or "n_images" not in ok:
        return None
    images = ok["n_images"].astype(float).sum()
    keys = pd.MultiIndex.from_frame(ok[["run_id", "request_id"]])
    sent = wire.reindex(keys).fillna(0).sum()  # a request without a packet of its own sent nothing
    return float(sent / images) if images else None


def per_repetition_table(first: pd.DataFrame, fields: list[str]) -> pd.DataFrame:
    """One row per grid point, strategy and repetition (per_strategy's order, then the
    repetition's): its requests and its mean and p50 latency."""
    rows = []
    for key, rows_of_strategy in _groups(first, [*fields, "strategy"]):
        for repetition, group in rows_of_strategy.groupby("campaign_repetition", sort=True):
            totals = group.loc[group["outcome"] == "ok", "total_s"].astype(float)
            rows.append({**key, "repetition": repetition, "run_id": ";".join(dict.fromkeys(group["run_id"])),
                         "requests": len(group), "done": len(totals), "failed": len(group) - len(totals),
                         "latency_mean_s": totals.mean() if len(totals) else None,
                         "latency_p50_s": totals.median() if len(totals) else None})
    return _numeric(pd.DataFrame(rows, columns=[*fields, *PER_REPETITION_COLUMNS]), PER_REPETITION_COLUMNS)


def paired_campaign_table(first: pd.DataFrame, fields: list[str], reference: str | None) -> pd.DataFrame:
    """Per grid point, each strategy against `reference` over the requests both completed, paired
    by (repetition, analysis/interleaving.py's pair_key: the request id of runs of one strategy, the
    round of runs of several): compare's paired table, with the repetitions the pairs come from."""
    from analysis.interleaving import pair_key

    first = first.assign(pair=pair_key(first))
    parts = []
    points = _groups(first, fields) if fields else [({}, first)]
    for key, point in points:
        ok = point[point["outcome"] == "ok"]
        latencies = {}
        for strategy in dict.fromkeys(point["strategy"].dropna()):
            mine = ok[ok["strategy"] == strategy]
            index = pd.MultiIndex.from_frame(mine[["campaign_repetition", "pair"]])
            latencies[strategy] = pd.Series(mine["total_s"].astype(float).to_numpy(), index=index)
        if reference not in latencies:
            continue
        pairs = paired_table(latencies, reference)
        base = latencies[reference].index
        pairs.insert(3, "repetitions", [
            latencies[s].index.intersection(base).get_level_values(0).nunique() for s in pairs["strategy"]])
        parts.append(pairs.assign(**key)[[*fields, *PAIRED_COLUMNS]])
    frame = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=[*fields, *PAIRED_COLUMNS])
    return _numeric(frame, [c for c in PAIRED_COLUMNS if c != "note"])


def quality_table(completed: pd.DataFrame, fields: list[str], per_strategy: pd.DataFrame) -> pd.DataFrame:
    """Per row of `per_strategy`: both judges' figures (JUDGED) of the strategy's plans as its runs'
    summary.json entries give them, weighted by each run's done requests, the smallest n (images
    per plan) and how many runs gave a figure; empty cells where none did."""
    entries = []
    for run in completed.to_dict("records"):
        summary = _summary(Path(run["run_dir"]))
        for name, entry in current_strategies(summary.get("strategies") or {}).items():
            entries.append({**{f: run.get(f) for f in fields}, "strategy": name, "done": entry.get("done"),
                            **{k: entry.get(k) for k in (*JUDGED, "n_quality")}})
    frame = pd.DataFrame(entries, columns=[*fields, "strategy", "done", *JUDGED, "n_quality"])
    rows = []
    for key in per_strategy[[*fields, "strategy"]].to_dict("records"):
        mine = frame[np.logical_and.reduce([_equal(frame[c], v) for c, v in key.items()])]
        rows.append({**key, **weighted_quality(mine)})
    return _numeric(pd.DataFrame(rows, columns=[*fields, *QUALITY_COLUMNS]), QUALITY_COLUMNS)


def weighted_quality(entries: pd.DataFrame) -> dict[str, Any]:
    """The runs' figures of one strategy, each weighted by the run's done requests (the weight
    summary.json's own figure has within a run: its plans' requests)."""
    done = pd.to_numeric(entries["done"], errors="coerce").fillna(0)
    out: dict[str, Any] = {}
    judged = pd.Series(False, index=entries.index)
    for key in JUDGED:
        value = pd.to_numeric(entries[key], errors="coerce")
        has = value.notna() & (done > 0)
        judged |= has
        out[key] = float((value[has] * done[has]).sum() / done[has].sum()) if has.any() else None
    n = pd.to_numeric(entries["n_quality"], errors="coerce")[judged]
    out.update(runs=int(judged.sum()), n_quality=n.min() if n.notna().any() else None)
    return out


def _equal(column: pd.Series, value: Any) -> pd.Series:
    return column.isna() if pd.isna(value) else column == value


def _summary(run_dir: Path) -> dict[str, Any]:
    try:
        summary = json.loads((run_dir / "summary.json").read_text())
    except (OSError, ValueError):
        return {}
    return summary if isinstance(summary, dict) else {}


def _numeric(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """Numbers as numbers, a missing one NaN (an empty CSV cell), never None in an object column."""
    for column in columns:
        if column not in ("strategy", "reference", "run_id"):
            frame[column] = pd.to_numeric(frame[column], errors="coerce")
    return frame


# ---- the report -------------------------------------------------------------------------------

def write_campaign_report(campaign_dir: str | Path, reference: str | None = None) -> Path:
    """Write CAMPAIGN/report.md, report.html, tables/*.csv and *.tex, plots/*.png and *.pdf; the
    path of report.md. ValueError (one line) where the directory holds no campaign or no completed
    run; then nothing is written."""
    from analysis.report_html import report_html

    d = Path(campaign_dir)
    meta = read_campaign(d)
    tables = campaign_tables(d, reference)
    figures = []
    if (tables.per_strategy["done"] > 0).any():  # no figure of nothing
        plots = d / "plots"
        plots.mkdir(exist_ok=True)
        figures = write_campaign_figures(tables, plots)
    blocks = campaign_blocks(meta, tables, [(title, path.relative_to(d)) for title, path in figures])
    for block in blocks:
        if isinstance(block, Table):
            write_table(block.data, d / "tables", block.name, block.shown)
    path = d / "report.md"
    replace_text(path, markdown(blocks))
    replace_text(d / "report.html", report_html(blocks, d))
    return path


def campaign_blocks(meta: dict[str, Any], tables: CampaignTables,
                    figures: list[tuple[str, Path]]) -> list[Block]:
    """The report, section by section, from which report.md, report.html and tables/ are written."""
    runs = len(meta["runs"])
    scenario = str(meta.get("scenario") or "?")
    lines: list[Block] = [f"# Campaign of {Path(scenario).name}", "",
                          f"{runs} runs of `{scenario}`: {_shape(meta)}. {_dilation(meta)}", ""]
    if tables.left_out:
        left = "; ".join(f"`{name}` ({status})" for name, status in tables.left_out.items())
        lines += [f"**{len(tables.left_out)} of {runs} runs left out** (not completed): {left}.", ""]
    stats = settings()
    lines += [f"Every latency is in emulated seconds (the runs' clock), of measured requests (warm-ups left "
              "out), from the runs' `requests.parquet` (bytes: `traffic.parquet`) as "
              f"`analysis.load.load_runs` loads them. Intervals: {stats['confidence'] * 100:g} % "
              f"{stats['method']} ({stats['resamples']} resamples, seed {stats['seed']}, "
              "`analysis/statistics.py`); none where there are fewer than two values.", "",
              "## Per strategy", "", _table("per_strategy", tables.per_strategy), "",
              "`latency_mean_s` and its interval pool the done requests of every repetition; "
              "`latency_mean_of_repetitions_s` is the mean of each repetition's mean (the next table), its "
              "interval over the repetitions, which also holds what varies from one network and seed to "
              "the next. `wire_bytes_per_image`: every packet of the done requests on every link, ACKs "
              "included, over the images they delivered (runs with a `traffic.parquet`).", "",
              "## Per repetition", "", _table("per_repetition", tables.per_repetition), ""]
    lines += _paired_lines(meta, tables)
    lines += ["## Quality", "", _table("quality", tables.quality), "",
              "Class accuracy and FID of the plans each strategy used, from each run's `summary.json` (each "
              "plan judged on n images of its own: `n_quality`), weighted by the run's done requests; "
              "`runs`: how many runs gave a figure; \"-\" where quality was not measured (`--no-quality`).",
              ""]
    lines += [Figure(title, path) for title, path in figures]
    return lines


def _paired_lines(meta: dict[str, Any], tables: CampaignTables) -> list[Block]:
    if tables.reference is None:
        return []
    lines: list[Block] = [f"## Paired against `{tables.reference}`", "", _table("paired", tables.paired), "",
                          "Each strategy's requests against the reference's on the same request in the "
                          "same repetition (and grid point), both done (strategies alone: the same "
                          "request id; together: the same round, one request through each): "
                          "`latency_mean_ratio` is the "
                          "strategy's mean latency over the reference's on those pairs (below 1: faster), "
                          "its interval from resampling whole pairs, `wilcoxon_p` the two-sided Wilcoxon "
                          "signed-rank p-value of the differences.", ""]
    if meta.get("strategies") != "each" and not (tables.paired["n_pairs"] > 0).any():
        lines += ["The strategies ran together and no round had the reference and another strategy "
                  "both done: there are no pairs.", ""]
    return lines


def _shape(meta: dict[str, Any]) -> str:
    grid = [f"{f} = {', '.join(map(str, values))}" for f, values in meta.get("grid") or []]
    strategies = ("each strategy alone" if meta.get("strategies") == "each"
                  else "the strategies interleaved in every run")
    return "; ".join([*(grid or ["no grid"]), strategies, f"{meta.get('repetitions', '?')} repetitions"])


def _dilation(meta: dict[str, Any]) -> str:
    k = meta.get("time_dilation")
    if k is None:
        return "Time dilation: each run its own (see its manifest)."
    return f"Time dilation K = {k:g} for every run ({meta.get('how') or 'how not recorded'})."


def _table(name: str, data: pd.DataFrame) -> Table:
    shown = shown_cells(data)
    align = tuple("right" if pd.api.types.is_numeric_dtype(data[c]) else "left" for c in data.columns)
    text = shown.to_markdown(index=False, colalign=align, disable_numparse=True) if len(shown) else "(none)"
    return Table(name, data.reset_index(drop=True), shown.reset_index(drop=True), text)


def shown_cells(data: pd.DataFrame) -> pd.DataFrame:
    """Every cell as the report shows it: counts whole, bytes with thousands separators, p to two
    figures, other numbers to four; "-" where missing."""
    out = pd.DataFrame(index=data.index)
    for column in data.columns:
        fmt = "{:.0f}" if column in _COUNTS else _FORMATS.get(column, "{:.4g}")
        numeric = pd.api.types.is_numeric_dtype(data[column])
        out[column] = [("-" if pd.isna(v) else fmt.format(v) if numeric else str(v)) for v in data[column]]
    return out


# ---- figures ----------------------------------------------------------------------------------

def write_campaign_figures(tables: CampaignTables, plots: Path) -> list[tuple[str, Path]]:
    """The Pareto view and the per-repetition means, each as PNG and PDF."""
    points = campaign_points(tables)
    pareto = plot_quality_vs_latency(points, plots / "quality_vs_latency.png",
                                     interval="over the requests of every repetition")
    by_repetition = plot_latency_by_repetition(tables, plots / "latency_by_repetition.png")
    return [("Quality against latency", pareto), ("Mean latency per repetition", by_repetition)]


def _labels(frame: pd.DataFrame, fields: list[str], strategy: bool = True) -> list[str]:
    """A row's name in a figure: its strategy, and its grid point by each field's last part."""
    return [", ".join([*([str(row["strategy"])] if strategy else []),
                       *(f"{f.rsplit('.', 1)[-1]}={row[f]}" for f in fields)])
            for row in frame.to_dict("records")]


def campaign_points(tables: CampaignTables) -> pd.DataFrame:
    """The Pareto figure's points: per_strategy's pooled mean and interval, quality's figures."""
    s, q = tables.per_strategy, tables.quality
    points = pd.DataFrame({"label": _labels(s, tables.fields), "strategy": s["strategy"],
                           "group": _labels(s, tables.fields, strategy=False),
                           "latency_mean_s": s["latency_mean_s"],
                           "latency_mean_ci_low_s": s["latency_mean_ci_low_s"],
                           "latency_mean_ci_high_s": s["latency_mean_ci_high_s"],
                           **{k: q[k] for k in QUALITY_KEYS}})
    return points[POINT_COLUMNS].set_index("label")


def plot_latency_by_repetition(tables: CampaignTables, path: Path) -> Path:
    """Per strategy (and grid point): each repetition's mean latency as a dot, the mean of those
    means with its interval over repetitions, and the pooled mean with its interval over requests."""
    s, reps, fields = tables.per_strategy, tables.per_repetition, tables.fields
    labels = _labels(s, fields)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(s) + 2), 4.5))
    for i, row in enumerate(s.to_dict("records")):
        mine = reps[np.logical_and.reduce([_equal(reps[c], row[c]) for c in [*fields, "strategy"]])]
        ax.scatter([i - 0.15] * len(mine), mine["latency_mean_s"], s=22, color="tab:blue", alpha=0.7,
                   label="one repetition's mean" if i == 0 else None)
        for dx, key, colour, what in ((0.05, "latency_mean_of_repetitions", "black",
                                       "mean of the repetitions' means, 95 % interval over repetitions"),
                                      (0.2, "latency_mean", "grey",
                                       "mean of all requests, 95 % interval over requests")):
            mean, low, high = (row[f"{key}{part}"] for part in ("_s", "_ci_low_s", "_ci_high_s"))
            if pd.isna(mean):
                continue
            err = [[0 if pd.isna(low) else mean - low], [0 if pd.isna(high) else high - mean]]
            ax.errorbar([i + dx], [mean], yerr=err, fmt="s", color=colour, capsize=4, markersize=5,
                        label=what if i == 0 else None)
    crowded = len(s) > 4  # slanted labels, so that long grid points do not overlap
    ax.set_xticks(range(len(s)), labels, rotation=20 if crowded else 0, ha="right" if crowded else "center",
                  fontsize=8)
    ax.set_ylim(bottom=0)
    ax.set_ylabel("mean request latency (emulated s)")
    ax.set_title("mean latency per repetition, and across them", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    return save_figure(fig, path)
