"""`edgestage campaign`, without a network: the runner is replaced by one that writes a minimal run
directory (a manifest with its status, requests.parquet, traffic.parquet, summary.json), so a
campaign is followed from its plan (grid x strategies x repetitions, the seeds) through its index,
an interruption and its resumption, to the frames analysis/load.py makes of it."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from analysis.load import load_runs
from emulation.campaign import SEED_RULE, completed_runs, plan_campaign, repetition_seed, run_campaign
from emulation.dilation import Dilation
from tests.emulation.emulated_runs import FakeRunnerBase

REPO = Path(__file__).resolve().parents[2]
SMOKE = REPO / "scenarios" / "smoke.toml"
FIELD = "topology.backhaul.bw_mbit"


class FakeRunner(FakeRunnerBase):
    """Records (run directory's name, K, seeds); with `stop_at`, the run with that number (from 1)
    leaves a partial directory and raises `stop_with`, as an interrupted or failed run does."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, stop_at: int | None = None,
                 stop_with: type[BaseException] = KeyboardInterrupt, overrun: dict[int, int] | None = None):
        super().__init__(monkeypatch)
        self.stop_at, self.stop_with = stop_at, stop_with
        self.overrun = overrun or {}  # run number (from 1) -> the profiled steps it overran

    def choose_dilation(self, scenario, timer=None) -> Dilation:
        self.measured += 1
        return Dilation(7.0, "measured (fake)")

    def run_scenario(self, scenario, out_dir, progress=True, quality=True, dilation=None, **_):
        out = Path(out_dir)
        assert not out.exists(), "a run directory is new (or removed first)"
        out.mkdir(parents=True)
        seeds = {"topology": scenario.topology.seed, "workload": scenario.workload.seed}
        manifest = {"status": "running", "scenario": scenario.model_dump(mode="json"), "seeds": seeds,
                    "clock": {"wall_origin": 0.0, "time_dilation": dilation.k if dilation else 1.0}}
        if len(self.runs) + 1 == self.stop_at:
            (out / "manifest.json").write_text(json.dumps({**manifest, "status": "interrupted"}))
            raise self.stop_with()
        self.runs.append((out.name, dilation.k if dilation else None, seeds))
        strategies = list(scenario.strategies)
        rows = [{"request_id": f"r0-q{k:04d}", "strategy": strategies[k % len(strategies)], "repetition": 0,
                 "total_s": 0.1 * (k + 1), "outcome": "ok", "warmup": False} for k in range(2)]
        pd.DataFrame(rows).to_parquet(out / "requests.parquet")
        pd.DataFrame({"request_id": ["r0-q0000", "r0-q0001"], "wire_bytes": [100, 200]}).to_parquet(
            out / "traffic.parquet")
        steps = self.overrun.get(len(self.runs), 0)
        overruns = {s: {"overrun_steps": steps if i == 0 else 0} for i, s in enumerate(strategies)}
        summary = {"scenario": scenario.name, "status": "completed", "strategies": overruns}
        (out / "summary.json").write_text(json.dumps(summary))
        (out / "manifest.json").write_text(json.dumps({**manifest, "status": "completed"}))


@pytest.fixture
def scenario(tmp_path) -> Path:
    """The smoke scenario with two of its strategies: cloud_only and edge_only."""
    text = SMOKE.read_text()
    path = tmp_path / "two.toml"
    path.write_text(text[:text.index("[strategies.device_only]")] + text[text.index("[generation]"):])
    return path


def _plan(path: Path, repetitions: int = 2):
    return plan_campaign(path, [(FIELD, [5, 50])], each_strategy=True, repetitions=repetitions)


NAMES = [f"{FIELD}={bw},strategy={s},rep={r}"
         for r in (0, 1) for bw in (5, 50) for s in ("cloud_only", "edge_only")]


TIME_LEFT = re.compile(r" \(about \d+(\.\d)? (s|min|h) left\)$")


def _progress(err: str) -> list[str]:
    """The `run i of N: name` lines on stderr without their time left, which every line but the
    first must carry (measured with the real clock on the fake's runs: only its form is checked)."""
    lines = err.splitlines()
    assert lines and not TIME_LEFT.search(lines[0]), lines
    assert all(TIME_LEFT.search(line) for line in lines[1:]), lines
    return [TIME_LEFT.sub("", line) for line in lines]


