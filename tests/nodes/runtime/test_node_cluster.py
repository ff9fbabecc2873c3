"""Real node processes on loopback: a device with a workload under every strategy (and a cascade,
whose doubted images go to the cloud, and plugins: the bandit of examples/strategies and a faulty
one, loaded by the coordinator's own process), an edge server
(worker + coordinator, profiled at a slow test profile), a cloud (profiled as a datacenter GPU,
which this CPU cannot keep up with, so its overruns must show), and a probe device played by the
test. One cluster for the module (starting node processes is the slow part); the last test stops
it with SIGTERM."""

import math
import os
import random
import socket
import time
from pathlib import Path

import pytest
import torch
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nodes.diffusion.executor import initial_state
from nodes.diffusion.gate import gate_confidence
from nodes.diffusion.generation import generate
from nodes.diffusion.model_zoo import SampleShape, denoiser_config
from nodes.diffusion.samples import load_samples
from nodes.planning.plan import parse_plan
from nodes.runtime.device import escalation_seed
from nodes.runtime.local_cluster import LocalCluster, Probe, loopback_configs
from nodes.runtime.protocol import WIRE_VERSION, Hop, RequestTimes, StageMsg, encode, plan_to_wire
from nodes.runtime.records import read_records

ROOT = Path(__file__).resolve().parents[3]
SHAPE = SampleShape.of(denoiser_config("small"))  # every shipped denoiser draws this

STEPS = 10
N = 4
STRATEGIES = ("cloud_only", "edge_only", "device_only", "fixed_split")
EDGE_STEP_S = 0.02  # the test profile of the edge: 20 ms per step whatever the batch
CASCADE_THRESHOLD = 0.95  # the gate's confidences of these seeds' images are far from it either way
# plugins (nodes/planning/plugins.py): the example bandit, over two plans, and one whose plan names a
# host that does not exist, with a fallback and without
PLUGINS = ("bandit", "bandit", "broken", "broken_alone")
BROKEN = ("from nodes.planning.plan import Plan, Stage\nfrom nodes.planning.planner import Decision\n\n\n"
          "class Broken:\n    def __init__(self, name, options):\n        self.name = name\n\n"
          "    def plan_for(self, request, view):\n"
          "        return Decision(Plan((Stage('small', 0, view.steps, 'moon'),)))\n")
SPLIT = [{"model": "small", "tier": "cloud", "share": 0.4}, {"model": "small", "tier": "edge", "share": 0.3},
         {"model": "small", "tier": "device", "share": 0.3}]


