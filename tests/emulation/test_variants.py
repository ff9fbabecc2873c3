"""The variant runner's plumbing, without a network: the runner is replaced by one that writes a
run directory's files, so compare and sweep are followed from their variants to their tables (one
K chosen once, the runs in order, a progress line each, the tables rebuilt from the directory)."""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path

import pandas as pd
import pytest

from emulation import runner
from emulation.dilation import Dilation
from emulation.scenario import load_scenario, parse_scenario, scenario_tables
from emulation.variants import format_duration, progress_line, run_variants, shared_dilation
from tests.emulation.emulated_runs import FakeRunnerBase

REPO = Path(__file__).resolve().parents[2]
DEFAULT, SMOKE = REPO / "scenarios" / "default.toml", REPO / "scenarios" / "smoke.toml"


class FakeRunner(FakeRunnerBase):
    """Records what it was asked (strategy, run directory, K), writes what a run directory holds
    that compare and sweep read."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, k: float = 5.0):
        super().__init__(monkeypatch)
        self.k = k

    def choose_dilation(self, scenario, timer=None) -> Dilation:
        self.measured += 1
        return Dilation(self.k * scenario.workload.images_per_request, "measured (fake)")

    def run_scenario(self, scenario, out_dir, progress=True, quality=True, dilation=None, **_):
        out = Path(out_dir)
        assert not out.exists(), "a run directory is new (or removed first)"
        out.mkdir(parents=True)
        strategy = next(iter(scenario.strategies))
        self.runs.append((strategy, out, dilation.k if dilation else None))
        rows = [{"request_id": r, "t_scheduled": t, "plan": "large:0-30@cloud", "plan_key": "large:0-30",
                 "total_s": s, "n_images": 2, "outcome": "ok", "warmup": False, "stage_index": 0,
                 "host": "cloud", "start_step": 0, "end_step": 30}
                for r, t, s in (("a", 0.0, 0.1), ("b", 0.1, 0.3))]
        pd.DataFrame(rows).to_parquet(out / "requests.parquet")
        entry = {"done": 2, "failed": 0, "latency_p50_s": 0.2, "wire_bytes_per_image": 10.0}
        (out / "summary.json").write_text(json.dumps({"strategies": {strategy: entry}}))
        (out / "manifest.json").write_text(json.dumps({"clock": {"wall_origin": 0.0, "time_dilation": 1.0}}))


def _with(path: Path, **tables) -> object:
    data, _ = scenario_tables(path)
    for table, fields in tables.items():
        data[table] = {**data.get(table, {}), **fields}
    return parse_scenario(data, source=str(path))


def test_variants_run_in_order_at_one_k_with_a_progress_line_each(tmp_path, monkeypatch, capsys):
    fake = FakeRunner(monkeypatch)
    base = load_scenario(SMOKE)
    written = []
    dirs = run_variants({"b": base, "a": base}, tmp_path / "out", before=lambda d: written.append(d.k),
                        on_run=lambda name, run: written.append(name))
    assert dirs == {"b": tmp_path / "out" / "b", "a": tmp_path / "out" / "a"}
    k = fake.k * base.workload.images_per_request
    assert [(d.name, run_k) for _, d, run_k in fake.runs] == [("b", k), ("a", k)]
    assert fake.measured == 1 and written == [k, "b", "a"]
    first, second = capsys.readouterr().err.splitlines()
    assert first == "run 1 of 2: b"  # nothing finished yet: no time left to tell
    assert re.fullmatch(r"run 2 of 2: a \(about \d+ s left\)", second), second


def test_a_used_out_directory_stops_before_anything_and_replace_reruns_into_it(tmp_path, monkeypatch):
    fake = FakeRunner(monkeypatch)
    out = tmp_path / "out"
    (out / "a").mkdir(parents=True)
    (out / "a" / "old").write_text("")
    with pytest.raises(ValueError, match="not empty"):
        run_variants({"a": load_scenario(SMOKE)}, out, progress=False)
    assert fake.runs == [] and fake.measured == 0
    given = Dilation(3, "given")
    run_variants({"a": load_scenario(SMOKE)}, out, dilation=given, replace=True, progress=False)
    assert not (out / "a" / "old").exists() and fake.runs[0][2] == 3 and fake.measured == 0


def test_one_k_is_the_largest_any_variant_needs_measured_once_per_hardware_configuration(monkeypatch):
    fake = FakeRunner(monkeypatch)
    one, four = (_with(SMOKE, workload={"images_per_request": n}) for n in (1, 4))
    links = _with(SMOKE, workload={"images_per_request": 1}, topology={"backhaul": {"bw_mbit": 2}})
    chosen = shared_dilation([one, links, four, one])
    assert chosen.k == 20.0 and "the largest of 2 variants' K" in chosen.how and fake.measured == 2


def test_variants_that_set_different_k_run_each_at_its_own(monkeypatch):
    fake = FakeRunner(monkeypatch)
    runs = [_with(SMOKE, run={"time_dilation": k}) for k in (1, 4)]
    assert shared_dilation(runs) is None and fake.measured == 0


def test_compare_runs_every_strategy_and_candidate_once_then_its_table_figure_and_targets(
        tmp_path, monkeypatch, capsys):
    from analysis.targets import DEFAULT_TARGETS
    from emulation.compare import rerun, run_compare, variants

    fake = FakeRunner(monkeypatch)
    out = tmp_path / "compare"
    table = run_compare(DEFAULT, out, on_run=lambda name, run: None)
    names = [n for n, _, _ in variants(DEFAULT)]
    assert [d.name for _, d, _ in fake.runs] == names and fake.measured == 1
    assert {k for _, _, k in fake.runs} == {fake.k * load_scenario(DEFAULT).workload.images_per_request}
    assert capsys.readouterr().err.splitlines()[0] == f"run 1 of {len(names)}: {names[0]}"
    meta = json.loads((out / "compare.json").read_text())
    assert meta["runs"] == names and meta["targets_file"] == str(DEFAULT_TARGETS)
    assert meta["time_dilation"] == fake.runs[0][2] and (out / "compare.png").is_file()
    assert list(table["strategy"]) == [*meta["strategies"], "oracle"]
    assert all({"check", "value", "target", "met"} <= set(c) for c in meta["targets"])
    speedup = meta["targets"][0]
    assert speedup["value"] == pytest.approx(1.0) and speedup["met"] is True  # the fake serves all alike
    # judged on the paired ratio over the fake's two requests: the same in every run, so 1 exactly
    assert [speedup["interval"][k] for k in ("low", "high", "n")] == [1.0, 1.0, 2]
    assert ("judged on the paired ratio 1\u00d7 (95 % CI 1\u20131, p = -, n = 2): met only if its lower "
            "end is >= 1") in speedup["target"]
    paired = pd.read_csv(out / "compare_paired.csv")
    assert list(paired["strategy"]) == [*(n for n in meta["strategies"] if n != "cloud_only"), "oracle"]
    assert set(paired["reference"]) == {"cloud_only"} and set(paired["n_pairs"]) == {2}
    assert set(paired["latency_mean_ratio"]) == {1.0} and paired["wilcoxon_p"].isna().all()
    assert meta["paired"] == json.loads(paired.to_json(orient="records"))
    # the fake's latencies are 0.1 s and 0.3 s: the mean's interval lies within them
    assert ((table["latency_mean_ci_low_s"] >= 0.1) & (table["latency_mean_ci_high_s"] <= 0.3)).all()
    from analysis.compare_figure import error_bars

    below, above = error_bars(pd.read_csv(out / "compare.csv"), "latency_mean_s")
    assert list(below) == pytest.approx(list(table["latency_mean_s"] - table["latency_mean_ci_low_s"]))
    assert list(above) == pytest.approx(list(table["latency_mean_ci_high_s"] - table["latency_mean_s"]))

    fake.runs.clear()
    mine = tmp_path / "mine.toml"
    mine.write_text('[[target]]\nname = "elastic p50"\nvalue = "elastic.latency_p50_s"\nat_most = 0.1\n')
    rerun(DEFAULT, out, ["elastic"], progress=False, targets=mine)
    meta = json.loads((out / "compare.json").read_text())
    assert [(d.name, k) for _, d, k in fake.runs] == [("elastic", meta["time_dilation"])]
    assert meta["repeated"] == ["elastic"] and meta["targets_file"] == str(mine)
    assert meta["targets"] == [{"check": "elastic p50", "value": pytest.approx(0.2), "target": "<= 0.1",
                                "met": False}]


def test_a_bad_targets_file_stops_compare_before_any_run(tmp_path, monkeypatch):
    from emulation.compare import run_compare

    fake = FakeRunner(monkeypatch)
    bad = tmp_path / "bad.toml"
    bad.write_text('[[target]]\nname = "x"\nvalue = "elastic.latency"\nat_most = 1\n')
    with pytest.raises(ValueError, match=r"target 1 \('x'\): value: unknown column 'latency'"):
        run_compare(DEFAULT, tmp_path / "compare", targets=bad)
    assert fake.runs == [] and not (tmp_path / "compare").exists()


def test_a_sweep_runs_each_value_at_one_k_and_rewrites_its_table_after_each_run(tmp_path, monkeypatch):
    from emulation.sweep import run_sweep

    fake = FakeRunner(monkeypatch)
    out = tmp_path / "sweep"
    seen = []
    original = fake.run_scenario

    def run_and_look(scenario, out_dir, **kwargs):
        seen.append(len(pd.read_csv(out / "sweep.csv")) if (out / "sweep.csv").is_file() else 0)
        original(scenario, out_dir, **kwargs)

    monkeypatch.setattr(runner, "run_scenario", run_and_look)
    table = run_sweep(SMOKE, "topology.backhaul.bw_mbit", [5, 50], out, progress=False)
    assert seen == [0, 1]  # the fake's summary has one strategy: one row per finished run
    assert list(table["topology.backhaul.bw_mbit"]) == [5, 50]
    assert list(table["run_dir"]) == ["topology.backhaul.bw_mbit=5", "topology.backhaul.bw_mbit=50"]
    assert fake.measured == 1 and len({k for _, _, k in fake.runs}) == 1
    meta = json.loads((out / "sweep.json").read_text())
    assert meta["time_dilation"] == fake.runs[0][2] and (out / "sweep.png").read_bytes()[:4] == b"\x89PNG"
    assert pd.read_csv(out / "sweep.csv")["run_dir"].tolist() == table["run_dir"].tolist()


def _ticking(step_s: float):
    """A clock that moves `step_s` seconds each time it is read."""
    ticks = itertools.count()
    return lambda: next(ticks) * step_s


def test_each_run_after_the_first_says_the_time_left_from_the_mean_of_those_finished(
        tmp_path, monkeypatch, capsys):
    FakeRunner(monkeypatch)
    base = load_scenario(SMOKE)
    run_variants({"a": base, "b": base, "c": base}, tmp_path / "out", clock=_ticking(60.0))
    # read at the start and before runs 2 and 3: 60 s a run, then 2 and 1 runs to go
    assert capsys.readouterr().err.splitlines() == [
        "run 1 of 3: a", "run 2 of 3: b (about 2 min left)", "run 3 of 3: c (about 60 s left)"]


def test_runs_skipped_on_resume_count_in_i_of_n_but_not_in_the_time_left(tmp_path, monkeypatch, capsys):
    FakeRunner(monkeypatch)
    base = load_scenario(SMOKE)
    runs = {name: base for name in "abcd"}
    done = run_variants(runs, tmp_path / "out", skip={"a", "b"}, clock=_ticking(600.0))
    assert list(done) == ["c", "d"]
    assert capsys.readouterr().err.splitlines() == ["run 3 of 4: c", "run 4 of 4: d (about 10 min left)"]


@pytest.mark.parametrize(("seconds", "shown"), [
    (0.2, "about 1 s"), (44.6, "about 45 s"), (89, "about 89 s"), (240, "about 4 min"),
    (89 * 60, "about 89 min"), (9000, "about 2.5 h")])
def test_the_time_left_is_rounded_as_an_estimate_deserves(seconds, shown):
    assert format_duration(seconds) == shown
    assert progress_line(2, 5, "x", seconds) == f"run 2 of 5: x ({shown} left)"
    assert progress_line(1, 5, "x") == "run 1 of 5: x"


def test_compare_and_sweep_json_is_one_document_on_stdout(tmp_path, monkeypatch, capsys):
    """`compare --json` and `sweep --json` (the fake runner): stdout parses whole as one JSON
    document with the table's rows and the output directory; the run i of N lines, the list of
    runs and each finished run go to stderr."""
    from emulation.cli import main

    fake = FakeRunner(monkeypatch)
    out = tmp_path / "compare"
    assert main(["compare", str(DEFAULT), "--out", str(out), "--json", "-q"]) == 0
    printed = capsys.readouterr()
    doc = json.loads(printed.out)
    assert doc["compare_dir"] == str(out) and doc["time_dilation"] == fake.runs[0][2]
    assert {"scenario", "how", "runs", "repeated", "table", "paired", "targets", "targets_file"} <= set(doc)
    assert [row["strategy"] for row in doc["table"]] == list(pd.read_csv(out / "compare.csv")["strategy"])
    assert doc["paired"] == json.loads((out / "compare.json").read_text())["paired"]
    assert all({"check", "value", "target", "met"} <= set(check) for check in doc["targets"])
    assert "done: cloud_only -> " in printed.err and "runs: cloud_only" in printed.err

    out = tmp_path / "sweep"
    assert main(["sweep", str(SMOKE), "--set", "topology.backhaul.bw_mbit=5,50", "--out", str(out),
                 "--json", "-q"]) == 0
    printed = capsys.readouterr()
    doc = json.loads(printed.out)
    assert doc["sweep_dir"] == str(out) and doc["field"] == "topology.backhaul.bw_mbit"
    assert doc["values"] == [5, 50] and doc["time_dilation"] == fake.runs[-1][2]
    assert [row["topology.backhaul.bw_mbit"] for row in doc["table"]] == [5, 50]
    assert doc["table"][0]["run_dir"] == "topology.backhaul.bw_mbit=5"