def test_a_grid_times_strategies_times_repetitions_is_every_run_with_its_seeds(scenario):
    campaign = _plan(scenario)
    assert [r.name for r in campaign.runs] == NAMES  # repetition by repetition, the grid, the strategy
    first = campaign.runs[0]
    assert first.fields == {FIELD: 5} and first.strategy == "cloud_only" and first.repetition == 0
    for run in campaign.runs:
        assert list(run.scenario.strategies) == [run.strategy]  # each strategy alone
        assert run.scenario.topology.backhaul.bw_mbit == run.fields[FIELD]
        assert run.seeds == {"workload": run.scenario.workload.seed, "topology": run.scenario.topology.seed}
    # repetition 0 keeps the scenario's seeds (smoke: 1 and 1); repetition 1 its own, by the rule,
    # the same for every configuration within it (paired)
    assert {json.dumps(r.seeds) for r in campaign.runs[:4]} == {json.dumps({"workload": 1, "topology": 1})}
    again = {json.dumps(r.seeds) for r in campaign.runs[4:]}
    assert again == {json.dumps({"workload": repetition_seed(1, 1, "workload"),
                                 "topology": repetition_seed(1, 1, "topology")})}
    assert campaign.runs[4].seeds["workload"] != 1 and campaign.runs[4].seeds["topology"] != 1
    assert campaign.definition == {"scenario_sha256": campaign.definition["scenario_sha256"],
                                   "grid": [[FIELD, [5, 50]]], "strategies": "each", "repetitions": 2,
                                   "seed_rule": SEED_RULE}


def test_repetition_seeds_are_deterministic_distinct_and_in_the_schemas_ranges():
    for which, bound in (("workload", 2**31), ("topology", 2**63)):
        seeds = [repetition_seed(1, r, which) for r in range(200)]
        assert seeds[0] == 1 and len(set(seeds)) == 200 and all(0 <= s < bound for s in seeds)
        assert seeds == [repetition_seed(1, r, which) for r in range(200)]
    assert repetition_seed(1, 3, "workload") != repetition_seed(2, 3, "workload")


def test_a_campaign_runs_every_run_at_one_k_and_indexes_them(scenario, tmp_path, monkeypatch, capsys):
    fake = FakeRunner(monkeypatch)
    out = tmp_path / "campaign"
    table = run_campaign(_plan(scenario), out)
    assert [name for name, _, _ in fake.runs] == NAMES
    assert fake.measured == 1 and {k for _, k, _ in fake.runs} == {7.0}
    assert _progress(capsys.readouterr().err) == [f"run {i} of 8: {n}" for i, n in enumerate(NAMES, 1)]
    index = pd.read_csv(out / "index.csv")
    assert list(index.columns) == ["name", "run_dir", FIELD, "strategy", "repetition", "seed_workload",
                                   "seed_topology", "status"]
    assert list(index["name"]) == NAMES and set(index["status"]) == {"completed"}
    assert list(index[FIELD]) == [5, 5, 50, 50] * 2 and list(index["repetition"]) == [0] * 4 + [1] * 4
    pd.testing.assert_frame_equal(table, index)
    meta = json.loads((out / "campaign.json").read_text())
    assert meta["scenario"] == str(scenario) and meta["time_dilation"] == 7.0 and meta["repetitions"] == 2
    assert [r["name"] for r in meta["runs"]] == NAMES
    assert meta["runs"][5] == {"name": NAMES[5], "run_dir": NAMES[5], "fields": {FIELD: 5},
                               "strategy": "edge_only", "repetition": 1, "seeds": fake.runs[5][2],
                               "status": "completed"}