def _workload() -> list[dict]:
    requests = []
    for index in range(3 * len(STRATEGIES)):
        strategy = STRATEGIES[index % len(STRATEGIES)]
        requests.append({"at_s": 0.25 * index, "n": N, "seed": 100 + index, "strategy": strategy})
    requests[0]["deadline_s"] = 600.0
    requests[1]["deadline_s"] = 1e-6
    requests.append({"at_s": 0.1, "n": 2, "labels": [7, 7], "seed": 1, "strategy": "nope",
                     "request_id": "bad-1"})
    requests += [{"at_s": 0.3 + 0.5 * i, "n": N, "seed": 200 + i, "strategy": "cascade",
                  "request_id": f"casc-{i}"} for i in range(3)]
    requests += [{"at_s": 0.4 + 0.5 * i, "n": N, "seed": 300 + i, "strategy": strategy,
                  "request_id": f"plug-{i}"} for i, strategy in enumerate(PLUGINS)]
    return requests


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run")
    profiles = run_dir / "profiles.toml"
    entry = f"small = {{ step_ms = {EDGE_STEP_S * 1000}, per_image_ms = 0 }}"
    profiles.write_text(f"[hardware.slowboard.models]\n{entry}\n")
    hosts = {
        "d1": {"role": "device", "models": ["small"], "workload": _workload()},
        "probe": {"role": "device"},
        "edge": {"role": "edge", "models": ["small"],
                 "compute": {"mode": "profiled", "hardware": "slowboard", "profiles_file": str(profiles)}},
        "cloud": {"role": "cloud", "models": ["small"],
                  "compute": {"mode": "profiled", "hardware": "datacenter_gpu"}},
    }
    strategies = {"cloud_only": {"kind": "cloud_only", "model": "small"},
                  "edge_only": {"kind": "edge_only", "model": "small"},
                  "device_only": {"kind": "device_only"},
                  "fixed_split": {"kind": "fixed_split", "split": SPLIT},
                  "cascade": {"kind": "cascade", "threshold": CASCADE_THRESHOLD, "escalate_model": "small",
                              "escalate_tier": "cloud"}}
    (run_dir / "broken.py").write_text(BROKEN)
    bandit = {"plans": ["small:0-10@edge", "small:0-10@device"], "seed": 0}
    broken = f"{run_dir}/broken.py:Broken"
    strategies |= {
        "bandit": {"kind": "plugin", "plugin": f"{ROOT}/examples/strategies/bandit.py:EpsilonGreedy",
                   "options": bandit},
        "broken": {"kind": "plugin", "plugin": broken, "fallback": "edge_only"},
        "broken_alone": {"kind": "plugin", "plugin": broken}}
    configs = loopback_configs(run_dir, hosts, steps=STEPS, scheduler="dpm", request_timeout_s=60,
                               strategies=strategies)
    configs.pop("probe")  # played by the test itself
    local = LocalCluster(configs)
    with local:
        local.endpoints = {h: c.bind for h, c in configs.items()}
        local.probe_endpoint = configs["d1"].peers["probe"].endpoint
        local.wait_workload(timeout=240)
        yield local


def _by_request(cluster) -> dict[str, list]:
    rows = read_records(cluster.nodes["d1"].config.run_dir / "records" / "d1.jsonl")
    by_request: dict[str, list] = {}
    for row in rows:
        by_request.setdefault(row.request_id, []).append(row)
    return by_request


@pytest.fixture(scope="module")
def all_records(cluster):
    return _by_request(cluster)


@pytest.fixture(scope="module")
def records(all_records):
    """Every request but the cascade's and the plugins' (their own tests below)."""
    return {rid: rows for rid, rows in all_records.items() if rows[0].strategy not in ("cascade", *PLUGINS)}


def test_every_request_under_every_strategy_completes_with_a_row_per_stage(records):
    ok = {rid: rows for rid, rows in records.items() if rows[0].outcome == "ok"}
    assert len(ok) == 12 and {rows[0].strategy for rows in ok.values()} == set(STRATEGIES)
    for rows in ok.values():
        plan = parse_plan(rows[0].plan, STEPS)
        assert [(r.stage_index, r.host, r.model, r.start_step, r.end_step) for r in rows] == [
            (i, s.host, s.model, s.start, s.end) for i, s in enumerate(plan.stages)
        ]
    plans = {rows[0].strategy: rows[0].plan for rows in ok.values()}
    assert plans == {"cloud_only": "small:0-10@cloud", "edge_only": "small:0-10@edge",
                     "device_only": "small:0-10@d1",
                     "fixed_split": "small:0-4@cloud,small:4-7@edge,small:7-10@d1"}


def test_every_plan_comes_with_the_coordinator_s_prediction(records):
    """Fixed strategies are predicted too (nodes/planning/planner.py); on loopback the profiled edge's
    10 steps of 20 ms dominate edge_only, so its prediction is close to what happened."""
    ok = [rows[0] for rows in records.values() if rows[0].outcome == "ok"]
    assert all(r.predicted_total_s is not None and r.predicted_total_s >= 0 for r in ok)
    edge = [r for r in ok if r.strategy == "edge_only"]
    assert all(r.predicted_total_s >= STEPS * EDGE_STEP_S for r in edge)
    assert all(abs(r.predicted_total_s - r.wall_total_s) < 0.15 for r in edge), [
        (r.predicted_total_s, r.wall_total_s) for r in edge]
    assert all(r.predicted_fid is not None for r in edge)  # small:0-10 is in the table


