"""Checks of a campaign report (analysis/campaign_report.py) that any test can run on a campaign
directory, a synthetic one (tests/analysis/test_campaign_report.py) or a real one:

    from tests.analysis.campaign_checks import check_html_report, check_tables_against_parquet

    write_campaign_report(out)
    check_tables_against_parquet(out)   # every number of tables/*.csv, recomputed here
    check_html_report(out)              # report.html embeds every figure and every table

The recomputation is this module's own, from `analysis.load.load_runs` and pandas: the requests of
the completed runs (a request is its first stage's row), grouped by the grid's fields (campaign.json's
`grid`), the strategy and the repetition.  Intervals and the paired test use analysis/statistics.py
(what is checked here is which values go into them); quality comes from each run's summary.json.
"""

from __future__ import annotations

import base64
import json
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from analysis.load import load_runs
from analysis.statistics import mean_interval, paired_ratio, percentile_interval

TABLES = ("per_strategy", "per_repetition", "paired", "quality")
FIGURES = ("latency_by_repetition", "quality_vs_latency")


def check_tables_against_parquet(campaign_dir: str | Path) -> list[str]:
    """Assert that every number of CAMPAIGN/tables/*.csv is what the runs' parquet files (and, for
    quality, their summary.json) give, and that each table has exactly one row per group there is;
    the tables checked."""
    d = Path(campaign_dir)
    meta = json.loads((d / "campaign.json").read_text())
    fields = [f for f, _ in meta.get("grid") or []]
    listed = [r.get("run_dir", r.get("name")) for r in meta["runs"]]
    loaded = load_runs(d)
    runs = loaded.runs[loaded.runs["status"].eq("completed") & loaded.runs["run_id"].isin(listed)]
    requests = loaded.requests[loaded.requests["run_id"].isin(runs["run_id"])]
    if "stage_index" in requests:  # rows per stage: a request is its first
        requests = requests.sort_values("stage_index", na_position="first", kind="stable")
    first = requests.groupby(["run_id", "request_id"], sort=False).head(1)
    if "n_images" not in first:  # a frame that does not say: no images, no bytes per image
        first = first.assign(n_images=np.nan)
    first = first.assign(ok=first["outcome"].eq("ok"), latency=first["total_s"].astype(float))
    traffic = loaded.traffic[loaded.traffic["run_id"].isin(runs["run_id"])]
    tables = {name: pd.read_csv(d / "tables" / f"{name}.csv") for name in TABLES}
    _check_per_strategy(tables["per_strategy"], first, traffic, fields)
    _check_per_repetition(tables["per_repetition"], first, fields)
    _check_paired(tables["paired"], first, fields)
    _check_quality(tables["quality"], runs, fields)
    return list(TABLES)


def _close(written: Any, expected: Any, what: str) -> None:
    """A CSV cell against its recomputed value: equal to the last bits, or both missing."""
    expected = np.nan if expected is None else expected
    assert written == pytest.approx(expected, rel=1e-12, abs=1e-15, nan_ok=True), what


def _selected(frame: pd.DataFrame, row: dict[str, Any], keys: list[str]) -> pd.DataFrame:
    """The rows of `frame` whose keys are the CSV row's (compared as text: a CSV reads 5 back as 5)."""
    keep = np.ones(len(frame), dtype=bool)
    for key in keys:
        keep &= frame[key].astype(str).to_numpy() == str(row[key])
    return frame[keep]


def _counts(requests: pd.DataFrame) -> tuple[int, int, int]:
    """(requests, done, failed)."""
    return len(requests), int(requests["ok"].sum()), int((~requests["ok"]).sum())


def _keys(frame: pd.DataFrame, keys: list[str]) -> list[tuple[str, ...]]:
    """Each row's values of `keys`, as text."""
    return list(zip(*(frame[k].astype(str) for k in keys), strict=True)) if keys else [()] * len(frame)


def _same_groups(table: pd.DataFrame, frame: pd.DataFrame, keys: list[str], name: str) -> None:
    """One row per group of the data, no more, no less."""
    have = _keys(table, keys)
    assert sorted(have) == sorted(set(_keys(frame, keys))) and len(set(have)) == len(have), name