def test_an_interrupted_campaign_keeps_its_index_and_resumes_only_what_is_missing(
        scenario, tmp_path, monkeypatch, capsys):
    out = tmp_path / "campaign"
    stopped = FakeRunner(monkeypatch, stop_at=5)
    with pytest.raises(KeyboardInterrupt):
        run_campaign(_plan(scenario), out)
    assert [name for name, _, _ in stopped.runs] == NAMES[:4]
    index = pd.read_csv(out / "index.csv")
    assert list(index["status"]) == ["completed"] * 4 + ["interrupted"] + ["pending"] * 3
    assert completed_runs(_plan(scenario), out) == NAMES[:4]
    capsys.readouterr()

    resumed = FakeRunner(monkeypatch)  # the partial run 5 is removed first (the fake asserts it)
    table = run_campaign(_plan(scenario), out)
    assert [name for name, _, _ in resumed.runs] == NAMES[4:]
    assert resumed.measured == 0 and {k for _, k, _ in resumed.runs} == {7.0}  # the campaign's K
    assert _progress(capsys.readouterr().err) == [f"run {i} of 8: {n}" for i, n in enumerate(NAMES, 1)][4:]
    assert set(table["status"]) == {"completed"} and len(table) == 8
    run_campaign(_plan(scenario), out)  # complete: nothing runs again
    assert len(resumed.runs) == 4


def test_a_failed_run_stops_the_campaign_and_is_retried_on_resume(scenario, tmp_path, monkeypatch):
    out = tmp_path / "campaign"
    FakeRunner(monkeypatch, stop_at=2, stop_with=RuntimeError)
    with pytest.raises(RuntimeError):
        run_campaign(_plan(scenario, repetitions=1), out)
    statuses = list(pd.read_csv(out / "index.csv")["status"])
    assert statuses == ["completed", "interrupted", "pending", "pending"]
    (out / NAMES[0] / "manifest.json").write_text(json.dumps({"status": "running"}))  # as if killed by -9
    assert completed_runs(_plan(scenario, repetitions=1), out) == []
    resumed = FakeRunner(monkeypatch)
    table = run_campaign(_plan(scenario, repetitions=1), out)
    assert [name for name, _, _ in resumed.runs] == NAMES[:4]
    assert set(table["status"]) == {"completed"}


def test_a_run_that_overran_runs_again_and_one_that_overruns_twice_is_left_out(
        scenario, tmp_path, monkeypatch, capsys):
    out = tmp_path / "campaign"
    # run 2 overruns and so does its second attempt (run 5); run 3 overruns once
    fake = FakeRunner(monkeypatch, overrun={2: 3, 3: 1, 5: 2})
    table = run_campaign(_plan(scenario, repetitions=1), out)
    names = NAMES[:4]
    assert [name for name, _, _ in fake.runs] == [*names, names[1], names[2]]
    err = capsys.readouterr().err
    assert f"{names[1]}: 3 profiled steps overran their K x profile; running it again" in err
    assert f"{names[2]}: 1 profiled steps overran" in err
    assert list(table["status"]) == ["completed", "overran", "completed", "completed"]
    aside = sorted(p.name for p in (out / ".overran").iterdir())
    assert aside == [f"{names[1]}.1", f"{names[2]}.1"]
    assert completed_runs(_plan(scenario, repetitions=1), out) == [names[0], *names[2:]]
    # left out of the campaign's frames; the attempts set aside are never loaded
    assert sorted(load_runs(out).runs["run_id"]) == sorted([names[0], *names[2:]])

    resumed = FakeRunner(monkeypatch, overrun={1: 5})  # resumed: the run that overran tries again
    table = run_campaign(_plan(scenario, repetitions=1), out)
    assert [name for name, _, _ in resumed.runs] == [names[1], names[1]]
    assert list(table["status"]) == ["completed"] * 4
    assert sorted(p.name for p in (out / ".overran").iterdir()) == sorted(
        [f"{names[1]}.1", f"{names[1]}.2", f"{names[1]}.3", f"{names[2]}.1"])


def test_another_definition_into_the_same_out_is_refused_with_one_line(scenario, tmp_path, monkeypatch):
    out = tmp_path / "campaign"
    fake = FakeRunner(monkeypatch)
    run_campaign(_plan(scenario, repetitions=1), out, progress=False)
    before = (out / "campaign.json").read_text()
    fake.runs.clear()
    with pytest.raises(ValueError, match=r"another definition \(repetitions: 1 there, 2 here\)") as refused:
        run_campaign(_plan(scenario, repetitions=2), out, progress=False)
    assert "\n" not in str(refused.value)
    other = plan_campaign(scenario, [(FIELD, [5, 20])], each_strategy=True)
    with pytest.raises(ValueError, match=r"another definition \(grid: "):
        run_campaign(other, out, progress=False)
    assert fake.runs == [] and (out / "campaign.json").read_text() == before
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "x").write_text("")
    with pytest.raises(ValueError, match="holds no campaign.json"):
        run_campaign(_plan(scenario), tmp_path / "used", progress=False)


