"""What a report writes besides report.md, on a copy of the real smoke run (tests/data/smoke-run)
and on a canned adaptive run: report.html (self-contained: every figure embedded, every table),
tables/*.csv (the values, recomputed here from requests.parquet) and tables/*.tex (booktabs), and
a PDF twin of every PNG; the figures' axes say their unit and clock.

Here report.html is checked by parsing it with the standard library's html.parser (what it holds,
byte for byte); test_report_browser.py checks it as headless Chromium renders it.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import analysis.report as report
from analysis.outputs import latex_table
from analysis.report import Table, report_blocks, report_tables, write_report
from analysis.run_tables import load_run
from analysis.summary import summarize

from .conftest import SMOKE_RUN, frame, ok_rows, write_run


class Page(HTMLParser):
    """What a browser would show of report.html: images, tables, headings."""

    def __init__(self) -> None:
        super().__init__()
        self.images: list[str] = []
        self.tables: list[str] = []  # their ids
        self.headings: list[str] = []
        self.links: list[str] = []  # anything fetched from elsewhere
        self._heading: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "img":
            self.images.append(attributes["src"] or "")
        elif tag == "table":
            self.tables.append(attributes.get("id") or "")
        elif tag in ("h1", "h2"):
            self._heading = []
        elif tag in ("link", "script") or (tag == "a" and attributes.get("href")):
            self.links.append(tag)

    def handle_data(self, data: str) -> None:
        if self._heading is not None:
            self._heading.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag in ("h1", "h2") and self._heading is not None:
            self.headings.append("".join(self._heading))
            self._heading = None


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("report") / "smoke-run"
    shutil.copytree(SMOKE_RUN, d)
    write_report(d)
    return d


def tables_of(run_dir: Path) -> dict[str, Table]:
    """The report's tables as the report makes them, from the run directory."""
    run = load_run(run_dir)
    requests = run["requests"][run["requests"]["warmup"].ne(True)]
    return {t.name: t for t in report_tables(report_blocks({**run, "requests": requests}, []))}


def test_report_html_embeds_every_figure_and_table(smoke_run):
    page = Page()
    page.feed((smoke_run / "report.html").read_text())
    page.close()
    pngs = sorted((smoke_run / "plots").glob("*.png"))
    assert [p.name for p in pngs] == ["latency_cdf.png", "latency_over_time.png", "latency_parts.png",
                                      "quality_vs_latency.png"]
    embedded = [base64.b64decode(src.removeprefix("data:image/png;base64,")) for src in page.images]
    assert all(src.startswith("data:image/png;base64,") for src in page.images)
    assert sorted(embedded) == sorted(p.read_bytes() for p in pngs)  # one each, byte for byte
    assert sorted(page.tables) == sorted(f"table-{p.stem}" for p in (smoke_run / "tables").glob("*.csv"))
    assert page.links == []  # self-contained
    markdown = (smoke_run / "report.md").read_text()
    assert page.headings == [line.lstrip("#").strip() for line in markdown.splitlines()
                             if line.startswith(("# ", "## "))]  # the same sections, in order


def test_every_table_is_written_as_csv_and_tex(smoke_run):
    tables = tables_of(smoke_run)
    assert sorted(tables) == ["accuracy", "node_memory", "per_strategy", "plan_quality"]
    assert sorted(p.name for p in (smoke_run / "tables").iterdir()) == sorted(
        f"{name}.{ext}" for name in tables for ext in ("csv", "tex"))
    for name, table in tables.items():
        assert_same_values(pd.read_csv(smoke_run / "tables" / f"{name}.csv"), table.data)
        tex = (smoke_run / "tables" / f"{name}.tex").read_text()
        assert tex.startswith("\\begin{tabular}") and tex.count("\\toprule") == 1
        assert "\\midrule" in tex and "\\bottomrule" in tex
        header = " & ".join(c.replace("_", "\\_") for c in table.shown.columns) + " \\\\"
        assert tex.splitlines()[2] == header, name
    assert "cloud\\_only & 2 & 0 & 0.687" in (smoke_run / "tables" / "per_strategy.tex").read_text()


