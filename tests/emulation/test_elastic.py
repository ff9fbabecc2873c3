"""The elastic planner in a real emulated run: its plans follow a step change in a device link
that it learns of only from the nodes' reports (the configured links are never read)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from tests.emulation.emulated_runs import profiled_nodes, profiled_scenario, run_cli

# d1's link: 10 Mbit/s, then from 1.05 s (emulated, on the workload's clock) 0.1 Mbit/s: the
# result of an edge plan (about 3 kB) then takes about 0.25 s to reach the device, the dispatch of
# a device plan (about 0.7 kB) 0.06 s
TRACE = "time_s,bw_mbit,delay_ms,loss_pct\n0,10,10,0\n1.05,0.1,10,0\n30,0.1,10,0\n"
SCENARIO = profiled_scenario(topology="""
kind = "star"
[[topology.devices]]
name = "el1"
bw_mbit = 10
delay_ms = 10
trace = "step.csv"
""", workload="""
requests = 8
arrival = "fixed"
interval_s = 0.3
images_per_request = 2
request_timeout_s = 5
""", strategies="""
[strategies.elastic]
kind = "elastic"
""", timeout_s=3, k=8)


def _measured_first_rows(tmp_path: Path, text: str) -> pd.DataFrame:
    """Run the scenario `text` (no quality figures); its measured requests' first-stage rows, all ok."""
    path = tmp_path / "scenario.toml"
    path.write_text(text)
    done = run_cli(path, tmp_path / "run")
    assert done.returncode == 0, done.stderr[-2000:]
    req = pd.read_parquet(tmp_path / "run" / "requests.parquet")
    first = req[(req["stage_index"] == 0) & req["warmup"].ne(True)].sort_values("t_scheduled")
    assert (first["outcome"] == "ok").all(), first[["request_id", "reason"]]
    return first


@pytest.mark.root
@pytest.mark.slow
def test_elastic_moves_the_steps_to_the_device_when_its_link_slows(tmp_path, nothing_left_after) -> None:
    nothing_left_after.add("el1")
    (tmp_path / "step.csv").write_text(TRACE)
    first = _measured_first_rows(tmp_path, SCENARIO)
    plans = list(zip(first["t_scheduled"], first["plan"], strict=True))
    before = [p for t, p in plans if t < 1.0]
    after = [p for t, p in plans if t > 1.1]
    # fast link: the edge's medium is quicker than the phone's small; slow link: the device
    assert before and all("@edge" in p for p in before), plans
    # it re-plans within one request of the change: the first request after it still goes the old
    # way (its slow result is what tells), the next one moves to the device
    assert after[1] == "small:0-10@el1", plans
    # and stays there mostly: a device plan's small dispatch crosses the slow link at line rate
    # (HTB's burst), which can make the link look fast again for one request (seen in CI)
    assert sum(p == "small:0-10@el1" for p in after[1:]) >= len(after[1:]) / 2, plans
    # every decision came with its prediction, and the summary and report name the strategy
    assert first["predicted_total_s"].notna().all()
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert "elastic" in summary["strategies"]


# The backhaul goes down at 0.74 s (emulated), just before request 3 (sent at 0.75 s) is dispatched
# to the cloud, and comes back at 1.45 s.  elastic prefers the cloud's datacenter GPU to the edge's
# Jetson; no connection closes (TCP just waits), so only the overdue dispatch shows the outage.  TCP
# retransmits that dispatch (RTO about 0.21 s: the minimum, scaled by K, and the round trip) at
# about 0.96, 1.39 and 2.23 s, so the old connection is stuck until 2.23 s after the link is back.
OUTAGE = profiled_scenario(topology="""
kind = "two_tier"
[topology.backhaul]
bw_mbit = 100
delay_ms = 5
[[topology.events]]
at = 0.74
link = ["edge", "cloud"]
action = "down"
[[topology.events]]
at = 1.45
link = ["edge", "cloud"]
action = "up"
[[topology.devices]]
name = "ou1"
bw_mbit = 20
delay_ms = 2
""", workload="""
requests = 9
arrival = "fixed"
interval_s = 0.25
images_per_request = 2
request_timeout_s = 6
""", strategies="""
[strategies.elastic]
kind = "elastic"
min_class_accuracy = 0.93   # medium (0.934) and large, not small (0.824): the device's phone is out
""", timeout_s=5, k=12, nodes=profiled_nodes(cloud=("medium", "datacenter_gpu"), edge=("medium", "jetson"),
                                             device=("small", "phone")))


@pytest.mark.root
@pytest.mark.slow
def test_a_request_stuck_behind_a_failed_backhaul_is_re_planned(tmp_path, nothing_left_after) -> None:
    nothing_left_after.add("ou1")
    first = _measured_first_rows(tmp_path, OUTAGE)
    rows = list(zip(first["t_scheduled"], first["plan"], first["plan_note"], first["total_s"], strict=True))
    assert all("@cloud" in plan for t, plan, _, _ in rows if t < 0.7), rows  # the cloud is quicker
    stuck = [r for r in rows if 0.7 < r[0] < 0.8]
    (_, plan, note, total), = stuck
    # re-planned onto the edge well before the link came back
    assert "re-planned" in (note or "") and "@cloud" not in plan and total < 0.5, rows
    during = [plan for t, plan, _, _ in rows if 0.8 < t < 1.4]
    assert during and all("@cloud" not in plan for plan in during), rows  # nothing else went there
    # the fresh connection to the cloud says the path is back, and carries the requests at once,
    # long before TCP retransmits the stuck dispatch (2.23 s) on the old one
    back = [(plan, total) for t, plan, _, total in rows if t > 1.7]
    assert back and all("@cloud" in plan and total < 0.2 for plan, total in back), rows