@pytest.mark.parametrize(("grid", "needle"), [
    ([("nodes.cloud.nope", [1])], "nope"),
    ([(FIELD, [5, "slow"])], "topology.backhaul.bw_mbit: Input should be a valid number"),
    ([(FIELD, [5]), (FIELD, [6])], f"--set {FIELD}: given twice"),
    ([(FIELD, [5, 5])], "a value is repeated"),
    ([(FIELD, [])], "no values"),
])
def test_a_bad_field_or_value_is_refused_before_anything_is_written(scenario, monkeypatch, grid, needle):
    fake = FakeRunner(monkeypatch)
    with pytest.raises(ValueError) as refused:
        plan_campaign(scenario, grid, repetitions=2)
    assert needle in str(refused.value) and "\n" not in str(refused.value)
    assert fake.runs == [] and fake.measured == 0


def test_load_runs_gives_a_campaigns_varied_fields_and_repetition_as_columns(scenario, tmp_path, monkeypatch):
    out = tmp_path / "campaign"
    FakeRunner(monkeypatch)
    run_campaign(_plan(scenario), out, progress=False)
    tables = load_runs(out)
    runs = tables.runs.set_index("run_id")
    assert sorted(runs.index) == sorted(NAMES)
    row = runs.loc[NAMES[7]]
    assert (row[FIELD], row["campaign_strategy"], row["campaign_repetition"]) == (50, "edge_only", 1)
    assert (row["campaign"], row["campaign_run"], row["strategies"]) == ("campaign", NAMES[7], "edge_only")
    assert row["seed_workload"] == repetition_seed(1, 1, "workload")
    for frame in (tables.requests, tables.traffic):
        assert len(frame) == 16
        per_run = frame.groupby("run_id")[[FIELD, "campaign_strategy", "campaign_repetition"]].first()
        expected = runs[[FIELD, "campaign_strategy", "campaign_repetition"]].sort_index()
        pd.testing.assert_frame_equal(per_run.sort_index(), expected, check_dtype=False, check_names=False)
    assert set(tables.requests["repetition"]) == {0}  # the workload's own repetition, untouched