def assert_same_values(read: pd.DataFrame, data: pd.DataFrame) -> None:
    """A CSV read back holds the frame's values: numbers exactly, the rest as text."""
    assert list(read.columns) == list(data.columns)
    for column in data.columns:
        if pd.api.types.is_numeric_dtype(data[column]):
            pd.testing.assert_series_equal(read[column], data[column], check_dtype=False, check_exact=True)
        else:
            assert read[column].astype(str).tolist() == data[column].astype(str).tolist(), column


def test_the_per_strategy_csv_is_what_the_requests_say(smoke_run):
    requests = pd.read_parquet(SMOKE_RUN / "requests.parquet")
    firsts = requests[(requests["stage_index"] == 0) & ~requests["warmup"]]
    table = pd.read_csv(smoke_run / "tables" / "per_strategy.csv").set_index("strategy")
    written = json.loads((SMOKE_RUN / "summary.json").read_text())["strategies"]
    assert list(table.index) == list(written)
    for strategy, group in firsts.groupby("strategy"):
        totals = group.loc[group["outcome"] == "ok", "total_s"].to_numpy()
        row = table.loc[strategy]
        assert row["done"] == len(totals) and row["failed"] == (group["outcome"] != "ok").sum()
        assert row["p50 latency (s)"] == pytest.approx(np.median(totals), rel=1e-12)
        assert row["p95 latency (s)"] == pytest.approx(np.percentile(totals, 95), rel=1e-12)
        assert row["wire bytes / image"] == written[strategy]["wire_bytes_per_image"]
    assert table["of which reports"].isna().all()  # missing stays missing, not "-"


def test_every_png_has_a_pdf_twin(smoke_run):
    pngs = sorted((smoke_run / "plots").glob("*.png"))
    assert sorted(p.name for p in (smoke_run / "plots").glob("*.pdf")) == [p.stem + ".pdf" for p in pngs]
    for png in pngs:
        assert png.with_suffix(".pdf").read_bytes()[:4] == b"%PDF"


def test_latex_escapes_cells_and_headings():
    tex = latex_table(pd.DataFrame({"loss (%)": [1.5], "link_name": ["a&b_c"]}))
    assert "loss (\\%) & link\\_name \\\\" in tex and "a\\&b\\_c" in tex


# ---- the figures' axes, and latency over time on an adaptive run ------------------------------

@pytest.fixture
def drawn(monkeypatch) -> list:
    """The figures the report draws, kept open instead of saved."""
    figures: list = []
    monkeypatch.setattr(report, "save_figure", lambda fig, path: figures.append(fig) or path)
    return figures


def test_the_cdf_starts_at_zero_and_every_axis_says_emulated_seconds(drawn, tmp_path):
    requests = pd.read_parquet(SMOKE_RUN / "requests.parquet")
    strategies = json.loads((SMOKE_RUN / "summary.json").read_text())["strategies"]
    report.write_figures(requests, strategies, tmp_path, [])
    cdf, over_time, parts, pareto = (f.axes for f in drawn)
    assert cdf[0].get_ylim()[0] == 0 and cdf[0].get_xlabel() == "request latency (emulated s)"
    assert all(min(line.get_ydata()) == 0 for line in cdf[0].get_lines())  # every curve rises from 0
    assert "emulated s" in over_time[0].get_xlabel() and "emulated s" in over_time[0].get_ylabel()
    assert "emulated s" in parts[0].get_ylabel()
    assert [ax.get_xlabel() for ax in pareto] == ["mean request latency (emulated s)"] * 2
    assert [ax.get_ylabel() for ax in pareto] == ["class accuracy of its plans, n = 500 images per plan",
                                                  "FID of its plans, n = 500 images per plan"]