def test_latency_parts_add_up_to_the_total(all_records):
    for rows in all_records.values():
        if rows[0].outcome != "ok":
            continue
        parts = sum(r.wall_uplink_s + r.wall_planning_s + r.wall_transfer_s + r.wall_queueing_s
                    + r.wall_compute_s + r.wall_handoff_s + r.wall_result_transfer_s for r in rows)
        total = rows[0].wall_total_s
        assert math.isclose(parts, total, rel_tol=1e-9, abs_tol=1e-9)
        assert total == pytest.approx(rows[-1].wall_t_result_received - rows[0].wall_t_request_sent)
        for r in rows:
            assert min(r.wall_transfer_s, r.wall_queueing_s, r.wall_compute_s, r.wall_handoff_s,
                       r.wall_result_transfer_s) >= 0
            assert (r.wall_t_request_sent <= r.wall_t_received <= r.wall_t_compute_start
                    <= r.wall_t_compute_end <= r.wall_t_sent)


def test_bytes_on_each_hop_are_the_state_that_crossed(records):
    sample = N * 16 * 16 * 4
    for rows in records.values():
        if rows[0].outcome != "ok":
            continue
        assert rows[0].payload_bytes == 0  # stage 0 draws its noise from the seed
        for r in rows[1:]:  # sample + labels + DPM's two history tensors
            assert r.payload_bytes == 3 * sample + N * 8 < r.message_bytes
        assert rows[-1].result_payload_bytes == sample + N * 8 < rows[-1].result_message_bytes


def test_deadlines_and_an_unknown_strategy(records):
    assert records["d1-0000"][0].deadline_met is True
    assert records["d1-0001"][0].deadline_met is False
    (bad,) = records["bad-1"]
    assert bad.outcome == "failed" and bad.plan is None and bad.stage_index is None
    assert "edge: no plan: unknown strategy 'nope'" in bad.reason


def test_profiled_hosts_are_paced_and_overruns_are_reported(records):
    rows = [r for rs in records.values() if rs[0].outcome == "ok" for r in rs]
    edge = [r for r in rows if r.host == "edge"]
    cloud = [r for r in rows if r.host == "cloud"]
    assert edge and cloud
    for r in edge:
        steps = r.end_step - r.start_step
        assert r.wall_profiled_compute_s == pytest.approx(steps * EDGE_STEP_S)
        assert r.wall_compute_s >= r.wall_profiled_compute_s - 1e-3 and r.compute_mode == "profiled"
        assert r.wall_real_compute_s <= r.wall_compute_s + 1e-3
    for r in cloud:  # 0.8 ms per step: no CPU here manages that, and the record says so
        assert r.hardware == "datacenter_gpu" and r.overrun_steps == r.end_step - r.start_step
        assert r.wall_compute_s >= r.wall_profiled_compute_s + r.wall_overrun_s - 1e-3
    device = [r for r in rows if r.host == "d1"]
    assert all(r.compute_mode == "native" and r.wall_profiled_compute_s is None for r in device)


def test_images_over_the_network_equal_the_local_unsplit_run(records, cluster):
    run_dir = cluster.nodes["d1"].config.run_dir
    for request_id, rows in records.items():
        if rows[0].outcome != "ok":
            continue
        samples = load_samples(run_dir / "samples" / f"{request_id}.npz")
        assert samples.images.shape == (N, 1, 16, 16) and str(samples.plan) == rows[0].plan
        local = generate(parse_plan("small:0-10"), samples.labels, samples.seed, samples.scheduler)
        assert (samples.images - local).abs().max().item() <= 1e-5

