"""How long one planning decision takes (`edgestage bench planner`): the elastic strategy's
`plan_for`, as the coordinator calls it, in a cluster of a cloud, an edge server and N devices.

The cluster is the default scenario's hardware (shipped profiles) and quality table (dpm/30,
floor: class accuracy >= 0.946 and FID <= 1.53); the live estimates hold what a busy run would
have taught them: every device's path both ways (requests up, results down), the backhaul, and
`backlog` stages queued on each server.  Each decision is for another device, in turn.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

from nodes.planning.estimates import LiveEstimates
from nodes.planning.hardware import load_power, load_profiles
from nodes.planning.planner import HostFacts, Objective, Planner, QualityFloor
from nodes.planning.quality_table import read_table
from nodes.planning.request import PlanRequest
from nodes.planning.strategies import Cluster, Planned

FLOOR = QualityFloor(min_class_accuracy=0.946, max_fid=1.53)


def _host(role: str, model: str, hardware: str, radio: str | None = None) -> HostFacts:
    profiles, power = load_profiles(), load_power()
    return HostFacts(role, (model,), {model: profiles[hardware][model]}, power[hardware], radio)


def bench_cluster(devices: int, backlog: int = 8, now: float | None = None) -> Cluster:
    now = time.time() if now is None else now
    names = [f"d{i + 1}" for i in range(devices)]
    hosts = {"cloud": _host("cloud", "large", "datacenter_gpu"), "edge": _host("edge", "medium", "edge_gpu")}
    for i, d in enumerate(names):
        hosts[d] = _host("device", "small", "phone", "lte" if i % 2 else "wifi")
    planner = Planner(read_table("dpm", 30), hosts, coordinator="edge", steps=30)
    for kind, size in (("dispatch", 700), ("state", 6000), ("result", 2300)):
        planner.sizes.observe(kind, size, 2)
    live = LiveEstimates()
    for i, d in enumerate(names):
        delay = 0.005 + 0.035 * (i % 4) / 3
        live.observe_transfer(d, "edge", 300, delay + 300 / 1e6)
        live.observe_transfer("edge", d, 2300, delay + 2300 / 1e6)
    for src, dst in (("edge", "cloud"), ("cloud", "edge")):
        for size in (700, 6000):
            live.observe_transfer(src, dst, size, 0.02 + size / 12.5e6)
    for server in ("cloud", "edge"):
        for k in range(backlog):
            live.queues.reserve(server, (f"busy-{server}-{k}", 0), now, 0.01, now + 60)
    return Cluster(edge="edge", roles={h: f.role for h, f in hosts.items()},
                   models={h: f.models for h, f in hosts.items()}, steps=30, planner=planner, live=live)


def decision_times(devices: int = 64, decisions: int = 500) -> dict[str, Any]:
    """Seconds per `plan_for` of the elastic strategy: median, p95, max, and the plans chosen."""
    cluster = bench_cluster(devices)
    strategy = Planned("elastic", Objective(kind="latency", floor=FLOOR))
    times, plans = [], set()
    for k in range(decisions):
        now = time.time()
        request = PlanRequest(request_id=f"r{k}", device=f"d{k % devices + 1}", n=2, strategy="elastic",
                              wall_sent=now, wall_received=now, request_bytes=300)
        start = time.perf_counter()
        decision = strategy.plan_for(request, cluster)
        times.append(time.perf_counter() - start)
        plans.add(",".join(str(s).split("@")[0] for s in decision.plan.stages))
    times.sort()
    return {"devices": devices, "decisions": decisions, "candidates": len(cluster.planner.candidates(
        "d1", strategy.objective)), "p50_s": statistics.median(times), "p95_s": times[int(0.95 * len(times))],
        "max_s": times[-1], "plans": sorted(plans)}