def _check_per_strategy(table: pd.DataFrame, first: pd.DataFrame, traffic: pd.DataFrame,
                        fields: list[str]) -> None:
    keys = [*fields, "strategy"]
    _same_groups(table, first, keys, "per_strategy")
    wire = None
    if not traffic.empty and "wire_bytes" in traffic:
        attributed = traffic[traffic["request_id"].notna()]
        wire = attributed.groupby(["run_id", "request_id"])["wire_bytes"].sum()
    for row in table.to_dict("records"):
        mine = _selected(first, row, keys)
        ok = mine[mine["ok"]]
        what = f"per_strategy {[row[k] for k in keys]}"
        assert (row["requests"], row["done"], row["failed"]) == _counts(mine), what
        assert row["repetitions"] == mine["campaign_repetition"].nunique(), what
        pooled = mean_interval(ok["latency"].to_numpy())
        _close(row["latency_mean_s"], ok["latency"].mean() if len(ok) else None, what)
        _close(row["latency_mean_ci_low_s"], pooled.low, what)
        _close(row["latency_mean_ci_high_s"], pooled.high, what)
        means = ok.groupby("campaign_repetition")["latency"].mean()
        over = mean_interval(means.to_numpy())
        _close(row["latency_mean_of_repetitions_s"], means.mean() if len(means) else None, what)
        _close(row["latency_mean_of_repetitions_ci_low_s"], over.low, what)
        _close(row["latency_mean_of_repetitions_ci_high_s"], over.high, what)
        _close(row["latency_p50_s"], ok["latency"].median() if len(ok) else None, what)
        _close(row["latency_p95_s"], ok["latency"].quantile(0.95) if len(ok) else None, what)
        p95 = percentile_interval(ok["latency"].to_numpy(), 95)
        _close(row["latency_p95_ci_low_s"], p95.low, what)
        _close(row["latency_p95_ci_high_s"], p95.high, what)
        _close(row["images"], ok["n_images"].astype(float).sum(min_count=1), what)
        measured = ok[ok["run_id"].isin(set(traffic["run_id"]))] if wire is not None else ok.iloc[0:0]
        per_image = None
        if len(measured) and measured["n_images"].sum():
            sent = sum(wire.get((r, q), 0) for r, q in zip(measured["run_id"], measured["request_id"],
                                                              strict=True))
            per_image = sent / measured["n_images"].sum()
        _close(row["wire_bytes_per_image"], per_image, what)


def _check_per_repetition(table: pd.DataFrame, first: pd.DataFrame, fields: list[str]) -> None:
    keys = [*fields, "strategy", "repetition"]
    _same_groups(table, first.assign(repetition=first["campaign_repetition"]), keys, "per_repetition")
    for row in table.to_dict("records"):
        mine = _selected(first.assign(repetition=first["campaign_repetition"]), row, keys)
        ok = mine[mine["ok"]]
        what = f"per_repetition {[row[k] for k in keys]}"
        assert row["run_id"] == ";".join(dict.fromkeys(mine["run_id"])), what
        assert (row["requests"], row["done"], row["failed"]) == _counts(mine), what
        _close(row["latency_mean_s"], ok["latency"].mean() if len(ok) else None, what)
        _close(row["latency_p50_s"], ok["latency"].median() if len(ok) else None, what)


def _check_paired(table: pd.DataFrame, first: pd.DataFrame, fields: list[str]) -> None:
    """Each strategy against the reference: the pairs are the requests both completed with the
    same grid point, repetition and request (its id, or in a run of several strategies its round)."""
    references = set(table["reference"])
    assert len(references) <= 1, references
    if not references:
        return
    reference = references.pop()
    strategies = list(dict.fromkeys(first["strategy"]))
    assert reference == ("cloud_only" if "cloud_only" in strategies else strategies[0])
    # a row per other strategy at every grid point where the reference ran
    points = set(_keys(first[first["strategy"] == reference], fields))
    others = first[first["strategy"].ne(reference).to_numpy()
                   & np.array([key in points for key in _keys(first, fields)], dtype=bool)]
    _same_groups(table, others, [*fields, "strategy"], "paired")
    # a run of several strategies pairs its rounds (one seed through each), a run of one its
    # request ids with those of the other runs
    several = first.groupby("run_id")["strategy"].transform("nunique") > 1
    if {"repetition", "seed"} <= set(first.columns):
        rounds = [f"r{r}-s{s}" if ok else None
                  for r, s, ok in zip(first["repetition"], first["seed"], several, strict=True)]
        first = first.assign(pair=np.where(several, rounds, first["request_id"].astype(str)))
    else:
        first = first.assign(pair=first["request_id"].astype(str))
    ok = first[first["ok"]]
    pair = [*fields, "campaign_repetition", "pair"]
    base = ok[ok["strategy"] == reference][[*pair, "latency"]]
    for row in table.to_dict("records"):
        mine = _selected(ok, row, [*fields, "strategy"])[[*pair, "latency"]]
        both = mine.merge(base, on=pair, suffixes=("", "_reference"))
        what = f"paired {[row[k] for k in [*fields, 'strategy']]}"
        result = paired_ratio(both["latency"].to_numpy(), both["latency_reference"].to_numpy())
        assert row["n_pairs"] == len(both) == result.n_pairs, what
        assert row["repetitions"] == both["campaign_repetition"].nunique(), what
        _close(row["latency_mean_s"], both["latency"].mean() if len(both) else None, what)
        _close(row["reference_latency_mean_s"], both["latency_reference"].mean() if len(both) else None, what)
        _close(row["latency_mean_ratio"], result.ratio, what)
        _close(row["latency_mean_ratio_ci_low"], result.low, what)
        _close(row["latency_mean_ratio_ci_high"], result.high, what)
        _close(row["wilcoxon_p"], result.p_value, what)


