"""The campaign report (analysis/campaign_report.py) on campaign directories laid out as
emulation/campaign.py writes them (plan_campaign's run names, write_index's campaign.json and
index.csv), no network: a synthetic one (a grid of two backhaul rates x each of the smoke
scenario's four strategies alone x three repetitions, requests made with the conftest's helpers,
a failed request, warm-ups, a run without traffic.parquet and an interrupted run) and one of two
copies of the real smoke run (tests/data/smoke-run), its strategies together.  Every table is
recomputed from the parquet files (tests/analysis/campaign_checks.py), and `edgestage report` on a
campaign directory writes the campaign's report."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import analysis.campaign_report as campaign_report
import analysis.report as report
from analysis.campaign_report import campaign_tables, write_campaign_figures, write_campaign_report
from analysis.run_tables import TRAFFIC_WALL_FIELDS, run_clock, with_emulated
from analysis.schema import write_parquet
from analysis.traffic import parse_run_traffic
from emulation.campaign import plan_campaign, write_index
from tests.analysis.campaign_checks import TABLES, check_html_report, check_tables_against_parquet

from .conftest import SMOKE_RUN, failed_row, frame, ok_rows

REPO = Path(__file__).resolve().parents[2]
SMOKE = REPO / "scenarios" / "smoke.toml"
FIELD = "topology.backhaul.bw_mbit"
PLANS = {"cloud_only": "large:0-10@cloud", "edge_only": "medium:0-10@edge", "device_only": "small:0-10@d1",
         "fixed_split": "large:0-4@cloud,medium:4-7@edge,small:7-10@d1"}
LATENCY_S = {"cloud_only": 0.7, "edge_only": 0.2, "device_only": 0.08, "fixed_split": 0.33}
SLOW_BACKHAUL = 1.5  # latency factor at 5 Mbit/s against 50
REPETITION_FACTOR = (0.8, 1.0, 1.25)  # what one network and seed brings to every request of a run
QUALITY = {"cloud_only": (0.934, 1.77), "edge_only": (0.934, 1.71), "fixed_split": (0.922, 1.75)}
REQUESTS = 5  # measured, per run; and one warm-up
FAILED = (f"{FIELD}=5,strategy=edge_only,rep=1", "r0-q0003")
NO_TRAFFIC = f"{FIELD}=50,strategy=device_only,rep=2"
INTERRUPTED = f"{FIELD}=50,strategy=cloud_only,rep=2"


def _run(d: Path, name: str, strategy: str, point: float, repetition: int, rng: np.random.Generator,
         status: str = "completed") -> None:
    """One run directory: REQUESTS measured requests and a warm-up, traffic on every request."""
    d.mkdir(parents=True)
    factor = LATENCY_S[strategy] * (SLOW_BACKHAUL if point == 5 else 1.0) * REPETITION_FACTOR[repetition]
    rows, traffic = [], []
    for k in range(-1, REQUESTS if status == "completed" else 2):
        request_id = f"r0-q{k:04d}" if k >= 0 else "w-q0000"
        if (name, request_id) == FAILED:
            rows.append(failed_row(request_id, strategy, "timeout: no result within 30 s", 0.5 * k))
            continue
        stages = ok_rows(request_id, strategy, PLANS[strategy], 0.5 * k, n_images=2 + k % 3)
        latency = 9.0 if k < 0 else factor * rng.uniform(0.98, 1.02)  # a warm-up counted would show
        rows += [{**row, "total_s": latency, "warmup": k < 0} for row in stages]
        traffic += [{"link": "d1-ap", "request_id": request_id, "part": part, "wire_bytes": size}
                    for part, size in (("data", 1000.0 * (k + 2) * len(stages)), ("ack", 60.0))]
    traffic.append({"link": "ap-edge", "request_id": None, "part": "data", "wire_bytes": 5e3})  # no request's
    requests = frame(rows)
    requests.to_parquet(d / "requests.parquet", index=False)
    if name != NO_TRAFFIC:
        write_parquet(pd.DataFrame(traffic), d / "traffic.parquet")
    ok = requests[requests["outcome"].eq("ok") & ~requests["warmup"] & requests["stage_index"].eq(0)]
    entry = {"requests": int(requests.loc[~requests["warmup"], "request_id"].nunique()), "done": len(ok)}
    if strategy in QUALITY:  # device_only: quality not measured
        accuracy, fid = QUALITY[strategy]
        shift = 0.01 * repetition if strategy == "edge_only" else 0.0  # as an adaptive one's plans would
        entry.update(class_accuracy=accuracy - shift, fid=fid + 10 * shift, n_quality=500)
    summary = {"scenario": f"smoke-{name}", "status": status, "strategies": {strategy: entry}}
    (d / "summary.json").write_text(json.dumps(summary))
    manifest = {"status": status, "scenario": {"name": f"smoke-{name}", "strategies": {strategy: {}}},
                "clock": {"wall_origin": 0.0, "time_dilation": 7.0}}
    (d / "manifest.json").write_text(json.dumps(manifest))


def write_campaign(out: Path) -> Path:
    """The synthetic campaign of the module docstring, its index as emulation/campaign.py writes it."""
    campaign = plan_campaign(SMOKE, [(FIELD, [5, 50])], each_strategy=True, repetitions=3)
    rng = np.random.default_rng(3)
    for run in campaign.runs:
        _run(out / run.name, run.name, run.strategy, run.fields[FIELD], run.repetition, rng,
             "interrupted" if run.name == INTERRUPTED else "completed")
    write_index(campaign, out, 7.0, "measured (test)")
    return out


@pytest.fixture(scope="module")
def campaign(tmp_path_factory) -> Path:
    out = write_campaign(tmp_path_factory.mktemp("campaign") / "campaign")
    write_campaign_report(out)
    return out


def read(campaign: Path, name: str) -> pd.DataFrame:
    return pd.read_csv(campaign / "tables" / f"{name}.csv")


def test_every_table_is_what_the_parquet_files_give(campaign):
    assert check_tables_against_parquet(campaign) == list(TABLES)
    table = read(campaign, "per_strategy")
    assert list(table.columns[:2]) == [FIELD, "strategy"]
    assert list(zip(table[FIELD], table["strategy"], strict=True)) == [
        (bw, s) for bw in (5, 50) for s in PLANS]  # in the order they ran
    row = table.set_index([FIELD, "strategy"])
    assert (row.loc[(5, "edge_only"), ["requests", "done", "failed"]] == [15, 14, 1]).all()
    assert row.loc[(50, "cloud_only"), "repetitions"] == 2  # its interrupted run left out
    assert (row["requests"] == row["repetitions"] * REQUESTS).all()  # the warm-ups left out
    assert row["latency_mean_s"].max() < 9  # no warm-up's 9 s in any mean
    for (bw, strategy), r in row.iterrows():
        expected = LATENCY_S[strategy] * (SLOW_BACKHAUL if bw == 5 else 1.0)
        assert r["latency_mean_of_repetitions_s"] == pytest.approx(expected * np.mean(
            REPETITION_FACTOR[:int(r["repetitions"])]), rel=0.03)
    assert row["wire_bytes_per_image"].notna().all()  # device_only at 50: from its two runs with traffic
    quality = read(campaign, "quality").set_index([FIELD, "strategy"])
    assert quality.loc[(5, "device_only"), ["class_accuracy", "fid", "n_quality"]].isna().all()
    assert quality.loc[(5, "cloud_only"), "fid"] == pytest.approx(1.77)
    edge = quality.loc[(5, "edge_only")]  # its three runs' figures, each weighted by its done requests
    assert edge["runs"] == 3  # rep=1 did 4 of its 5 requests
    assert edge["class_accuracy"] == pytest.approx((5 * 0.934 + 4 * 0.924 + 5 * 0.914) / 14)


@pytest.mark.parametrize(("table", "column"), [
    ("per_strategy", "latency_mean_of_repetitions_ci_high_s"), ("per_strategy", "wire_bytes_per_image"),
    ("per_repetition", "latency_mean_s"), ("paired", "latency_mean_ratio_ci_low"), ("quality", "fid"),
])
def test_the_check_finds_a_number_that_is_off(campaign, tmp_path, table, column):
    """campaign_checks recomputes, it does not read back: one cell off by a part in 10^6 fails it."""
    copy = tmp_path / "campaign"
    shutil.copytree(campaign, copy)
    path = copy / "tables" / f"{table}.csv"
    values = pd.read_csv(path)
    values.loc[1, column] *= 1 + 1e-6
    values.to_csv(path, index=False)
    with pytest.raises(AssertionError):
        check_tables_against_parquet(copy)


def test_the_intervals_hold_the_estimates_and_over_repetitions_cover_the_repetitions_spread(campaign):
    table = read(campaign, "per_strategy")
    reps = read(campaign, "per_repetition")
    for row in table.to_dict("records"):
        mine = reps[(reps[FIELD] == row[FIELD]) & (reps["strategy"] == row["strategy"])]["latency_mean_s"]
        low, mean, high = (row[f"latency_mean_of_repetitions{p}"] for p in ("_ci_low_s", "_s", "_ci_high_s"))
        assert low <= mean <= high and mean == pytest.approx(mine.mean())
        # a percentile bootstrap of 2 or 3 means: 1/4 or 1/27 of the resamples repeat one value three
        # times, more than 2.5 %, so the interval is the repetitions' range (to the last bits of a mean)
        assert (low, high) == pytest.approx((mine.min(), mine.max()), rel=1e-12)
        assert row["latency_mean_ci_low_s"] <= row["latency_mean_s"] <= row["latency_mean_ci_high_s"]
        assert row["latency_p95_ci_low_s"] <= row["latency_p95_s"] <= row["latency_p95_ci_high_s"]
        # the requests vary by 2 % within a run, the runs by 20 %: pooled over requests the interval
        # is narrower than the repetitions' spread, which is why both are shown
        assert row["latency_mean_ci_high_s"] - row["latency_mean_ci_low_s"] < mine.max() - mine.min()


def test_paired_ratios_are_against_cloud_only_on_the_same_requests_of_the_same_repetition(campaign):
    paired = read(campaign, "paired").set_index([FIELD, "strategy"])
    assert set(paired["reference"]) == {"cloud_only"}
    assert sorted(paired.index) == sorted((bw, s) for bw in (5, 50) for s in PLANS if s != "cloud_only")
    assert paired.loc[(5, "edge_only"), "n_pairs"] == 3 * REQUESTS - 1  # its failed request has no pair
    assert (paired.loc[(50, slice(None)), "n_pairs"] == 2 * REQUESTS).all()  # cloud_only's rep=2 left out
    assert (paired.loc[(50, slice(None)), "repetitions"] == 2).all()
    for (_, strategy), row in paired.iterrows():
        assert row["latency_mean_ratio"] == pytest.approx(LATENCY_S[strategy] / LATENCY_S["cloud_only"],
                                                          rel=0.03)
        low, ratio, high = (row[f"latency_mean_ratio{end}"] for end in ("_ci_low", "", "_ci_high"))
        assert low <= ratio <= high
        assert row["wilcoxon_p"] < 0.01  # every pair says the same


def test_every_figure_is_png_and_pdf_and_the_html_embeds_every_figure_and_table(campaign):
    check_html_report(campaign)
    text = (campaign / "report.md").read_text()
    assert text.startswith("# Campaign of smoke.toml\n")
    assert "K = 7 for every run" in text and f"`{INTERRUPTED}` (interrupted)" in text
    for name in ("quality_vs_latency", "latency_by_repetition"):
        assert f"](plots/{name}.png)" in text
    html = (campaign / "report.html").read_text()
    for name in TABLES:
        assert f'id="table-{name}"' in html
    tex = (campaign / "tables" / "per_strategy.tex").read_text()
    assert tex.startswith("\\begin{tabular}") and "\\toprule" in tex and "\\bottomrule" in tex
    assert "topology.backhaul.bw\\_mbit & strategy & repetitions" in tex
    assert not any((campaign / run).joinpath("report.md").exists() for run in read(campaign, "per_repetition")
                   ["run_id"])  # the runs' own reports are theirs to write


@pytest.fixture
def drawn(monkeypatch) -> list:
    """The figures drawn, kept open instead of saved."""
    figures: list = []
    keep = lambda fig, path: figures.append(fig) or path  # noqa: E731
    monkeypatch.setattr(report, "save_figure", keep)
    monkeypatch.setattr(campaign_report, "save_figure", keep)
    return figures


def test_the_figures_axes_name_their_units_and_clock_and_missing_quality_is_said(campaign, drawn, tmp_path):
    tables = campaign_tables(campaign)
    write_campaign_figures(tables, tmp_path)
    pareto, by_repetition = drawn
    for ax, quality in zip(pareto.axes, ("class accuracy", "FID"), strict=True):
        assert ax.get_xlabel() == "mean request latency (emulated s)"
        assert ax.get_ylabel() == f"{quality} of its plans, n = 500 images per plan"
        assert len(ax.containers) == 6  # an error bar per strategy with quality, at each grid point
        assert [t.get_text() for t in ax.texts] == [
            f"{quality} not measured: device_only, bw_mbit=5, device_only, bw_mbit=50"]
    # colour: the strategy, marker: the grid point (labels beside 8 points would overlap)
    legend = [t.get_text() for t in pareto.axes[1].get_legend().get_texts()]
    assert legend == [*PLANS, "bw_mbit=5", "bw_mbit=50"]
    ax = by_repetition.axes[0]
    assert ax.get_ylabel() == "mean request latency (emulated s)"
    ticks = [t.get_text() for t in ax.get_xticklabels()]
    assert ticks == [f"{s}, bw_mbit={bw}" for bw in (5, 50) for s in PLANS]
    dots = np.concatenate([c.get_offsets()[:, 1] for c in ax.collections if len(c.get_offsets())
                           and not hasattr(c, "get_segments")])
    assert sorted(dots) == pytest.approx(sorted(tables.per_repetition["latency_mean_s"]))


def test_a_reference_is_chosen_or_refused(campaign):
    tables = campaign_tables(campaign, reference="edge_only")
    assert tables.reference == "edge_only" and set(tables.paired["reference"]) == {"edge_only"}
    with pytest.raises(ValueError, match=r"^reference 'nope': not a strategy of this campaign "
                       r"\(its strategies: cloud_only, edge_only, device_only, fixed_split\)$"):
        campaign_tables(campaign, reference="nope")


# ---- the real smoke run, twice, its strategies together ---------------------------------------

@pytest.fixture(scope="module")
def together(tmp_path_factory) -> Path:
    """Two repetitions of the smoke scenario, its four strategies interleaved in each: the real
    smoke run (with the traffic.parquet the pipeline makes of its captures) and a copy 10 % slower
    without traffic."""
    out = tmp_path_factory.mktemp("together") / "campaign"
    campaign = plan_campaign(SMOKE, repetitions=2)
    assert [r.name for r in campaign.runs] == ["rep=0", "rep=1"]
    for run in campaign.runs:
        shutil.copytree(SMOKE_RUN, out / run.name)
    manifest = json.loads((SMOKE_RUN / "manifest.json").read_text())
    traffic = parse_run_traffic(SMOKE_RUN / "pcap", manifest["network"])
    traffic = with_emulated(traffic, run_clock(manifest), TRAFFIC_WALL_FIELDS)
    write_parquet(traffic, out / "rep=0" / "traffic.parquet")  # as the pipeline writes it
    slower = pd.read_parquet(SMOKE_RUN / "requests.parquet")
    slower["total_s"] *= 1.1
    slower.to_parquet(out / "rep=1" / "requests.parquet", index=False)
    write_index(campaign, out, None, "each run its own")
    write_campaign_report(out)
    return out


def test_a_campaign_of_real_runs_with_the_strategies_together(together):
    check_tables_against_parquet(together)
    check_html_report(together)
    written = json.loads((SMOKE_RUN / "summary.json").read_text())["strategies"]
    table = read(together, "per_strategy").set_index("strategy")
    assert list(table.index) == list(written)  # no grid: the strategy is the first column
    first = pd.read_parquet(SMOKE_RUN / "requests.parquet").query("stage_index == 0")
    for strategy, entry in written.items():
        row = table.loc[strategy]
        assert (row["repetitions"], row["requests"], row["done"]) == (2, 4, 4)
        # rep=0's wire bytes, from its captures, as its runner's summary.json counted them
        assert row["wire_bytes_per_image"] == pytest.approx(entry["wire_bytes_per_image"], rel=1e-9)
        assert row["latency_mean_of_repetitions_s"] == pytest.approx(
            1.05 * first.loc[first["strategy"] == strategy, "total_s"].mean(), rel=1e-12)
    quality = read(together, "quality").set_index("strategy")
    for strategy, entry in written.items():
        assert quality.loc[strategy, "class_accuracy"] == pytest.approx(entry["class_accuracy"], rel=1e-12)
        assert quality.loc[strategy, "fid"] == pytest.approx(entry["fid"], rel=1e-12)
    paired = read(together, "paired")
    assert (paired["n_pairs"] == 0).all() and set(paired["note"]) == {"no pairs"}  # no request ran twice
    text = (together / "report.md").read_text()
    assert "Time dilation: each run its own" in text and "there are no pairs" in text


def test_runs_that_record_only_latency_get_a_report_without_bytes_or_quality(tmp_path):
    """Runs as tests/emulation/test_campaign.py's fake runner leaves them: one row per request (no
    stages, no images), a summary.json without strategies."""
    out = tmp_path / "campaign"
    campaign = plan_campaign(SMOKE, each_strategy=True, repetitions=2)
    for run in campaign.runs:
        (out / run.name).mkdir(parents=True)
        pd.DataFrame({"request_id": ["r0-q0000", "r0-q0001"], "strategy": run.strategy, "outcome": "ok",
                      "total_s": [0.1, 0.2 + run.repetition], "warmup": False}).to_parquet(
            out / run.name / "requests.parquet")
        (out / run.name / "summary.json").write_text('{"status": "completed"}')
        (out / run.name / "manifest.json").write_text('{"status": "completed"}')
    write_index(campaign, out, 7.0, "measured (test)")
    write_campaign_report(out)
    check_tables_against_parquet(out)
    check_html_report(out)
    table = read(out, "per_strategy")
    assert table["images"].isna().all() and table["wire_bytes_per_image"].isna().all()
    assert read(out, "quality")[["class_accuracy", "fid"]].isna().all().all()
    assert (read(out, "paired")["n_pairs"] == 4).all()


# ---- `edgestage report` on a campaign, and what is refused ---------------------------------------

def test_edgestage_report_on_a_campaign_writes_the_campaign_report(tmp_path, capsys):
    from emulation.cli import main

    out = write_campaign(tmp_path / "campaign")
    assert main(["report", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"campaign_dir": str(out), "report": str(out / "report.md")}
    check_tables_against_parquet(out)
    assert not (out / INTERRUPTED / "report.md").exists()
    (out / "report.md").unlink()
    assert main(["report", str(out)]) == 0
    assert capsys.readouterr().out == f"{out / 'report.md'}\n" and (out / "report.md").is_file()


@pytest.mark.parametrize(("content", "problem"), [
    (None, "no campaign.json (not a campaign directory)"),
    ("[1]", "not a campaign index (no list of runs)"),
    ('{"runs": [{"name": "a", "run_dir": "a"}]}', "no completed run to report on (1 in campaign.json)"),
])
def test_a_directory_without_a_completed_campaign_is_refused_in_one_line(tmp_path, content, problem):
    if content is not None:
        (tmp_path / "campaign.json").write_text(content)
    with pytest.raises(ValueError, match=re.escape(problem)) as refused:
        write_campaign_report(tmp_path)
    assert "\n" not in str(refused.value) and not (tmp_path / "report.md").exists()


def test_edgestage_report_on_a_campaign_of_nothing_is_one_line_exit_2(tmp_path, capsys):
    from emulation.cli import main

    (tmp_path / "campaign.json").write_text('{"runs": [{"name": "a", "run_dir": "a"}]}')
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err == f"edgestage: error: {tmp_path}: no completed run to report on (1 in campaign.json)\n"