def test_campaign_check_prints_the_plan_and_runs_nothing(scenario, tmp_path, monkeypatch, capsys):
    from emulation.cli import main

    fake = FakeRunner(monkeypatch)
    out = tmp_path / "campaign"
    argv = ["campaign", str(scenario), "--set", f"{FIELD}=5,50", "--strategies", "each", "--repetitions", "2",
            "--out", str(out)]
    assert main([*argv, "--check"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == (f"campaign: 8 runs (2 {FIELD} x each strategy x 2 repetitions); "
                        f"0 already completed in {out}")
    assert [line.split(":")[0].strip() for line in lines[1:]] == NAMES
    assert lines[1].endswith("workload.seed 1, topology.seed 1")
    assert fake.runs == [] and fake.measured == 0 and not out.exists()

    assert main(argv) == 0  # the same command without --check runs it (here: the fake)
    printed = capsys.readouterr()
    assert _progress(printed.err) == [f"run {i} of 8: {n}" for i, n in enumerate(NAMES, 1)]
    assert printed.out.splitlines()[-1] == f"campaign index: {out / 'index.csv'} (and campaign.json)"
    assert main([*argv, "--check"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "8 already completed" in lines[0] and all(line.endswith("(completed)") for line in lines[1:])


@pytest.mark.parametrize(("extra", "needle"), [
    (["--set", "nodes.cloud.nope=1"], "nope"),
    (["--set", "topology.backhaul"], "expected TABLE.FIELD=V1,V2"),
    (["--repetitions", "2"], "another definition (repetitions: 1 there, 2 here)"),
])
def test_bad_campaign_input_is_one_line_exit_2(scenario, tmp_path, monkeypatch, capsys, extra, needle):
    from emulation.cli import main

    fake = FakeRunner(monkeypatch)
    out = tmp_path / "campaign"
    if "--repetitions" in extra:  # OUT holds a campaign of one repetition
        run_campaign(plan_campaign(scenario), out, progress=False)
        fake.runs.clear()
    before = sorted(p.name for p in out.iterdir()) if out.exists() else None
    assert main(["campaign", str(scenario), "--out", str(out), *extra]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("edgestage: error:") and needle in err, err
    assert fake.runs == [] and (sorted(p.name for p in out.iterdir()) if out.exists() else None) == before


def test_campaign_json_is_the_index_or_with_check_the_plan(scenario, tmp_path, monkeypatch, capsys):
    """`campaign --json`: stdout is one JSON document (the plan with --check, the index after the
    runs) and the campaign directory; the campaign's own lines go to stderr."""
    from emulation.cli import main

    fake = FakeRunner(monkeypatch)
    out = tmp_path / "campaign"
    argv = ["campaign", str(scenario), "--set", f"{FIELD}=5,50", "--strategies", "each", "--repetitions", "2",
            "--out", str(out), "--json"]
    assert main([*argv, "--check"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert (plan["campaign_dir"], plan["runs"], plan["already_completed"]) == (str(out), 8, 0)
    assert [r["name"] for r in plan["plan"]] == NAMES and not any(r["completed"] for r in plan["plan"])
    seeds = {"workload": repetition_seed(1, 1, "workload"), "topology": repetition_seed(1, 1, "topology")}
    assert plan["plan"][5] == {"name": NAMES[5], "fields": {FIELD: 5}, "strategy": "edge_only",
                               "repetition": 1, "seeds": seeds, "completed": False}
    assert fake.runs == [] and not out.exists()

    assert main(argv) == 0
    printed = capsys.readouterr()
    doc = json.loads(printed.out)
    assert doc["campaign_dir"] == str(out) and doc["index_file"] == str(out / "index.csv")
    assert (doc["runs"], doc["already_completed"], doc["statuses"]) == (8, 0, {"completed": 8})
    assert doc["index"] == json.loads(pd.read_csv(out / "index.csv").to_json(orient="records"))
    assert printed.err.splitlines()[0].startswith("campaign: 8 runs")
    assert f"done: {NAMES[7]} -> " in printed.err
    assert main([*argv, "--check"]) == 0
    assert all(r["completed"] for r in json.loads(capsys.readouterr().out)["plan"])


@pytest.mark.root
@pytest.mark.slow
def test_a_real_campaign_on_a_local_dask_cluster_gives_fresh_networks_seeds_and_paired_figures(tmp_path):
    """Two strategies alone, two repetitions, on a local Dask cluster of two workers (`edgestage
    campaign --cluster local:2`): four real runs on fresh networks, one network at a time, each with
    its own seeds in its manifest; the frames load_runs gives equal the runs' parquet files, and the
    paired ratio over the requests of both repetitions lies inside its interval."""
    from analysis.statistics import paired_ratio

    text = SMOKE.read_text()
    cut = text.index("[strategies.device_only]")
    text = text[:cut] + text[text.index("[generation]"):]  # cloud_only and edge_only only
    scenario = tmp_path / "two.toml"
    # 4 requests of one image each, 0.2 s apart: what is checked is the runs and their figures
    text = text.replace("interval_s = 0.5", "interval_s = 0.2")
    text = text.replace("images_per_request = 4", "images_per_request = 1")
    scenario.write_text(text.replace("requests = 8 ", "requests = 4 "))
    out = tmp_path / "campaign"
    campaign = plan_campaign(scenario, each_strategy=True, repetitions=2)
    done = subprocess.run([sys.executable, "-m", "emulation.cli", "campaign", str(scenario), "--strategies",
                           "each", "--repetitions", "2", "--out", str(out), "--cluster", "local:2",
                           "--no-quality", "--json"], cwd=REPO, capture_output=True, text=True, timeout=500)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "distributed.scheduler" not in done.stderr  # the cluster's INFO lines stay quiet
    assert len(re.findall(r"^run \d of 4 done: .* on ", done.stderr, re.M)) == 4
    index = pd.DataFrame(json.loads(done.stdout)["index"])
    assert len(index) == 4 and set(index["status"]) == {"completed"}
    seeds, windows = {}, []
    for run in campaign.runs:
        manifest = json.loads((out / run.name / "manifest.json").read_text())
        assert manifest["status"] == "completed"
        assert manifest["scenario"]["strategies"].keys() == {run.strategy}
        seeds[run.name] = (manifest["seeds"]["workload"], manifest["seeds"]["topology"])
        assert seeds[run.name] == (run.seeds["workload"], run.seeds["topology"])
        # from when the run began to its last file written (the tar keeps mtimes)
        files = [f.stat().st_mtime for f in (out / run.name).rglob("*") if f.is_file()]
        windows.append((pd.Timestamp(manifest["created"]).timestamp(), max(files)))
    windows.sort()
    # `created` is to the second: one second's slack
    overlaps = [(a, b) for a, b in zip(windows, windows[1:], strict=False) if a[1] > b[0] + 1]
    assert not overlaps, f"two networks were up at once: {overlaps}"
    assert len(set(seeds.values())) == 2  # one pair of seeds per repetition, shared by its strategies
    tables = load_runs(out)
    assert sorted(tables.runs["campaign_repetition"]) == [0, 0, 1, 1]
    for run in campaign.runs:
        mine = tables.requests[tables.requests["run_id"] == run.name]
        measured = pd.read_parquet(out / run.name / "requests.parquet").query("warmup != True")
        assert len(mine) == len(measured) and (mine["outcome"] == "ok").all()
    first = tables.requests[tables.requests["stage_index"] == 0]
    key = ["campaign_repetition", "request_id"]
    latency = first.pivot_table(index=key, columns="campaign_strategy", values="total_s")
    assert len(latency) == 8  # the same 4 request ids in each repetition, through both strategies
    paired = paired_ratio(latency["edge_only"], latency["cloud_only"])
    assert paired.n_pairs == 8 and paired.low <= paired.ratio <= paired.high
    assert paired.ratio == pytest.approx(latency["edge_only"].mean() / latency["cloud_only"].mean())
    # the worked example makes a paper's figure and LaTeX table of it, from the parquet files alone
    paper = tmp_path / "paper"
    done = subprocess.run([sys.executable, str(REPO / "examples" / "campaign_figure.py"), str(out),
                           "--out", str(paper)], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    table = pd.read_csv(paper / "latency.csv").set_index("strategy")
    assert table.loc["edge_only", "latency_mean_s"] == pytest.approx(latency["edge_only"].mean())
    assert table.loc["edge_only", "ratio_to_cloud_only"] == pytest.approx(paired.ratio)
    assert table.loc["edge_only", "pairs"] == 8 and table.loc["cloud_only", "requests"] == 8
    assert "\\toprule" in (paper / "latency.tex").read_text()
    assert (paper / "latency.pdf").read_bytes()[:4] == b"%PDF"
    _check_campaign_report(out, latency)


def _check_campaign_report(out: Path, latency: pd.DataFrame) -> None:
    """`edgestage report` of the campaign: every table's numbers recomputed from the parquet files,
    the intervals over repetitions covering the repetitions' means, and report.html as headless
    Chromium renders it, with every figure loaded."""
    from tests.analysis.campaign_checks import check_html_report, check_tables_against_parquet
    from tests.browser import render_report

    done = subprocess.run([sys.executable, "-m", "emulation.cli", "report", str(out), "--json"], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert check_tables_against_parquet(out) == ["per_strategy", "per_repetition", "paired", "quality"]
    check_html_report(out)
    per_strategy = pd.read_csv(out / "tables" / "per_strategy.csv").set_index("strategy")
    for strategy in ("cloud_only", "edge_only"):
        means = latency[strategy].groupby(level="campaign_repetition").mean()
        row = per_strategy.loc[strategy]
        assert row["repetitions"] == 2
        assert row["latency_mean_of_repetitions_ci_low_s"] <= means.min() + 1e-9
        assert row["latency_mean_of_repetitions_ci_high_s"] >= means.max() - 1e-9
        assert row["latency_mean_ci_low_s"] <= row["latency_mean_s"] <= row["latency_mean_ci_high_s"]
    page = render_report(out / "report.html")
    figures = sorted((out / "plots").glob("*.png"))
    assert figures and len(page.images) == len(figures)
    assert all(image.loaded and image.src_prefix.startswith("data:image/png") for image in page.images)
    assert page.table_count >= 4 and not page.severe_logs