def _check_quality(table: pd.DataFrame, runs: pd.DataFrame, fields: list[str]) -> None:
    """Class accuracy and FID: the runs' summary.json figures weighted by their done requests."""
    entries = []
    for run in runs.to_dict("records"):
        summary = json.loads((Path(run["run_dir"]) / "summary.json").read_text())
        for name, entry in (summary.get("strategies") or {}).items():
            entries.append({**{f: run[f] for f in fields}, "strategy": name, **entry})
    frame = pd.DataFrame(entries, columns=[*fields, "strategy"]) if not entries else pd.DataFrame(entries)
    for column in ("done", "class_accuracy", "fid", "n_quality"):
        if column not in frame:
            frame[column] = np.nan
    for row in table.to_dict("records"):
        mine = _selected(frame, row, [*fields, "strategy"])
        what = f"quality {[row[k] for k in [*fields, 'strategy']]}"
        judged = np.zeros(len(mine), dtype=bool)
        for figure in ("class_accuracy", "fid"):
            has = (mine[figure].notna() & mine["done"].fillna(0).gt(0)).to_numpy()
            judged |= has
            values, weights = mine[figure].to_numpy()[has].astype(float), mine["done"].to_numpy()[has]
            _close(row[figure], np.average(values, weights=weights) if has.any() else None, what)
        assert row["runs"] == judged.sum(), what
        n = mine["n_quality"].to_numpy()[judged].astype(float)
        _close(row["n_quality"], np.nanmin(n) if np.isfinite(n).any() else None, what)


class _Page(HTMLParser):
    """The images and table ids of an HTML page, and anything it would fetch from elsewhere."""

    def __init__(self) -> None:
        super().__init__()
        self.images: list[str] = []
        self.tables: list[str] = []
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "img":
            self.images.append(attributes.get("src") or "")
        elif tag == "table":
            self.tables.append(attributes.get("id") or "")
        elif tag in ("link", "script") or (tag == "a" and attributes.get("href")):
            self.links.append(tag)


def check_html_report(campaign_dir: str | Path) -> None:
    """Assert that CAMPAIGN/report.html embeds every figure of plots/ (byte for byte, as data: URIs)
    and shows every table of tables/, fetches nothing, and that every figure has its PDF twin."""
    d = Path(campaign_dir)
    page = _Page()
    page.feed((d / "report.html").read_text())
    page.close()
    pngs = sorted((d / "plots").glob("*.png"))
    assert sorted(p.stem for p in pngs) == sorted(FIGURES)
    for png in pngs:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert png.with_suffix(".pdf").read_bytes()[:4] == b"%PDF"
    assert all(src.startswith("data:image/png;base64,") for src in page.images)
    embedded = sorted(base64.b64decode(src.removeprefix("data:image/png;base64,")) for src in page.images)
    assert embedded == sorted(p.read_bytes() for p in pngs)
    assert sorted(page.tables) == sorted(f"table-{name}" for name in TABLES)
    assert sorted(p.name for p in (d / "tables").iterdir()) == sorted(
        f"{name}.{ext}" for name in TABLES for ext in ("csv", "tex"))
    assert page.links == []
