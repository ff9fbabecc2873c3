"""Benchmark: the full fidelity sweep of configured vs measured link behaviour (`edgestage bench
fidelity [--impairment auto|netem|userspace] [--duration 2] [--json]` prints it).

One star whose device links span the targets' ranges — bandwidth 1-100 Mbit/s, RTT 2-200 ms,
loss 0.5-10 %, jitter 1-10 ms — each measured in both directions exactly as
`edgestage calibrate` does (iperf3 TCP goodput, UDP echo with user-space timestamps), then the
rows and a count of them inside each target.
"""

from __future__ import annotations

from emulation.calibration import measure_links
from emulation.network import EmulatedNetwork
from topologies.spec import parse_topology

SWEEP = (
    [{"bw_mbit": bw, "delay_ms": 5} for bw in (1, 5, 10, 20, 50, 100)]
    + [{"bw_mbit": 10, "delay_ms": d} for d in (1, 2.5, 10, 25, 50, 100)]
    + [{"bw_mbit": 10, "delay_ms": 5, "loss_pct": p} for p in (0.5, 1, 2, 5, 10)]
    + [{"bw_mbit": 10, "delay_ms": 50, "jitter_ms": j} for j in (1, 2, 5, 10)]
)


def sweep(impairment: str = "auto", duration: float = 2.0) -> list[dict]:
    devices = [{"name": f"s{i + 1}", **c} for i, c in enumerate(SWEEP)]
    spec = parse_topology({"kind": "star", "impairment": impairment, "devices": devices,
                           "seed": 11})
    with EmulatedNetwork(spec, dynamics=False, cpu_limits=False) as net:
        return measure_links(net, duration=duration)


def summary(rows: list[dict]) -> dict[str, str]:
    out = {}
    for key in ("ok_bw", "ok_rtt", "ok_loss", "ok_jitter"):
        judged = [r[key] for r in rows if r[key] is not None]
        out[key] = f"{sum(judged)}/{len(judged)}"
    return out
