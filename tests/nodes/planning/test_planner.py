"""The elastic planner's decisions on constructed cases: the shipped quality table of dpm/30, the
shipped hardware profiles, and live estimates fed as the coordinator feeds them (reports)."""

import time

import pytest

from nodes.planning.estimates import LiveEstimates
from nodes.planning.hardware import StepProfile, load_power, load_profiles
from nodes.planning.plan import parse_plan
from nodes.planning.planner import HostFacts, Objective, Planner, QualityFloor
from nodes.planning.quality_table import read_table
from nodes.planning.request import PlanRequest

PROFILES, POWER = load_profiles(), load_power()
N = 4


def _host(role, model, hardware, radio=None):
    return HostFacts(role, (model,), {model: PROFILES[hardware][model]}, POWER[hardware], radio)


HOSTS = {"cloud": _host("cloud", "large", "datacenter_gpu"), "edge": _host("edge", "medium", "edge_gpu"),
         "d1": _host("device", "small", "phone", "lte"), "d2": _host("device", "small", "phone", "wifi")}
# with the shipped estimates the T4's medium step is faster than the A100's large one: a cloud
# that is faster per step than the edge, for the cases where speed (not quality) should pull up
FAST_CLOUD = {**HOSTS, "cloud": HostFacts("cloud", ("large",), {"large": StepProfile(0.4, 0.01)},
                                          POWER["datacenter_gpu"])}


def planner(hosts=HOSTS):
    p = Planner(read_table("dpm", 30), hosts, coordinator="edge", steps=30)
    # message sizes as the reports teach them: a dispatch, a state and a result per image
    p.sizes.observe("dispatch", 700, N)
    p.sizes.observe("state", 3000 * N, N)
    p.sizes.observe("result", 1100 * N, N)
    return p


def links(delay_s, bytes_per_s, pairs):
    """Estimates of every path in `pairs` as if two messages of different sizes had crossed it."""
    live = LiveEstimates()
    for src, dst in pairs:
        for size in (700, 12_000):
            live.observe_transfer(src, dst, size, delay_s + size / bytes_per_s)
    return live


ALL = [(a, b) for a in HOSTS for b in HOSTS if a != b]


def ask(now, origin="d1", deadline_s=None):
    return PlanRequest(request_id="r1", device=origin, n=N, strategy="elastic", deadline_s=deadline_s,
                       wall_sent=now, wall_received=now, request_bytes=300)


def test_a_slow_device_link_keeps_every_step_on_the_device():
    live = links(0.001, 100e6, ALL)
    for pair in [("edge", "d1"), ("cloud", "d1"), ("d1", "edge"), ("d1", "cloud")]:  # 20 kB/s, 30 ms
        live.paths.pop(pair, None)
        for size in (700, 12_000):
            live.observe_transfer(*pair, size, 0.03 + size / 20e3)
    decision = planner().decide(ask(time.time()), Objective(), live)
    assert str(decision.plan) == "small:0-30@d1"
    expected = 0.03 + 700 / 20e3 + 30 * PROFILES["phone"]["small"].step_s(N)  # dispatch, compute
    assert decision.prediction.wall_latency_s == pytest.approx(expected, rel=0.01)


def test_a_fast_link_and_an_idle_cloud_pull_the_steps_up():
    live = links(0.001, 100e6, ALL)
    decision = planner(FAST_CLOUD).decide(ask(time.time()), Objective(), live)
    assert str(decision.plan) == "large:0-30@cloud"
    shipped = planner().decide(ask(time.time()), Objective(), live)  # the T4 is faster: the edge
    assert "d1" not in {s.host for s in shipped.plan.stages}


def test_a_long_cloud_queue_pushes_the_steps_down():
    live = links(0.001, 100e6, ALL)
    now = time.time()
    floor = Objective(floor=QualityFloor(min_class_accuracy=0.94))
    idle = planner(FAST_CLOUD).decide(ask(now), floor, live)
    assert idle.plan.stages[0].host == "cloud"
    for k in range(20):  # 20 other requests' stages of 50 ms each, queued in the cloud
        live.queues.reserve("cloud", (f"other{k}", 0), now, 0.05, now + 60)
    busy = planner(FAST_CLOUD).decide(ask(now), floor, live)
    assert "cloud" not in {s.host for s in busy.plan.stages}
    assert busy.prediction.class_accuracy >= 0.94
    assert busy.prediction.wall_latency_s < idle.prediction.wall_latency_s + 20 * 0.05


