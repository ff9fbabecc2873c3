"""A run's report, made from the run directory alone: `report.md`, the same as a self-contained
`report.html` (analysis/report_html.py), every table it shows as `tables/<name>.csv` and `.tex`
(booktabs), and its figures in `plots/`, each as PNG and PDF (analysis/outputs.py).

The runner writes it at the end of every run; `edgestage report RUN_DIR` writes it again (after
editing the analysis, say). Figures (every time on them is emulated, the run's clock):
    latency_cdf.png        each strategy's request latencies as a CDF
    latency_over_time.png  each request's latency against when it was sent, the link changes
                           marked, and the plans an adaptive strategy (elastic, routing) chose
    latency_parts.png      where a request's time goes, per strategy (mean seconds)
    quality_vs_latency.png the Pareto view: per strategy, its mean latency with the 95 % bootstrap
                           interval over its requests against what it buys (class accuracy and
                           FID of the plans it used, a panel each)
    prediction.png         per request, the latency the coordinator predicted when it planned
                           (nodes/planning/planner.py) against the measured one
Quality is shown per plan, from analysis/plan_quality.py's figures (n images each, n beside every
figure); the run's own few images give only the `run-sample` columns, labelled as such. A run in
which nothing was done still gets its report: what failed and why, no figures. Energy per image
(analysis/energy.py) sits in the per-strategy table; a strategy whose profiled compute overran gets
a warning above it, with how many steps, requests and seconds.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from analysis.outputs import Block, Figure, Table, save_figure, write_table  # noqa: E402
from analysis.run_tables import load_run, read_link_events  # noqa: E402
from analysis.statistics import mean_interval  # noqa: E402
from analysis.summary import overrun_parts, per_request  # noqa: E402
from nodes.planning.cascade_table import LATENT_NUMBERS  # noqa: E402
from nodes.planning.quality_table import FIGURES as PLAN_FIGURES  # noqa: E402

# latency parts as the records name them, grouped as a reader thinks of them
PARTS = {"uplink and planning": ["uplink_s", "planning_s"], "compute": ["compute_s"],
         "state transfer": ["transfer_s", "handoff_s"], "queueing": ["queueing_s"],
         "result transfer": ["result_transfer_s"]}
# each quality figure (nodes/planning/quality_table.py FIGURES) -> (column heading, format)
FIGURE_HEADINGS = {"fid": ("FID", "{:.2f}"), "kid": ("KID", "{:.4f}"),
                   "class_accuracy": ("class accuracy", "{:.3f}"),
                   "psnr_vs_large_db": ("PSNR vs large (dB)", "{:.2f}"),
                   "svm_class_accuracy": ("class accuracy (SVM)", "{:.3f}"),
                   "pca_fd": ("FD (PCA)", "{:.2f}"), "judge_agreement": ("judges agree", "{:.3f}")}
# the figures the run's own images get (no PSNR: they have no large-only reference)
_SAMPLE_FIGURES = [f for f in PLAN_FIGURES if f != "psnr_vs_large_db"]
# summary.json key -> (column heading, format)
SUMMARY_COLUMNS = {"done": ("done", "{:.0f}"), "failed": ("failed", "{:.0f}"),
                   "latency_mean_s": ("mean latency (s)", "{:.3f}"),
                   "latency_mean_ci_low_s": ("CI low (s)", "{:.3f}"),
                   "latency_mean_ci_high_s": ("CI high (s)", "{:.3f}"),
                   "latency_p50_s": ("p50 latency (s)", "{:.3f}"),
                   "latency_p95_s": ("p95 latency (s)", "{:.3f}"),
                   **{f: FIGURE_HEADINGS[f] for f in _SAMPLE_FIGURES},
                   "n_quality": ("n (quality, per plan)", "{:.0f}"),
                   "wire_bytes_per_image": ("wire bytes / image", "{:,.0f}"),
                   "report_bytes_per_image": ("of which reports", "{:,.0f}"),
                   "device_energy_per_image_j": ("device J / image", "{:.3g}"),
                   "compute_energy_per_image_j": ("compute J / image", "{:.3g}"),
                   "overrun_steps": ("overrun steps", "{:.0f}"),
                   "overlap_mean": ("overlap (requests)", "{:.1f}"),
                   **{f"run_sample_{f}": (f"run-sample {FIGURE_HEADINGS[f][0]}", FIGURE_HEADINGS[f][1])
                      for f in _SAMPLE_FIGURES if f != "kid"},
                   "run_sample_images": ("run-sample n", "{:.0f}")}
# a strategy's plan_quality rows -> (column heading, format)
PLAN_COLUMNS = {"plan": ("plan", "{}"), "scheduler": ("scheduler", "{}"), "steps": ("steps", "{:.0f}"),
                "requests": ("requests", "{:.0f}"), "n_images": ("n", "{:.0f}"),
                **{f: FIGURE_HEADINGS[f] for f in PLAN_FIGURES}}
# the cascade table's columns the report shows, every threshold a row (a latent one's besides: the
# prompts' attributes found in the images)
CASCADE_COLUMNS = ["threshold", "escalation_rate", *(f for f in PLAN_FIGURES if f != "psnr_vs_large_db"), "n"]
# summary.json written before per-plan quality: its pooled figures were the run's own sample
_OLD_QUALITY_KEYS = {"fid": "run_sample_fid", "kid": "run_sample_kid", "kid_std": "run_sample_kid_std",
                     "class_accuracy": "run_sample_class_accuracy", "quality_images": "run_sample_images"}
_DOCUMENTS = ("summary", "manifest", "accuracy")
# strategies that choose a plan per request: the latency-over-time figure marks each plan they chose
ADAPTIVE = ("elastic", "routing")
# the Pareto figure's points: summary.json's quality keys, and the columns plot_quality_vs_latency reads
QUALITY_KEYS = ("class_accuracy", "fid", "n_quality")
# (`group`: a campaign's grid point, as text; empty in a run)
POINT_COLUMNS = ["label", "strategy", "group", "latency_mean_s", "latency_mean_ci_low_s",
                 "latency_mean_ci_high_s", *QUALITY_KEYS]


def write_report(run_dir: str | Path) -> Path:
    """Write <run_dir>/report.md, report.html, tables/*.csv and *.tex, plots/*.png and *.pdf; the
    path of report.md. ValueError, naming the file, if the directory holds no run (requests.parquet
    and summary.json) or one of its JSON documents is not a JSON object; then nothing is written."""
    from analysis.report_html import report_html

    d = Path(run_dir)
    check_documents(d)
    run = load_run(d)
    if "requests" not in run or "summary" not in run:
        raise ValueError(f"{d} is not a run directory (no requests.parquet or summary.json)")
    requests = run["requests"]
    if "warmup" in requests.columns:
        requests = requests[requests["warmup"].ne(True)]
    strategies = current_strategies(run["summary"].get("strategies") or {})
    plots = d / "plots"
    created = not plots.exists()
    plots.mkdir(exist_ok=True)
    try:
        figures = write_figures(requests, strategies, plots, read_link_events(d))
    finally:
        if created and not any(plots.iterdir()):
            plots.rmdir()  # nothing to show: leave no empty folder behind
    blocks = report_blocks({**run, "requests": requests}, [(t, p.relative_to(d)) for t, p in figures])
    for table in report_tables(blocks):
        write_table(table.data, d / "tables", table.name, table.shown)
    path = d / "report.md"
    replace_text(path, markdown(blocks))
    replace_text(d / "report.html", report_html(blocks, d))
    return path


def replace_text(path: Path, text: str) -> None:
    """Write whole or not at all: a reader never sees half a report (the campaign's too)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def report_tables(blocks: list[Block]) -> list[Table]:
    return [b for b in blocks if isinstance(b, Table)]


def markdown(blocks: list[Block]) -> str:
    """report.md's text."""
    return "\n".join(markdown_lines(blocks))


def markdown_lines(blocks: list[Block]) -> list[str]:
    lines: list[str] = []
    for block in blocks:
        if isinstance(block, Table):
            lines.append(block.markdown)
        elif isinstance(block, Figure):
            lines += [f"## {block.title}", "", f"![{block.title}]({block.path.as_posix()})", ""]
        else:
            lines.append(block)
    return lines


def check_documents(d: Path) -> None:
    """ValueError naming the file unless each JSON document present is an object (summary.json's
    strategies an object of objects)."""
    for name in _DOCUMENTS:
        path = d / f"{name}.json"
        if not path.is_file():
            continue
        try:
            document = json.loads(path.read_bytes())
        except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
            raise ValueError(f"{path}: not valid JSON ({exc})") from None
        if not isinstance(document, dict):
            raise ValueError(f"{path}: expected a JSON object, found {type(document).__name__}")
        strategies = document.get("strategies") if name == "summary" else None
        if strategies is not None and not (isinstance(strategies, dict)
                                           and all(isinstance(e, dict) for e in strategies.values())):
            raise ValueError(f"{path}: 'strategies' must map each strategy to an object")


def current_strategies(strategies: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Entries as this version writes them: an old run's pooled figures become run_sample_*."""
    out = {}
    for name, entry in strategies.items():
        if "quality_images" in entry and "n_quality" not in entry:
            entry = {_OLD_QUALITY_KEYS.get(k, k): v for k, v in entry.items()}
        out[name] = entry
    return out


def ok_requests(requests: pd.DataFrame) -> pd.DataFrame:
    if requests.empty or "outcome" not in requests.columns:
        return requests.iloc[0:0]
    return requests[requests["outcome"] == "ok"]


def write_figures(requests: pd.DataFrame, strategies: dict[str, dict[str, Any]], plots: Path,
                  link_events: list[dict[str, Any]] | None = None) -> list[tuple[str, Path]]:
    """The figures there is something to draw for: none when no request was done."""
    ok = ok_requests(requests)
    if ok.empty:
        return []
    figures = [("Latency", plot_latency_cdf(requests, plots / "latency_cdf.png")),
               ("Latency over time", plot_latency_over_time(requests, link_events or [],
                                                            plots / "latency_over_time.png"))]
    if ok["stage_index"].notna().any():
        figures.append(("Where the time goes", plot_latency_parts(requests, plots / "latency_parts.png")))
    if any(e.get("done") for e in strategies.values()):
        points = quality_points(requests, strategies)
        figures.append(("Quality against latency",
                         plot_quality_vs_latency(points, plots / "quality_vs_latency.png")))
    if "predicted_total_s" in ok and ok["predicted_total_s"].notna().any():
        figure = plot_prediction(requests, plots / "prediction.png")
        figures.append(("Predicted against measured latency", figure))
    cascades = cascade_tables(strategies)
    if cascades:
        figure = plot_cascade(cascades, plots / "cascade.png")
        figures.append(("Cascade: quality against the threshold", figure))
    return figures


def summary_frame(strategies: dict[str, dict[str, Any]]) -> pd.DataFrame:
    """The per-strategy table of report.md, formatted ("-" where a figure is missing)."""
    return _formatted(summary_values(strategies), SUMMARY_COLUMNS)


def summary_values(strategies: dict[str, dict[str, Any]]) -> pd.DataFrame:
    """The per-strategy table's values as summary.json has them, under the table's headings."""
    return _values(pd.DataFrame.from_dict(strategies, orient="index"), SUMMARY_COLUMNS, "strategy")


def summary_table(strategies: dict[str, dict[str, Any]]) -> Table:
    values = summary_values(strategies)
    shown = _formatted(values, SUMMARY_COLUMNS)
    return _table("per_strategy", values.reset_index(), shown.reset_index(), _markdown(shown))


def plan_quality_frame(strategies: dict[str, dict[str, Any]]) -> pd.DataFrame:
    """One row per strategy and plan it used: the plan's figures from n images of its own."""
    values = plan_quality_values(strategies)
    return values if values.empty else _formatted(values, PLAN_COLUMNS)


def plan_quality_values(strategies: dict[str, dict[str, Any]]) -> pd.DataFrame:
    rows = [{"strategy": name, **row} for name, e in strategies.items()
            for row in e.get("plan_quality") or []]
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    return _values(frame.set_index("strategy"), PLAN_COLUMNS, "strategy")


def _values(frame: pd.DataFrame, columns: dict[str, tuple[str, str]], index: str) -> pd.DataFrame:
    """`frame`'s `columns` under their headings, numeric where the format is a number's (a column
    of None included), in `columns`' order."""
    frame = frame.reindex(columns=list(columns))
    out = pd.DataFrame(index=frame.index)
    for key, (heading, fmt) in columns.items():
        out[heading] = frame[key] if fmt == "{}" else pd.to_numeric(frame[key], errors="coerce")
    out.index.name = index
    return out


def _formatted(values: pd.DataFrame, columns: dict[str, tuple[str, str]]) -> pd.DataFrame:
    out = pd.DataFrame(index=values.index)
    for heading, fmt in columns.values():
        out[heading] = [("-" if _missing(v) else fmt.format(v)) for v in values[heading]]
    return out


def _table(name: str, data: pd.DataFrame, shown: pd.DataFrame | None, text: str) -> Table:
    """A Table; `shown` by default every cell of `data` as text."""
    if shown is None:
        shown = data.astype(object).map(lambda v: "-" if _missing(v) else str(v))
    return Table(re.sub(r"[^A-Za-z0-9_.-]+", "_", name), data.reset_index(drop=True),
                 shown.reset_index(drop=True), text)


def _floats_formatted(frame: pd.DataFrame, fmt: str) -> pd.DataFrame:
    """Every float cell as `format(v, fmt)`, as to_markdown's floatfmt shows it."""
    return frame.astype(object).map(
        lambda v: "-" if _missing(v) else format(v, fmt) if isinstance(v, float) else str(v))


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and value != value)


def _markdown(table: pd.DataFrame, text_columns: tuple[str, ...] = ()) -> str:
    align = ("left",) + tuple("left" if c in text_columns else "right" for c in table.columns)
    return table.to_markdown(colalign=align, disable_numparse=True)


def outcome_lines(requests: pd.DataFrame, strategies: dict[str, dict[str, Any]]) -> list[Block]:
    """What was done, and when nothing was, why: every failure reason with its count."""
    if not strategies:
        recorded = len(per_request(requests)) if not requests.empty else 0
        return [f"**Nothing was done: no request was recorded** ({recorded} measured requests in "
                "requests.parquet, no strategy in summary.json).", ""]
    done = sum(int(e.get("done") or 0) for e in strategies.values())
    total = sum(int(e.get("requests") or 0) for e in strategies.values())
    lines = []
    if done == 0:
        lines += [f"**Nothing was done: all {total} requests failed**, for the reasons below; there is no "
                  "latency, byte or quality figure for this run.", ""]
    reasons = [(name, reason, count) for name, e in strategies.items()
               for reason, count in (e.get("failure_reasons") or {}).items()]
    if reasons:
        frame = pd.DataFrame(reasons, columns=["strategy", "reason", "requests"])
        table = _table("failures", frame, None, frame.set_index("strategy").to_markdown())
        lines += ["## Failures", "", table, ""]
    return lines


def overrun_lines(strategies: dict[str, dict[str, Any]]) -> list[str]:
    """A warning paragraph naming every strategy whose profiled compute overran, and by how much."""
    parts = overrun_parts(strategies)
    if not parts:
        return []
    return [f"**Warning: profiled compute overran** in {'; '.join(parts)}. These steps really took longer "
            "than their hardware profile, so the latency (and compute energy) of these strategies is this "
            "machine's, not the emulated hardware's; `edgestage run --strict` fails such a run.", ""]


PAIRED_SHOWN = {"strategy": ("strategy", "{}"), "n_pairs": ("pairs", "{:.0f}"),
                "latency_mean_s": ("mean latency (s)", "{:.3f}"),
                "reference_latency_mean_s": ("reference's (s)", "{:.3f}"),
                "latency_mean_ratio": ("ratio", "{:.3f}"),
                "latency_mean_ratio_ci_low": ("CI low", "{:.3f}"),
                "latency_mean_ratio_ci_high": ("CI high", "{:.3f}"),
                "wilcoxon_p": ("Wilcoxon p", "{:.2g}"), "note": ("note", "{}")}


def paired_lines(paired: list[dict[str, Any]]) -> list[Block]:
    """The run's strategies against the reference on its rounds (summary.json's `paired`:
    analysis/interleaving.py), and how much the interleaved requests overlapped."""
    if not paired:
        return []
    frame = pd.DataFrame(paired)
    values = _values(frame, PAIRED_SHOWN, "row").reset_index(drop=True)
    shown = _formatted(values, PAIRED_SHOWN)
    table = _table("paired", values, shown, shown.to_markdown(index=False))
    return [f"## Paired against `{paired[0]['reference']}`", "", table, "",
            "The strategies run interleaved in rounds: a round is one request (device, labels, image seed) "
            "sent through every strategy, in an order that turns each round (`emulation/workload.py`). "
            "`ratio` is a strategy's mean latency over the reference's on the rounds both completed "
            "(below 1: faster), `CI` its 95 % interval from resampling whole rounds, `Wilcoxon p` the "
            "two-sided signed-rank p-value. Interleaved requests share links and hosts: the per-strategy "
            "table's `overlap` is how many other requests were in flight during each of a strategy's; "
            "`edgestage compare` runs each strategy alone on the same requests.", ""]


def energy_lines(strategies: dict[str, dict[str, Any]]) -> list[str]:
    """What the energy columns are, where there are any."""
    keys = ("device_energy_per_image_j", "compute_energy_per_image_j")
    if not any(e.get(k) is not None for e in strategies.values() for k in keys):
        return []
    return ["Energy, joules per delivered image: *device* is the requesting device's own compute (busy power "
            "x compute time) and radio (the radio energy of the request's own transfers: alpha per bit, "
            "beta while busy, tail power between them; promotions and idle tails depend on the other "
            "requests, so they are the device's, not a request's; `topologies/radio.py`); *compute* is "
            "every host's compute. Power figures: "
            "`nodes/profiles.toml`; \"-\" where a host is not profiled or has no power figures "
            "(`analysis/energy.py`).", ""]


def plan_lines(strategies: dict[str, dict[str, Any]]) -> list[Block]:
    """The plans of each strategy that chose more than one (elastic, routing), with how many
    requests each."""
    # the strategies whose plans differ by more than the requesting device
    varied = {n: e for n, e in strategies.items() if len(e.get("plans_without_hosts") or {}) > 1}
    rows = [{"strategy": name, "plan": plan, "requests": count}
            for name, entry in varied.items() for plan, count in (entry.get("plans") or {}).items()]
    if not rows:
        return []
    frame = pd.DataFrame(rows)
    return ["## Plans chosen", "", _table("plans_chosen", frame, None, frame.to_markdown(index=False)), "",
            "The coordinator's prediction for every plan it chose, against what happened, is in "
            "`accuracy.json` (`planner_prediction`) and the figure below.", ""]


def cascade_tables(strategies: dict[str, dict[str, Any]]) -> dict[str, tuple[dict, pd.DataFrame]]:
    """strategy -> (its summary entry's cascade, the cascade table's rows of its models at every
    threshold) for each cascade strategy that was judged."""
    from nodes.planning.cascade_table import is_latent_cascade, parse_cascade, read_cascade_table

    out = {}
    for name, entry in strategies.items():
        rows = [r for r in entry.get("plan_quality") or [] if str(r.get("plan", "")).startswith("cascade ")]
        # an escalation routed around a down host names another target: the one most used is shown
        for row in sorted(rows, key=lambda r: r.get("requests") or 0, reverse=True)[:1]:
            device, escalate, threshold = parse_cascade(row["plan"].removeprefix("cascade "))
            try:
                table = pd.DataFrame(read_cascade_table(row["scheduler"], int(row["steps"]),
                                                        latent=is_latent_cascade(device)))
            except ValueError:
                continue
            table = table[(table["device_model"] == device) & (table["escalate_model"] == escalate)]
            if row.get("guidance_scale") is not None:  # a latent cascade: the rows at its requests' guidance
                table = table[table["guidance_scale"] == row["guidance_scale"]]
            out[name] = ({"threshold": threshold, "device": device, "escalate": escalate,
                          "run_rate": entry.get("escalation_rate")}, table.sort_values("threshold"))
    return out


def cascade_lines(strategies: dict[str, dict[str, Any]]) -> list[str]:
    """What each cascade escalated in the run, and what its models give at every threshold."""
    return markdown_lines(cascade_blocks(strategies))


def cascade_blocks(strategies: dict[str, dict[str, Any]]) -> list[Block]:
    lines: list[Block] = []
    for name, (facts, table) in cascade_tables(strategies).items():
        entry = strategies[name]
        rate = facts["run_rate"]
        latent = "weight_agreement" in table
        made_by = "analysis/latent_cascade_quality.py" if latent else "analysis/cascade_quality.py"
        attributes = (" A latent pipeline's images are judged as their grey image, against the digit "
                      "their prompt names; `weight_agreement`, `slant_agreement` and `both_agreement` "
                      "are the shares whose stroke weight and slant are the prompt's.") if latent else ""
        lines += [f"## Cascade `{name}`", "",
                  f"`{facts['device']}` on the device; images whose requested digit the device's gate "
                  f"classifier gives less than {facts['threshold']:g} go to `{facts['escalate']}`. In this "
                  f"run it escalated {entry.get('escalated_images', 0)} of {entry.get('images', 0)} images "
                  f"({'-' if rate is None else f'{rate:.1%}'}) in {entry.get('escalated_requests', 0)} "
                  "requests. Quality against the threshold, on n images each (the cascade table, "
                  f"`{made_by}`), by both judges: the digit classifier's FID, KID and "
                  "class accuracy, and the second judge's (an SVM and a PCA on raw pixels, which shares "
                  "nothing with the gate, itself a CNN classifier as the first judge is): class accuracy "
                  f"(SVM), FD (PCA), and the share of images on which the two agree.{attributes}", "",
                  _cascade_table(name, table), ""]
    return lines


def _cascade_table(name: str, table: pd.DataFrame) -> Table:
    data = table[[*CASCADE_COLUMNS[:-1], *(c for c in LATENT_NUMBERS if c in table), CASCADE_COLUMNS[-1]]]
    return _table(f"cascade_{name}", data, _floats_formatted(data, ".4g"),
                  data.to_markdown(index=False, floatfmt=".4g"))


def plot_cascade(cascades: dict[str, tuple[dict, pd.DataFrame]], path: Path) -> Path:
    """Per cascade: escalation rate and both judges' class accuracy (left), FID (right) against the
    threshold, its own threshold marked, and the run's escalation rate."""
    fig, axes = plt.subplots(1, len(cascades), figsize=(6 * len(cascades), 4.2), squeeze=False)
    for ax, (name, (facts, table)) in zip(axes[0], cascades.items(), strict=True):
        x = table["threshold"]
        ax.plot(x, table["escalation_rate"], marker="o", label="escalated share (table)")
        ax.plot(x, table["class_accuracy"], marker="s", label="class accuracy (classifier)")
        ax.plot(x, table["svm_class_accuracy"], marker="D", label="class accuracy (SVM)")
        ax.axvline(facts["threshold"], color="grey", ls=":", lw=1)
        if facts["run_rate"] is not None:
            ax.scatter([facts["threshold"]], [facts["run_rate"]], color="red", zorder=3,
                       label="escalated share (this run)")
        ax.set_xlabel("gate threshold (class probability)")
        ax.set_ylabel("share of images")
        ax.set_ylim(0, 1.02)
        right = ax.twinx()
        right.plot(x, table["fid"], color="tab:green", marker="^", label="FID")
        right.set_ylabel("FID")
        ax.set_title(f"{name}: {facts['device']} -> {facts['escalate']}")
        handles = ax.get_legend_handles_labels()[0] + right.get_legend_handles_labels()[0]
        ax.legend(handles=handles, fontsize=7, loc="center left")
    return save_figure(fig, path)


def plot_prediction(requests: pd.DataFrame, path: Path) -> Path:
    """Per ok request: the latency the coordinator predicted when it planned, against the measured."""
    ok = ok_requests(requests)
    first = ok[(ok["stage_index"] == 0) & ok["predicted_total_s"].notna()]
    fig, ax = plt.subplots(figsize=(5.5, 5))
    for strategy, group in first.groupby("strategy", sort=False):
        ax.scatter(group["predicted_total_s"], group["total_s"], s=14, label=strategy)
    top = float(max(first["predicted_total_s"].max(), first["total_s"].max())) * 1.05
    ax.plot([0, top], [0, top], color="grey", lw=0.8, ls=":")
    ax.set_xlabel("predicted at planning (emulated s)")
    ax.set_ylabel("measured (emulated s)")
    ax.set_title("request latency: predicted vs measured")
    ax.legend(fontsize=7)
    return save_figure(fig, path)


def quality_lines(strategies: dict[str, dict[str, Any]]) -> list[Block]:
    values = plan_quality_values(strategies)
    lines: list[Block] = []
    if not values.empty:
        shown = _formatted(values, PLAN_COLUMNS)
        table = _table("plan_quality", values.reset_index(), shown.reset_index(),
                       _markdown(shown, ("plan", "scheduler")))
        sources = sorted({str(Path(r["cache_file"]).parent) for e in strategies.values()
                          for r in e.get("plan_quality") or [] if r.get("cache_file")})
        lines += ["## Quality per plan", "", table, "",
                  "Each plan a strategy used, judged on n images of its own, generated locally with that "
                  "plan, scheduler and steps (labels cycling 0-9, fixed seed: exactly what the nodes "
                  "compute); the strategy's figures above are these weighted by requests. Two judges "
                  "that share nothing: the digit classifier (FID, KID, class accuracy) and an SVM and a "
                  "PCA on raw pixels (class accuracy (SVM), FD (PCA)); judges agree: the share of images "
                  "where both say the same of whether it is the requested digit. PSNR is against the "
                  "large-only plan (none for large-only itself). "
                  f"Cached in {', '.join(f'`{s}`' for s in sources) or '(not recorded)'}; each figure's "
                  "file is in summary.json (`plan_quality`).", ""]
    for name, entry in strategies.items():
        if entry.get("quality_error"):
            lines += [f"Quality of `{name}` not measured: {entry['quality_error']}", ""]
    if any(e.get("run_sample_images") for e in strategies.values()):
        lines += ["The run-sample columns pool the run's own delivered images (run-sample n): too few for "
                  "FID to rank strategies by; they show that the delivered images look like the plan's.", ""]
    return lines


def report_markdown(run: dict[str, Any], figures: list[tuple[str, Path]]) -> str:
    """report.md's text for a loaded run and its figures (title, path relative to the run)."""
    return markdown(report_blocks(run, figures))


def boundary_lines(strategies: dict[str, dict[str, Any]]) -> list[Block]:
    """A latent pipeline's bytes per image at each kind of stage boundary (analysis/boundaries.py)."""
    rows = [{"strategy": name, "boundary": kind, "message_bytes_per_image": value}
            for name, entry in strategies.items()
            for kind, value in (entry.get("boundary_bytes_per_image") or {}).items()]
    if not rows:
        return []
    frame = pd.DataFrame(rows)
    shown = frame.assign(message_bytes_per_image=frame["message_bytes_per_image"].map(lambda v: f"{v:,.0f}"))
    table = _table("boundary_bytes", frame, shown, shown.to_markdown(index=False))
    return ["## Bytes per stage boundary", "", table, "",
            "What each kind of boundary of a latent pipeline's plan carried, per image, as messages "
            "(envelope and tensors, once; `analysis/boundaries.py`): the prompt to the first host, the "
            "embeddings from a host that only encoded, a denoising hand-off with or without the embeddings, "
            "the latents to a decoding host, the pixels of the result.", ""]


def report_blocks(run: dict[str, Any], figures: list[tuple[str, Path]]) -> list[Block]:
    """The report, section by section, from which report.md, report.html and tables/ are written."""
    summary, manifest = run["summary"], run.get("manifest", {})
    lines: list[Block] = [f"# {summary.get('scenario') or 'run'}: {summary.get('status', '?')}", ""]
    created = manifest.get("created")
    backend = manifest.get("network", {}).get("impairment_backend")
    lines += [f"Run {created or '(time unknown)'}, impairment backend {backend or '?'}, "
              f"kernel {manifest.get('kernel', '?')}; settings and versions in `manifest.json`.", ""]
    clock = manifest.get("clock") or {}
    if (clock.get("time_dilation") or 1) > 1:
        lines += [f"Time-dilated: K = {clock['time_dilation']:g} ({clock.get('how', '')}). Every time "
                  "below is emulated (the run took K times as long).", ""]
    strategies = current_strategies(summary.get("strategies") or {})
    lines += outcome_lines(run.get("requests", pd.DataFrame()), strategies)
    if strategies:
        lines += overrun_lines(strategies)
        lines += ["## Per strategy", "", summary_table(strategies), ""]
        lines += paired_lines(summary.get("paired") or [])
        lines += energy_lines(strategies)
        lines += plan_lines(strategies)
        lines += boundary_lines(strategies)
        lines += quality_lines(strategies)
        lines += cascade_lines(strategies)
    accuracy = summary.get("accuracy") or {}
    if accuracy:
        lines += ["## How far the figures hold", "", accuracy_table(accuracy), "",
                  "Details per transfer and per message size: `accuracy.json`.", ""]
    memory = summary.get("node_memory") or {}
    if memory:
        lines += ["## Node memory (all nodes up)", "", memory_table(memory), ""]
    lines += [Figure(title, path) for title, path in figures]
    return lines


def accuracy_table(accuracy: dict[str, Any]) -> Table:
    shown = {k: (f"{v:.3f}" if isinstance(v, float) else str(v)) for k, v in accuracy.items()}
    data = pd.DataFrame({"figure": list(accuracy), "value": pd.Series(list(accuracy.values()), dtype=object)})
    text = pd.Series(shown, name="value").to_frame().to_markdown()
    return _table("accuracy", data, pd.DataFrame({"figure": list(shown), "value": list(shown.values())}),
                  text)


def memory_table(memory: dict[str, Any]) -> Table:
    data = pd.DataFrame({"figure": list(memory), "MB": pd.to_numeric(pd.Series(list(memory.values())))})
    text = pd.Series(memory, name="MB").to_frame().to_markdown(floatfmt=".1f")
    return _table("node_memory", data, _floats_formatted(data, ".1f"), text)


def plot_latency_cdf(requests: pd.DataFrame, path: Path) -> Path:
    reqs = per_request(requests)
    ok = reqs[reqs["outcome"] == "ok"]
    fig, ax = plt.subplots(figsize=(6, 4))
    for strategy, group in ok.groupby("strategy", sort=False):
        values = group["total_s"].astype(float).sort_values().to_list()
        # from 0 at the fastest request: with few requests the first step alone would start at 1/n
        ax.step([values[0], *values], [0.0, *((i + 1) / len(values) for i in range(len(values)))],
                where="post", label=f"{strategy} (n={len(values)})")
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("request latency (emulated s)")
    ax.set_ylabel("fraction of requests")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, path)


# a link event's `state` -> its line's colour and legend label (other events: a change of its shape)
_EVENT_STYLES = {"down": ("tab:red", "link down"), "up": ("tab:green", "link up"),
                 None: ("grey", "link change")}
_PLAN_MARKERS = "osD^vPX*<>ph"
_LABELLED_EVENTS = 12  # more link events than this (a trace) get lines but no names


def plot_latency_over_time(requests: pd.DataFrame, link_events: list[dict[str, Any]], path: Path) -> Path:
    """Per done request, its latency against when it was sent, a colour per strategy; the link
    events of link_events.jsonl as vertical lines; an adaptive strategy's requests marked by the
    plan (without hosts) they got."""
    reqs = per_request(requests)
    ok = reqs[reqs["outcome"] == "ok"]
    sent = ("t_request_sent" if "t_request_sent" in ok and ok["t_request_sent"].notna().any()
            else "t_scheduled")
    plan = "plan_key" if "plan_key" in ok else "plan"
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    fig, ax = plt.subplots(figsize=(8.5, 4.2))
    for i, (strategy, group) in enumerate(ok.groupby("strategy", sort=False)):
        colour = colours[i % len(colours)]
        group = group.sort_values(sent)
        ax.plot(group[sent], group["total_s"], color=colour, lw=0.5, alpha=0.5)
        if strategy in ADAPTIVE or group[plan].nunique() > 1:
            for j, (key, rows) in enumerate(group.groupby(plan, sort=False, dropna=False)):
                ax.scatter(rows[sent], rows["total_s"], color=colour, s=24, label=f"{strategy}: {key}",
                           marker=_PLAN_MARKERS[j % len(_PLAN_MARKERS)])
        else:
            ax.scatter(group[sent], group["total_s"], color=colour, s=14, label=strategy)
    _mark_link_events(ax, link_events)
    ax.set_ylim(bottom=0)
    ax.set_xlabel("request sent (emulated s from t = 0)")
    ax.set_ylabel("request latency (emulated s)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    return save_figure(fig, path)


def _mark_link_events(ax: Any, link_events: list[dict[str, Any]]) -> None:
    """A dotted line at each link event of the measured part of the run (warm-ups are at t < 0),
    named by its link where there are few."""
    events = [e for e in link_events if e.get("link") and e.get("t") is not None and e["t"] >= 0]
    for kind in dict.fromkeys(e.get("state") if e.get("state") in _EVENT_STYLES else None for e in events):
        colour, label = _EVENT_STYLES[kind]
        ax.plot([], [], color=colour, lw=0.8, ls=":", label=label)  # the legend's entry
    for event in events:
        colour = _EVENT_STYLES.get(event.get("state"), _EVENT_STYLES[None])[0]
        ax.axvline(event["t"], color=colour, lw=0.8, ls=":")
        if len(events) <= _LABELLED_EVENTS:
            ax.annotate(str(event["link"]), (event["t"], 1), xycoords=("data", "axes fraction"), rotation=90,
                        fontsize=6, color=colour, va="top", ha="right", xytext=(-1, -3),
                        textcoords="offset points")


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
    ax.set_ylabel("mean per request (emulated s)")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return save_figure(fig, path)


def quality_points(requests: pd.DataFrame, strategies: dict[str, dict[str, Any]]) -> pd.DataFrame:
    """The Pareto figure's points of a run: per strategy that did something, its mean latency over
    its done requests with the 95 % bootstrap interval (emulated s), and the class accuracy, FID
    and n (images per plan) of the plans it used, as summary.json has them (NaN where it has none)."""
    reqs = per_request(requests)
    ok = reqs[reqs["outcome"] == "ok"]
    rows = []
    for name, entry in strategies.items():
        if not entry.get("done"):
            continue
        mean = mean_interval(ok.loc[ok["strategy"] == name, "total_s"].astype(float).to_numpy())
        rows.append({"label": name, "strategy": name, "group": "", "latency_mean_s": mean.estimate,
                     "latency_mean_ci_low_s": mean.low, "latency_mean_ci_high_s": mean.high,
                     **{k: entry.get(k) for k in QUALITY_KEYS}})
    return pd.DataFrame(rows, columns=POINT_COLUMNS).set_index("label")


def plot_quality_vs_latency(points: pd.DataFrame, path: Path, interval: str = "over its requests") -> Path:
    """The Pareto view: each row of `points` (indexed by its label; columns POINT_COLUMNS) a point,
    its mean latency and interval on x (error bars), class accuracy (left) and FID (right) on y; a
    panel with no quality figure says so instead. A point's colour is its strategy's; where the
    points are of several groups (a campaign's grid points) its marker is its group's and a legend
    names both (labels beside the points would overlap), else each point is labelled."""
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    strategies = list(dict.fromkeys(points["strategy"]))
    groups = list(dict.fromkeys(points["group"].fillna("")))
    grouped = len(groups) > 1
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    x = pd.to_numeric(points["latency_mean_s"], errors="coerce")
    low = (x - pd.to_numeric(points["latency_mean_ci_low_s"], errors="coerce")).fillna(0)
    high = (pd.to_numeric(points["latency_mean_ci_high_s"], errors="coerce") - x).fillna(0)
    n = pd.to_numeric(points["n_quality"], errors="coerce").dropna()
    per_plan = f", n = {int(n.min())} images per plan" if len(n) else ""
    for ax, (key, name, better) in zip(axes, (("class_accuracy", "class accuracy", "higher"),
                                              ("fid", "FID", "lower")), strict=True):
        y = pd.to_numeric(points[key], errors="coerce")
        shown = x.notna() & y.notna()
        for label in points.index[shown]:
            colour = colours[strategies.index(points.loc[label, "strategy"]) % len(colours)]
            marker = _PLAN_MARKERS[groups.index(points.loc[label, "group"] or "") % len(_PLAN_MARKERS)]
            ax.errorbar([x[label]], [y[label]], xerr=[[low[label]], [high[label]]], fmt=marker, capsize=4,
                        color=colour)
            if not grouped:
                ax.annotate(str(label), (x[label], y[label]), textcoords="offset points", xytext=(5, 4),
                            fontsize=7)
        if not shown.any():  # say so rather than draw an empty panel a reader could misread
            ax.text(0.5, 0.5, f"{name} not measured\n(none in summary.json: run with --no-quality?)",
                    transform=ax.transAxes, ha="center", va="center", fontsize=9, color="grey")
        elif not shown.all():
            missing = ", ".join(map(str, points.index[~shown]))
            ax.text(0.01, 0.01, f"{name} not measured: {missing}", transform=ax.transAxes, fontsize=7,
                    color="grey")
        ax.set_xlabel("mean request latency (emulated s)")
        ax.set_ylabel(f"{name} of its plans{per_plan}")
        ax.set_title(f"{name} ({better} is better)", fontsize=9)
        ax.grid(alpha=0.3)
        ax.margins(x=0.15, y=0.1)  # room for the labels of the outermost points
    if grouped:
        handles = [plt.Line2D([], [], color=colours[i % len(colours)], marker="o", ls="", label=name)
                   for i, name in enumerate(strategies)]
        handles += [plt.Line2D([], [], color="grey", marker=_PLAN_MARKERS[i % len(_PLAN_MARKERS)], ls="",
                               label=group) for i, group in enumerate(groups)]
        axes[1].legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.suptitle(f"quality against latency; error bars: 95 % bootstrap interval of the mean {interval}",
                 fontsize=10)
    return save_figure(fig, path)
