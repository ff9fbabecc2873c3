"""The coordinator's core (nodes/planning/coordination.py): when a message is taken for stuck behind a
failed link (the cases measured in scenarios/bench/outage-cloud.toml, emulated seconds), and its
decisions on constructed event sequences: an outage and its end, a late result, a dead host, a
stuck dispatch."""

from nodes.planning.coordination import (
    RESCUE_MIN_S,
    CoordinatorCore,
    Delivery,
    Dispatch,
    Fail,
    Reconnect,
    Report,
    overdue,
)
from nodes.planning.hardware import StepProfile, load_power, load_profiles
from nodes.planning.planner import HostFacts, Planner
from nodes.planning.quality_table import read_table
from nodes.planning.request import PlanRequest
from nodes.planning.strategies import build_strategies, reroutes
from nodes.planning.strategy_specs import StrategySpec


def test_a_dispatch_into_a_dead_backhaul_is_overdue_once_past_its_stage():
    # large@cloud: 5 ms away, 0.05 s of compute; the dispatch went into the outage
    assert not overdue(0.07, expected_s=0.055, transfer_s=0.005, round_trip_s=0.01, floor_s=RESCUE_MIN_S)
    assert overdue(0.086, expected_s=0.055, transfer_s=0.005, round_trip_s=0.01, floor_s=RESCUE_MIN_S)


def test_a_result_that_waited_one_round_trip_on_a_quiet_connection_is_not():
    # cloud -> Wi-Fi device: 0.016 s expected, 0.047 s taken (TCP's restart after idle), round trip 0.03 s
    assert not overdue(0.047, expected_s=0.016, transfer_s=0.016, round_trip_s=0.03, floor_s=RESCUE_MIN_S)
    assert overdue(0.08, expected_s=0.016, transfer_s=0.016, round_trip_s=0.03, floor_s=RESCUE_MIN_S)


def test_a_slow_path_is_given_its_own_multiple():
    # a 1 s transfer is late only 2 s past it, however short its round trip
    assert not overdue(2.9, expected_s=1.0, transfer_s=1.0, round_trip_s=0.05, floor_s=RESCUE_MIN_S)
    assert overdue(3.0, expected_s=1.0, transfer_s=1.0, round_trip_s=0.05, floor_s=RESCUE_MIN_S)


# ---- the core on constructed event sequences: no socket, no root, its own clock --------------

PROFILES, POWER = load_profiles(), load_power()
T0 = 1_000.0  # the clock of these sequences: wall epoch seconds
N = 2
ROLES = {"edge": "edge", "cloud": "cloud", "d1": "device"}
MODELS = {"edge": ("medium",), "cloud": ("large",), "d1": ("small",)}
# a cloud faster per step than the edge, so that an idle cloud on a good backhaul is the choice
HOSTS = {"cloud": HostFacts("cloud", ("large",), {"large": StepProfile(0.4, 0.01)},
                           POWER["datacenter_gpu"]),
         "edge": HostFacts("edge", ("medium",), {"medium": PROFILES["edge_gpu"]["medium"]},
                           POWER["edge_gpu"]),
         "d1": HostFacts("device", ("small",), {"small": PROFILES["phone"]["small"]}, POWER["phone"], "wifi")}
SPECS = {"elastic": StrategySpec(kind="elastic", min_class_accuracy=0.94),
         "cloud_only": StrategySpec(kind="cloud_only")}


def core() -> CoordinatorCore:
    planner = Planner(read_table("dpm", 30), HOSTS, coordinator="edge", steps=30)
    planner.sizes.observe("dispatch", 700, N)
    planner.sizes.observe("state", 3000 * N, N)
    planner.sizes.observe("result", 1100 * N, N)
    c = CoordinatorCore("edge", ROLES, MODELS, 30, build_strategies(SPECS), planner, request_timeout_s=5.0)
    for a in ROLES:  # every path observed: 5 ms and 10 MB/s, as if messages of two sizes had crossed it
        for b in ROLES:
            if a != b:
                for size in (700, 12_000):
                    c.live.observe_transfer(a, b, size, 0.005 + size / 10e6)
    return c


def request(request_id: str, at: float, strategy: str = "elastic") -> PlanRequest:
    return PlanRequest(request_id=request_id, device="d1", n=N, strategy=strategy, wall_sent=at - 0.005,
                       wall_received=at, request_bytes=700, labels=(3, 4), seed=7)


