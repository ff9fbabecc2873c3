"""`edgestage compare`: what it runs (validated before anything starts) and how it builds its table
and the oracle from run directories."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from analysis.compare_tables import compare_table
from emulation.compare import oracle_candidates, variants
from emulation.scenario import load_scenario
from emulation.workload import plan_workload

REPO = Path(__file__).resolve().parents[2]
BENCH = sorted((REPO / "scenarios" / "bench").glob("*.toml"))


@pytest.mark.parametrize("path", BENCH, ids=[p.stem for p in BENCH])
def test_the_benchmark_scenarios_load_with_every_strategy_and_the_equal_quality_floor(path):
    scenario = load_scenario(path)
    names = {"cloud_only", "edge_only", "fixed_split", "elastic"}
    if path.stem != "outage-cloud":  # it leaves out device_only (under the floor) and routing
        names |= {"device_only", "routing"}
    assert names <= set(scenario.strategies)
    elastic = scenario.strategies["elastic"]
    assert (elastic.min_class_accuracy, elastic.max_fid) == (0.946, 1.53)


def test_each_strategy_runs_alone_and_the_oracle_adds_only_plans_no_strategy_runs():
    runs = variants(REPO / "scenarios" / "default.toml")
    names = [n for n, _, _ in runs]
    assert names[:6] == ["cloud_only", "edge_only", "device_only", "fixed_split", "elastic", "routing"]
    for name, _, scenario in runs:
        assert list(scenario.strategies) == [name]
        assert scenario.workload == runs[0][2].workload and scenario.topology == runs[0][2].topology
    candidates = oracle_candidates(load_scenario(REPO / "scenarios" / "default.toml"))
    assert "small:0-30" not in candidates.values()  # class accuracy 0.832: under the floor
    assert {"large:0-30", "medium:0-30", "large:0-12,medium:12-21,small:21-30"} <= set(candidates.values())
    extra = {plan for _, plan, _ in runs if plan}
    assert extra and extra.isdisjoint({"large:0-30", "medium:0-30", "large:0-12,medium:12-21,small:21-30"})


def _run(directory: Path, name: str, rows: list[dict]) -> None:
    directory.mkdir(parents=True)
    from nodes.planning.plan import parse_plan

    base = {"warmup": False, "stage_index": 0, "n_images": 2, "outcome": "ok"}
    rows = [{**base, **r, "plan_key": parse_plan(r["plan"]).key if r["plan"] else None} for r in rows]
    pd.DataFrame(rows).to_parquet(directory / "requests.parquet")
    summary = {"strategies": {name: {"wire_bytes_per_image": 100.0}}}
    (directory / "summary.json").write_text(json.dumps(summary))


def test_the_oracle_takes_per_request_the_fastest_candidate_that_meets_the_floor(tmp_path):
    meta = {"scheduler": "dpm", "steps": 30, "time_dilation": 1, "strategies": ["cloud_only"],
            "oracle_candidates": {"large:0-30": "cloud_only", "small:0-30": "oracle-1",
                                  "large:0-3,medium:3-30": "oracle-2"},
            "floor": {"min_class_accuracy": 0.946, "max_fid": 1.53}}
    (tmp_path / "compare.json").write_text(json.dumps(meta))
    cloud = [{"request_id": "a", "t_scheduled": 0.0, "plan": "large:0-30@cloud", "total_s": 0.10},
             {"request_id": "b", "t_scheduled": 0.1, "plan": "large:0-30@cloud", "total_s": 0.10}]
    _run(tmp_path / "cloud_only", "cloud_only", cloud)
    small = [{"request_id": r, "t_scheduled": t, "plan": "small:0-30@d1", "total_s": 0.01}
             for r, t in (("a", 0), ("b", 0.1))]
    _run(tmp_path / "oracle-1", "oracle-1", small)  # fastest, but under the floor
    split = [{"request_id": "a", "t_scheduled": 0.0, "plan": "large:0-3@cloud,medium:3-30@edge",
              "total_s": 0.05},
             {"request_id": "b", "t_scheduled": 0.1, "plan": None, "total_s": None, "outcome": "failed"}]
    _run(tmp_path / "oracle-2", "oracle-2", split)
    table = compare_table(tmp_path).set_index("strategy")
    assert table.loc["oracle", "done"] == 2 and table.loc["oracle", "latency_mean_s"] == pytest.approx(0.075)
    assert table.loc["oracle", "class_accuracy"] == pytest.approx((0.95 + 0.956) / 2)
    assert table.loc["cloud_only", "latency_p50_s"] == pytest.approx(0.10)
    assert (tmp_path / "compare.csv").is_file()
    # every request of cloud_only took 0.10 s: its intervals are that one point
    assert list(table.loc["cloud_only", ["latency_mean_ci_low_s", "latency_mean_ci_high_s",
                                         "latency_p95_ci_low_s", "latency_p95_ci_high_s"]]) == [0.10] * 4
    # the oracle against cloud_only: pairs (0.05, 0.10) and (0.10, 0.10); a resample of the two pairs
    # gives 0.5, 0.75 or 1.0, the 2.5th and 97.5th percentiles of 2000 of them the two ends
    [oracle] = pd.read_csv(tmp_path / "compare_paired.csv").to_dict("records")
    assert (oracle["strategy"], oracle["reference"], oracle["n_pairs"]) == ("oracle", "cloud_only", 2)
    assert oracle["latency_mean_ratio"] == pytest.approx(0.75)
    assert (oracle["latency_mean_ratio_ci_low"], oracle["latency_mean_ratio_ci_high"]) == (0.5, 1.0)
    assert oracle["wilcoxon_p"] == 1.0  # one difference that is not zero: the test cannot tell


def test_each_strategy_is_paired_with_cloud_only_on_the_requests_both_completed(tmp_path):
    meta = {"scheduler": "dpm", "steps": 30, "time_dilation": 1, "oracle_candidates": {},
            "strategies": ["edge_only", "cloud_only", "elastic"],
            "floor": {"min_class_accuracy": 0.946, "max_fid": 1.53}}
    (tmp_path / "compare.json").write_text(json.dumps(meta))
    ids = [f"r{i}" for i in range(8)]
    cloud = [{"request_id": r, "t_scheduled": 0.1 * i, "plan": "large:0-30@cloud", "total_s": 0.1 * (i + 1)}
             for i, r in enumerate(ids)]
    _run(tmp_path / "cloud_only", "cloud_only", cloud)
    _run(tmp_path / "edge_only", "edge_only", [{**r, "plan": "large:0-30@edge"} for r in cloud])
    # elastic: exactly half of cloud_only's latency on every request, and r7 failed
    elastic = [{**r, "total_s": r["total_s"] / 2} for r in cloud[:7]]
    elastic.append({**cloud[7], "plan": None, "total_s": None, "outcome": "failed"})
    warm = {**cloud[0], "request_id": "w0", "warmup": True, "total_s": 9.0}  # never paired
    _run(tmp_path / "elastic", "elastic", [warm, *elastic])
    targets = tmp_path / "targets.toml"
    targets.write_text('[[target]]\nname = "elastic mean <= 0.6 x cloud_only"\n'
                       'value = "elastic.latency_mean_s / cloud_only.latency_mean_s"\nat_most = 0.6\n'
                       '[[target]]\nname = "edge_only mean"\nvalue = "edge_only.latency_mean_s"\n'
                       'at_most = 0.5\n')
    table = compare_table(tmp_path, targets=targets).set_index("strategy")
    assert table.loc["elastic", "done"] == 7 and table.loc["elastic", "latency_mean_s"] == pytest.approx(0.2)
    low, high = table.loc["elastic", ["latency_mean_ci_low_s", "latency_mean_ci_high_s"]]
    assert 0.05 < low < 0.2 < high < 0.35  # within the smallest and largest latency, around the mean

    paired = pd.read_csv(tmp_path / "compare_paired.csv").set_index("strategy")
    assert list(paired.index) == ["edge_only", "elastic"] and set(paired["reference"]) == {"cloud_only"}
    elastic_row = paired.loc["elastic"]
    assert elastic_row["n_pairs"] == 7  # r7 failed, the warm-up is not measured
    assert elastic_row["latency_mean_ratio"] == pytest.approx(0.5)
    assert elastic_row[["latency_mean_s", "reference_latency_mean_s"]].tolist() == pytest.approx([0.2, 0.4])
    assert elastic_row[["latency_mean_ratio_ci_low", "latency_mean_ratio_ci_high"]].tolist() == pytest.approx(
        [0.5, 0.5])
    assert elastic_row["wilcoxon_p"] == pytest.approx(2 / 2**7)  # all 7 differences one sign: exact
    edge_row = paired.loc["edge_only"]
    assert (edge_row["n_pairs"], edge_row["latency_mean_ratio"]) == (8, pytest.approx(1.0))
    assert pd.isna(edge_row["wilcoxon_p"]) and edge_row["note"] == "every difference is zero: no test"

    meta = json.loads((tmp_path / "compare.json").read_text())
    assert meta["paired"][1]["latency_mean_ratio"] == pytest.approx(0.5) and meta["paired"][1]["n_pairs"] == 7
    assert meta["statistics"]["seed"] == 0 and meta["statistics"]["confidence"] == 0.95
    ratio, mean = meta["targets"]
    assert ratio["value"] == pytest.approx(0.2 / 0.45) and ratio["met"] is True
    assert ratio["target"] == ("<= 0.6; judged on the paired ratio 0.5\u00d7 (95 % CI 0.5\u20130.5, "
                               "p = 0.016, n = 7): met only if its upper end is <= 0.6")
    # edge_only's mean is 0.45 s, under 0.5: its interval's upper end is not
    assert mean["value"] == pytest.approx(0.45) and mean["interval"]["high"] > 0.5 and mean["met"] is False
    assert compare_table(tmp_path, targets=targets).equals(table.reset_index())  # seeded: the same again
    assert pd.read_csv(tmp_path / "compare_paired.csv").set_index("strategy").equals(paired)
    compare_table(tmp_path, targets=targets, reference="elastic")
    swapped = pd.read_csv(tmp_path / "compare_paired.csv").set_index("strategy")
    assert swapped.loc["cloud_only", "latency_mean_ratio"] == pytest.approx(2.0)


def test_the_shipped_targets_are_checked_from_the_table():
    from analysis.compare_tables import compare_targets
    from analysis.targets import check_targets

    table = pd.DataFrame([
        {"strategy": "cloud_only", "done": 8, "failed": 0, "latency_mean_s": 0.8, "latency_p95_s": 1.4,
         "fid": 1.458, "class_accuracy": 0.956, "device_energy_per_image_j": 0.04,
         "svm_class_accuracy": 0.95, "pca_fd": 2.0},
        {"strategy": "device_only", "done": 8, "failed": 0, "latency_mean_s": 0.3, "latency_p95_s": 0.4,
         "fid": 2.947, "class_accuracy": 0.832, "device_energy_per_image_j": 0.2},
        {"strategy": "elastic", "done": 8, "failed": 0, "latency_mean_s": 0.3, "latency_p95_s": 0.5,
         "fid": 1.39, "class_accuracy": 0.951, "device_energy_per_image_j": 0.03,
         "svm_class_accuracy": 0.945, "pca_fd": 2.05},
        {"strategy": "elastic_energy", "done": 8, "failed": 0, "latency_mean_s": 0.3, "latency_p95_s": 0.5,
         "fid": 1.39, "class_accuracy": 0.951, "device_energy_per_image_j": 0.03},
        {"strategy": "oracle", "done": 8, "failed": 0, "latency_mean_s": 0.25, "latency_p95_s": 0.4,
         "fid": 1.4, "class_accuracy": 0.95, "device_energy_per_image_j": None}])
    checks = {c["check"].split(" (")[0]: c for c in check_targets(
        table, compare_targets(), {"min_class_accuracy": 0.946, "max_fid": 1.53})}
    speedup = checks["cloud_only mean / elastic mean"]
    assert speedup["value"] == pytest.approx(0.8 / 0.3) and speedup["met"]
    assert checks["elastic mean / oracle mean"]["value"] == pytest.approx(1.2)
    assert checks["elastic mean / oracle mean"]["met"] is False
    p95 = next(c for k, c in checks.items() if k.startswith("elastic p95"))
    # device_only is faster at p95 but under the floor: cloud_only is the best that meets it
    assert "cloud_only" in p95["check"] and p95["value"] == pytest.approx(1 - 0.5 / 1.4)
    energy = next(c for k, c in checks.items() if k.startswith("elastic_energy"))
    assert energy["value"] == pytest.approx(0.85) and energy["met"]
    # no cascade ran: its targets are there, unknown
    assert [c["met"] for k, c in checks.items() if k.startswith("cascade")] == [None, None]


def test_a_bad_targets_file_stops_compare_with_one_line_naming_file_and_entry(tmp_path):
    bad = tmp_path / "targets.toml"
    bad.write_text('[[target]]\nname = "ok"\nvalue = "elastic.fid"\nat_most = 2\n'
                   '[[target]]\nname = "typo"\nvalue = "elastic.latency_mean / oracle.latency_mean_s"\n'
                   'at_most = 1.1\n')
    out = tmp_path / "compare"
    command = ["compare", str(REPO / "scenarios" / "smoke.toml"), "--targets", str(bad), "--out", str(out)]
    done = subprocess.run([sys.executable, "-m", "emulation.cli", *command], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert f"--targets {bad}: target 2 ('typo'): value: unknown column 'latency_mean'" in done.stderr
    assert not out.exists() and not done.stdout


def test_a_cascade_s_row_takes_its_quality_from_the_cascade_table():
    from analysis.compare_tables import table_row
    from nodes.planning.cascade_table import cascade_figures

    first = pd.DataFrame({"request_id": ["a", "b"], "outcome": ["ok", "ok"], "n_images": [2, 2],
                          "total_s": [0.1, 0.3], "plan": ["small:0-30@d1", "small:0-30@d2"],
                          "plan_key": ["small:0-30", "small:0-30"],
                          "cascade": ["small>large@0.95", "small>large@0.95"]})
    row = table_row("cascade", first, {"escalation_rate": 0.25}, "dpm", 30)
    assert (row["fid"], row["class_accuracy"]) == pytest.approx((2.06301, 0.95))
    table = cascade_figures("small", "large", 0.95, "dpm", 30)  # the second judge's figures too
    assert all(row[k] == pytest.approx(table[k]) for k in ("svm_class_accuracy", "pca_fd", "judge_agreement"))
    assert row["escalation_rate"] == 0.25 and row["latency_mean_s"] == pytest.approx(0.2)


def test_a_plugin_with_a_fallback_runs_alone_with_its_fallback_built_and_sent_nothing():
    plugins = REPO / "examples" / "strategies" / "plugins.toml"
    runs = {name: scenario for name, _, scenario in variants(plugins, oracle=False)}
    assert list(runs) == ["cloud_only", "rule_based", "bandit"]
    bandit = runs["bandit"]
    assert list(bandit.strategies) == ["bandit", "cloud_only"] and bandit.strategy_names() == ["bandit"]
    sent = plan_workload(bandit.workload, ["d1", "d2"], bandit.strategy_names())
    assert {r.strategy for r in sent} == {"bandit"}
    assert runs["rule_based"].strategy_names() == ["rule_based"]
    assert runs["cloud_only"].workload.strategies is None


def test_a_strategy_of_ones_own_joins_a_benchmark_scenario_and_only_the_named_ones_run(tmp_path):
    burst = REPO / "scenarios" / "bench" / "burst.toml"
    bench = REPO / "examples" / "strategies" / "bench.toml"
    runs = {name: (plan, scenario)
            for name, plan, scenario in variants(burst, True, bench, ["elastic", "bandit"])}
    assert [n for n in runs if not n.startswith("oracle")] == ["elastic", "bandit"]
    # the oracle's candidates are the same with or without --only, each run since no fixed strategy is
    assert {p for p, _ in runs.values() if p} == set(oracle_candidates(load_scenario(burst)).values())
    assert runs["bandit"][1].strategy_names() == ["bandit"] and "cloud_only" in runs["bandit"][1].strategies
    clash = tmp_path / "clash.toml"
    clash.write_text('[strategies.elastic]\nkind = "edge_only"\n')
    with pytest.raises(ValueError, match="strategy 'elastic' is also in"):
        variants(burst, True, clash)
    other = tmp_path / "other.toml"
    other.write_text('[workload]\nrequests = 2\n')
    with pytest.raises(ValueError, match=r"holds \[strategies.\*\] tables only \(it has \[workload\]\)"):
        variants(burst, True, other)
    with pytest.raises(ValueError, match="--only bogus: not a strategy of"):
        variants(burst, True, None, ["bogus"])