def test_the_pareto_view_is_each_strategys_mean_latency_and_interval_against_its_quality(drawn, tmp_path):
    requests = pd.read_parquet(SMOKE_RUN / "requests.parquet")
    strategies = json.loads((SMOKE_RUN / "summary.json").read_text())["strategies"]
    points = report.quality_points(requests, strategies)
    firsts = requests[(requests["stage_index"] == 0) & ~requests["warmup"]]
    assert list(points.index) == list(strategies)
    for strategy, group in firsts.groupby("strategy"):
        point = points.loc[strategy]
        assert point["latency_mean_s"] == pytest.approx(group["total_s"].mean(), rel=1e-12)
        assert point["latency_mean_ci_low_s"] <= point["latency_mean_s"] <= point["latency_mean_ci_high_s"]
        assert (point["class_accuracy"], point["fid"]) == (strategies[strategy]["class_accuracy"],
                                                           strategies[strategy]["fid"])
    report.plot_quality_vs_latency(points, tmp_path / "q.png")
    accuracy, fid = drawn[0].axes
    labels = [t.get_text() for t in accuracy.texts]
    assert labels == list(strategies)  # each point labelled with its strategy
    # one error bar per strategy: its x ends are the interval's
    ends = sorted(tuple(np.round(seg[:, 0], 12)) for c in accuracy.collections for seg in c.get_segments())
    assert ends == sorted((round(p.latency_mean_ci_low_s, 12), round(p.latency_mean_ci_high_s, 12))
                          for p in points.itertuples())
    drawn.clear()
    report.plot_quality_vs_latency(points.assign(fid=None, class_accuracy=None), tmp_path / "q.png")
    assert all("not measured" in ax.texts[0].get_text() for ax in drawn[0].axes)


def adaptive_run(d: Path) -> Path:
    rows = [*ok_rows("a", "elastic", "small:0-3@d1", 0.0),
            *ok_rows("b", "elastic", "small:0-2@edge,small:2-3@d1", 1.0),
            *ok_rows("c", "elastic", "small:0-3@d1", 2.0),
            *ok_rows("d", "cloud_only", "small:0-3@cloud", 0.5)]
    requests = frame(rows)
    write_run(d, requests, summarize(requests, None, d / "samples", quality=False))
    events = [{"t": None, "link": None, "source": "start"},
              {"t": 0.8, "link": "d1-ap", "source": "fault", "state": "down"},
              {"t": 1.6, "link": "d1-ap", "source": "fault", "state": "up"},
              {"t": 1.2, "link": "ap-edge", "source": "trace", "bw_mbit": 2.0}]
    (d / "link_events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    return d


def test_latency_over_time_marks_link_events_and_the_plans_chosen(drawn, tmp_path):
    d = adaptive_run(tmp_path / "run")
    requests = pd.read_parquet(d / "requests.parquet")
    report.plot_latency_over_time(requests, report.read_link_events(d), tmp_path / "t.png")
    ax = drawn[0].axes[0]
    labels = ax.get_legend_handles_labels()[1]
    assert labels == ["elastic: small:0-3", "elastic: small:0-2,small:2-3", "cloud_only",
                      "link down", "link up", "link change"]
    vertical = sorted(line.get_xdata()[0] for line in ax.get_lines()
                      if len(line.get_xdata()) == 2 and line.get_xdata()[0] == line.get_xdata()[1])
    assert vertical == [0.8, 1.2, 1.6]


def test_report_of_an_adaptive_run_writes_its_plans_table(tmp_path):
    d = adaptive_run(tmp_path / "run")
    text = write_report(d).read_text()
    assert "![Latency over time](plots/latency_over_time.png)" in text
    plans = pd.read_csv(d / "tables" / "plans_chosen.csv")
    assert plans.to_dict("records") == [{"strategy": "elastic", "plan": "small:0-3@d1", "requests": 2},
                                        {"strategy": "elastic", "plan": "small:0-2@edge,small:2-3@d1",
                                         "requests": 1}]
    assert re.search(r'<table[^>]*id="table-plans_chosen"', (d / "report.html").read_text())