def hosts_of(action: Dispatch) -> set[str]:
    return {stage.host for stage in action.decision.plan.stages}


def test_an_outage_re_plans_the_stuck_request_and_its_end_brings_the_cloud_back():
    c = core()
    [first] = c.on_request(request("r1", T0), T0)
    assert isinstance(first, Dispatch) and "cloud" in hosts_of(first)
    assert c.on_tick(T0 + 0.01) == []  # on its way, not late yet
    # the backhaul is down: the dispatch to the cloud never reports
    actions = c.on_tick(T0 + 1.0)
    replanned = [a for a in actions if isinstance(a, Dispatch)]
    assert len(replanned) == 1 and replanned[0].replanned and "cloud" not in hosts_of(replanned[0])
    assert replanned[0].request.request_id == "r1" and "edge->cloud" in replanned[0].note
    assert [a for a in actions if isinstance(a, Reconnect)] == [Reconnect("cloud", 1.0)]
    assert c.on_tick(T0 + 2.0) == []  # re-planned once only
    # meanwhile every plan keeps off the cloud
    [during] = c.on_request(request("r2", T0 + 1.1), T0 + 1.1)
    assert isinstance(during, Dispatch) and "cloud" not in hosts_of(during)
    # the fresh connection's handshake: the path is back, the cloud is planned again
    c.on_path_back("cloud")
    assert "cloud" not in c.avoided and not [m for m in c.live.on_way.values() if m.dst == "cloud"]
    [after] = c.on_request(request("r3", T0 + 1.7), T0 + 1.7)
    assert isinstance(after, Dispatch) and "cloud" in hosts_of(after)


def test_a_stranded_message_that_gets_through_says_nothing_of_the_path_now():
    c = core()
    c.on_request(request("r1", T0), T0)
    c.on_tick(T0 + 1.0)  # re-planned away from the cloud; not reconnected (no handshake yet)
    assert [m.dst for m in c.live.stranded.values()] == ["cloud"]
    before = dict(c.live.paths)
    # TCP retransmits the stuck dispatch: the cloud reports its stage of the abandoned plan
    c.on_report(Report("cloud", "r1", N, stage=0, model="large", steps=30, compute_start=T0 + 2.2,
                       compute_end=T0 + 2.3, delivery=Delivery("edge", "dispatch", T0, T0 + 2.2, 700)),
                T0 + 2.3)
    assert c.live.stranded == {} and c.live.paths == before  # not taken for the path's speed
    assert "cloud" not in c.avoided  # but a report came from there: its path is back


def test_a_late_result_of_the_first_plan_ends_its_stranded_messages():
    c = core()
    [first] = c.on_request(request("r1", T0), T0)
    index = [s.host for s in first.decision.plan.stages].index("cloud")
    c.on_report(Report("cloud", "r1", N, stage=index, model="large", steps=1, compute_start=T0 + 0.01,
                       compute_end=T0 + 0.02), T0 + 0.02)
    # what the cloud sent on never arrives: re-planned around the cloud
    [replanned] = c.on_tick(T0 + 1.0)
    assert replanned.replanned and "cloud" in c.avoided
    assert [(m.src, m.key[1]) for m in c.live.stranded.values()] == [("cloud", index + 1)]
    # the device had the first plan's result after all: what the cloud sent got through
    c.on_report(Report("d1", "r1", N, late=True), T0 + 2.5)
    assert c.live.stranded == {} and "cloud" not in c.avoided


def test_a_result_one_round_trip_late_is_not_a_failure():
    c = core()
    [first] = c.on_request(request("r1", T0), T0)
    stages = first.decision.plan.stages
    last = len(stages) - 1
    c.on_report(Report(stages[last].host, "r1", N, stage=last, model=stages[last].model, steps=1,
                       compute_start=T0 + 0.1, compute_end=T0 + 0.11), T0 + 0.11)
    assert stages[last].host != "d1"  # the result is on its way to the device: 5 ms expected
    assert c.on_tick(T0 + 0.11 + 0.005 + 0.010) == []  # a round trip late (an idle TCP window)
    assert c.on_tick(T0 + 0.11 + 0.03) == []  # and the floor of 30 ms emulated
    [replanned] = c.on_tick(T0 + 0.11 + 0.036)
    assert replanned.replanned and "->d1" in replanned.note