def test_a_cascade_escalates_exactly_what_the_gate_doubts_and_delivers_the_escalation(all_records, cluster):
    """The device's gate decides as the gate does locally on the same images; the doubted images
    come back from the cloud as the local run of their labels and the escalation's seed; the
    request's rows are its first pass on the device, then its escalation in the cloud."""
    run_dir = cluster.nodes["d1"].config.run_dir
    cascades = {rid: rows for rid, rows in all_records.items() if rows[0].strategy == "cascade"}
    assert sorted(cascades) == ["casc-0", "casc-1", "casc-2"]
    escalated = 0
    for request_id, rows in cascades.items():
        assert all(r.outcome == "ok" and r.cascade == f"small>small@{CASCADE_THRESHOLD:g}" for r in rows)
        first = load_samples(run_dir / "samples" / f"{request_id}.npz")
        confidence = gate_confidence(first.images, first.labels)
        doubted = [i for i, c in enumerate(confidence) if c < CASCADE_THRESHOLD]
        assert rows[0].escalated_images == len(doubted)
        assert rows[0].escalated_indices == (",".join(map(str, doubted)) or None)
        if not doubted:
            assert [r.host for r in rows] == ["d1"]
            continue
        escalated += len(doubted)
        assert [(r.stage_index, r.host, r.plan) for r in rows] == [(0, "d1", "small:0-10@d1"),
                                                                   (1, "cloud", "small:0-10@cloud")]
        again = load_samples(run_dir / "samples" / f"{request_id}.esc.npz")
        assert again.labels.tolist() == [first.labels[i] for i in doubted]
        assert again.seed == escalation_seed(first.seed)
        local = generate(parse_plan("small:0-10"), again.labels, again.seed, "dpm")
        assert (again.images - local).abs().max().item() <= 1e-5
        assert rows[1].payload_bytes == 0  # the escalation's first stage draws its own noise
        escalation_s = rows[1].wall_t_result_received - rows[1].wall_t_coordinator_received
        assert rows[0].wall_total_s == rows[1].wall_total_s > escalation_s
        assert rows[1].predicted_total_s is None  # the first pass's prediction does not cover it
    assert escalated > 0  # these seeds' images have confidences below the threshold (0.78, 0.94, 0.01)


def test_plugins_plan_in_the_coordinator_s_process_and_their_faults_are_their_own(all_records):
    """The edge node imported each plugin from the reference in its config and built it; the bandit
    tried its two plans in turn; the faulty plugin's request went to its fallback, or failed with a
    reason naming it, and the run went on."""
    first, second, fallen, failed = (all_records[f"plug-{i}"] for i in range(4))
    assert [rows[0].outcome for rows in (first, second, fallen)] == ["ok"] * 3
    assert (first[0].plan, second[0].plan) == ("small:0-10@edge", "small:0-10@d1")
    assert first[0].plan_note == "bandit: small:0-10@edge (first try)"
    assert fallen[0].plan == "small:0-10@edge" and fallen[0].plan_note.startswith(
        "fallback edge_only: plugin broken (broken.py:Broken): invalid plan: plan stage small:0-10@moon")
    (row,) = failed
    assert row.outcome == "failed"
    assert "edge: no plan: plugin broken_alone (broken.py:Broken): invalid plan" in row.reason, row.reason


def wire(text: str) -> list:
    """A plan as it crosses the wire."""
    return plan_to_wire(parse_plan(text))



def _stage_message(**change) -> list:
    fields = {"v": WIRE_VERSION, "kind": "stage", "request_id": "fz-1", "origin": "d1", "strategy": "s",
              "plan": wire("small:0-4@cloud,small:4-10@edge"), "stage": 1, "start": 4, "end": 10, "n": N,
              "labels": [0, 1, 2, 3], "seed": 5,
              "timestamps": RequestTimes(request_sent=1.7e9, coordinator_received=1.7e9, dispatched=1.7e9),
              "hops": [Hop(stage=0, host="cloud", model="small", received=1.7e9, compute_start=1.7e9,
                           compute_end=1.7e9, sent=1.7e9, payload_bytes=0, message_bytes=1,
                           real_compute_s=0.0)]}
    return encode(StageMsg(**{**fields, **change}))