def test_the_quality_floor_is_kept_and_routing_stays_on_one_host():
    live = links(0.001, 100e6, ALL)
    p = planner()
    strict = p.decide(ask(time.time()), Objective(floor=QualityFloor(max_fid=1.40)), live)
    assert strict.prediction.fid <= 1.40
    routed = p.decide(ask(time.time()), Objective(floor=QualityFloor(0.95), single_host=True), live)
    assert str(routed.plan) == "large:0-30@cloud"


def test_quality_under_a_deadline_and_the_fastest_when_none_meets_it():
    live = links(0.001, 100e6, ALL)
    p = planner()
    now = time.time()
    roomy = p.decide(ask(now, deadline_s=10.0), Objective(kind="quality"), live)
    assert roomy.prediction.fid == min(r["fid"] for r in read_table("dpm", 30))
    fastest = p.decide(ask(now), Objective(), live)
    tight = p.decide(ask(now, deadline_s=1e-4), Objective(kind="quality"), live)
    assert tight.plan == fastest.plan and "deadline" in tight.note


def test_the_energy_objective_spares_the_device():
    live = links(0.005, 10e6, ALL)
    p = planner()
    now = time.time()
    lean = p.decide(ask(now, deadline_s=5.0), Objective(kind="energy", floor=QualityFloor(0.9)), live)
    device_only = p.predict(parse_plan("small:0-30@d1"), None, ask(now), live)
    assert "d1" not in {s.host for s in lean.plan.stages}
    assert lean.prediction.device_energy_j < device_only.device_energy_j


def test_infeasible_floors_and_dead_hosts_are_refused_with_the_reason():
    live = links(0.001, 100e6, ALL)
    p = planner()
    with pytest.raises(ValueError, match="infeasible: no plan of the quality table meets the floor"):
        p.decide(ask(time.time()), Objective(floor=QualityFloor(min_class_accuracy=0.99)), live)
    with pytest.raises(ValueError, match="cloud: link down"):
        p.decide(ask(time.time()), Objective(floor=QualityFloor(min_class_accuracy=0.95)), live,
                 unavailable={"cloud": "link down"})


def test_an_unobserved_path_is_composed_through_the_coordinator():
    live = links(0.01, 100e6, [("cloud", "edge"), ("edge", "d1"), ("d1", "edge"), ("edge", "cloud")])
    p = planner()
    now = time.time()
    prediction = p.predict(parse_plan("large:0-30@cloud"), None, ask(now), live)
    assert prediction.assumed == ()
    result_s = 2 * (0.01 + 1100 * N / 100e6)  # cloud -> edge -> d1
    dispatch_s = 0.01 + 700 / 100e6
    compute_s = 30 * PROFILES["datacenter_gpu"]["large"].step_s(N)
    assert prediction.wall_latency_s == pytest.approx(dispatch_s + compute_s + result_s, rel=1e-3)


def test_under_load_a_device_s_own_compute_spares_the_busy_servers():
    live = links(0.001, 100e6, ALL)
    now = time.time()
    floor = Objective(floor=QualityFloor(min_class_accuracy=0.946, max_fid=1.53))
    idle = planner().decide(ask(now), floor, live)
    assert str(idle.plan) == "medium:0-30@edge"  # nothing queued: the fastest alone
    for server in ("cloud", "edge"):  # a burst: both servers have work queued
        for k in range(6):
            live.queues.reserve(server, (f"{server}{k}", 0), now, 0.05, now + 60)
    busy = planner().decide(ask(now), floor, live)
    assert "d1" in {s.host for s in busy.plan.stages}, busy.plan  # the device takes some steps
    routed = planner().decide(ask(now), Objective(floor=floor.floor, single_host=True), live)
    assert len(routed.plan.stages) == 1


def test_a_warm_up_request_explores_the_paths_not_yet_observed():
    live = links(0.001, 100e6, [("d1", "edge"), ("edge", "d1")])  # only the device's own link
    p = planner()
    explored = p.decide(ask(time.time()), Objective(), live, explore=True)
    assert p.unobserved(explored.plan, "d1", live) == max(
        p.unobserved(plan, "d1", live) for plan, _ in p.candidates("d1", Objective()))
    assert "cloud" in {s.host for s in explored.plan.stages} and "warm-up" in explored.note


def test_the_planner_benchmark_times_real_decisions():
    from nodes.planning.planner_bench import decision_times

    r = decision_times(devices=8, decisions=20)
    assert r["decisions"] == 20 and r["candidates"] == 17 and 0 < r["p50_s"] <= r["max_s"]
    assert all("@" not in p for p in r["plans"])