def test_a_fixed_plan_is_never_re_planned():
    c = core()
    [first] = c.on_request(request("r1", T0, "cloud_only"), T0)
    assert hosts_of(first) == {"cloud"}
    assert c.on_tick(T0 + 3.0) == []


def test_a_dead_host_fails_its_requests_at_once_and_is_planned_again_when_back():
    c = core()
    c.on_request(request("r1", T0, "cloud_only"), T0)
    failed = c.on_connection_lost("cloud", "host cloud is down", T0 + 0.1)
    assert [(f.request.request_id, f.counter) for f in failed] == [("r1", "requests_failed_host_down")]
    [refused] = c.on_request(request("r2", T0 + 0.2, "cloud_only"), T0 + 0.2)
    assert isinstance(refused, Fail) and refused.reason == "host cloud is down"
    [elastic] = c.on_request(request("r3", T0 + 0.2), T0 + 0.2)
    assert isinstance(elastic, Dispatch) and "cloud" not in hosts_of(elastic)
    c.on_connection_back("cloud")
    [back] = c.on_request(request("r4", T0 + 0.3, "cloud_only"), T0 + 0.3)
    assert isinstance(back, Dispatch)


def test_an_unknown_strategy_and_a_failed_dispatch_fail_with_a_reason():
    c = core()
    [unknown] = c.on_request(request("r1", T0, "nope"), T0)
    assert isinstance(unknown, Fail) and "unknown strategy 'nope'" in unknown.reason
    [sent] = c.on_request(request("r2", T0), T0)
    [failed] = c.on_dispatch_failed(sent, "dispatch to cloud failed: full")
    assert failed.counter == "requests_dispatch_failed" and "r2" not in c.in_flight
    assert not [k for k in c.live.on_way if k[0] == "r2"]


def cascade_core() -> CoordinatorCore:
    specs = {"cascade": StrategySpec(kind="cascade", threshold=0.95, escalate_model="large",
                                     escalate_tier="cloud")}
    c = core()
    c.strategies = build_strategies(specs, ("dpm", 30))
    return c


def escalation(request_id: str, at: float) -> PlanRequest:
    first = request_id.removesuffix(".esc")
    return request(request_id, at, "cascade").model_copy(update={"escalation_of": first})


def test_an_escalation_stuck_in_a_backhaul_outage_is_re_routed_and_the_next_ones_avoid_the_cloud():
    c = cascade_core()
    [first] = c.on_request(request("r1", T0, "cascade"), T0)
    assert isinstance(first, Dispatch) and hosts_of(first) == {"d1"}  # the device's own pass
    [up] = c.on_request(escalation("r1.esc", T0), T0)
    assert isinstance(up, Dispatch) and str(up.decision.plan) == "large:0-30@cloud"
    actions = c.on_tick(T0 + 1.0)  # the backhaul is down: the escalation's dispatch never reports
    [again] = [a for a in actions if isinstance(a, Dispatch)]
    assert again.replanned and str(again.decision.plan) == "medium:0-30@edge"
    assert "edge->cloud" in again.note
    [next_one] = c.on_request(escalation("r2.esc", T0 + 1.1), T0 + 1.1)
    assert isinstance(next_one, Dispatch) and str(next_one.decision.plan) == "medium:0-30@edge"
    assert "no cloud host holding large" in next_one.decision.note
    cascade = c.strategies["cascade"]
    assert reroutes(cascade, escalation("r5.esc", T0)) and not reroutes(cascade, request("r5", T0, "cascade"))
    c.on_path_back("cloud")
    [after] = c.on_request(escalation("r4.esc", T0 + 1.7), T0 + 1.7)
    assert isinstance(after, Dispatch) and str(after.decision.plan) == "large:0-30@cloud"


def test_a_dead_cloud_sends_escalations_to_the_edge_at_once():
    c = cascade_core()
    c.on_connection_lost("cloud", "connection to cloud lost", T0)
    [up] = c.on_request(escalation("r1.esc", T0 + 0.1), T0 + 0.1)
    assert isinstance(up, Dispatch) and str(up.decision.plan) == "medium:0-30@edge"