def test_fuzzed_frames_do_not_stop_a_node_from_serving(cluster):
    context = zmq.Context()
    pushers = {}
    for host in ("edge", "cloud"):
        pushers[host] = context.socket(zmq.PUSH)
        pushers[host].setsockopt(zmq.LINGER, 1000)
        pushers[host].connect(cluster.endpoints[host])
    state = initial_state(torch.tensor([0, 1, 2, 3]), 5, "dpm", STEPS, SHAPE)
    good_state = state.to_frames()
    sent = valid = 0

    @settings(max_examples=1500, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(st.lists(st.binary(max_size=200), min_size=1, max_size=5), st.sampled_from(["edge", "cloud"]))
    def junk(frames, host):
        nonlocal sent
        pushers[host].send_multipart(frames)
        sent += 1

    @settings(max_examples=600, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(st.integers(0, 6), st.binary(max_size=64), st.integers(-3, 3), st.sampled_from(["edge", "cloud"]))
    def plausible(which, junk_bytes, delta, host):
        nonlocal sent, valid
        frames = [*_stage_message(), *good_state]
        if which == 0:  # a tensor frame of the wrong size
            frames[2] = bytes(frames[2])[: max(0, len(frames[2]) + delta - 4)]
        elif which == 1:  # a state header that is not JSON
            frames[1] = junk_bytes
        elif which == 2:  # a frame missing or one too many
            frames = frames[:-1] if delta < 0 else [*frames, junk_bytes]
        elif which == 3:  # a step range that is not the plan's
            frames = [*_stage_message(start=4 + abs(delta) + 1, end=10), *good_state]
        elif which == 4:  # a stage this host does not run
            frames = [*_stage_message(plan=wire("small:0-4@edge,small:4-10@cloud")), *good_state]
        elif which == 5:  # an origin nobody knows
            frames = [*_stage_message(origin="mallory"), *good_state]
        else:  # labels that disagree with the state
            frames = [*_stage_message(labels=[9, 9, 9, 9]), *good_state]
        pushers[host].send_multipart(frames)
        sent += 1
        valid += which == 4 and host == "cloud"  # a real stage: cloud runs it, d1 drops the result

    try:
        junk()
        plausible()
        for _ in range(20):  # not even ZeroMQ: raw bytes on the TCP port
            port = int(cluster.endpoints[random.choice(["edge", "cloud"])].rsplit(":", 1)[1])
            with socket.create_connection(("127.0.0.1", port), timeout=2) as raw:
                raw.sendall(os.urandom(random.randint(1, 2000)))
    finally:
        for pusher in pushers.values():
            pusher.close()
        context.term()
    assert sent >= 2000
    # every fuzzed message that was not a valid stage was refused and counted
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        statuses = [cluster.nodes[h].status() for h in ("edge", "cloud")]
        if all(statuses) and sum(s["dropped"] for s in statuses) >= sent - valid:
            break
        time.sleep(0.5)
    assert sum(s["dropped"] for s in statuses) >= sent - valid
    # and both keep serving real requests
    probe = Probe("probe", cluster.probe_endpoint, cluster.endpoints["edge"])
    try:
        for strategy in ("edge_only", "cloud_only"):
            reply, _ = probe.request(f"after-fuzz-{strategy}", strategy, [1, 2, 3, 4], seed=9, timeout=60)
            assert reply.envelope.kind == "result", getattr(reply.envelope, "reason", "")
            local = generate(parse_plan("small:0-10"), [1, 2, 3, 4], 9, "dpm")
            assert (reply.state.tensors["sample"].clamp(-1, 1) - local).abs().max().item() <= 1e-5
    finally:
        probe.close()


def test_sigterm_stops_every_node_cleanly(cluster):
    pids = {host: node.pid for host, node in cluster.nodes.items()}
    codes = cluster.stop()
    assert codes == dict.fromkeys(pids, 0)
    for host, pid in pids.items():
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)  # reaped: no such process any more
        assert cluster.nodes[host].status()["state"] == "stopped"
