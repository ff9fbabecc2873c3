"""Benchmark: the full fidelity sweep of configured vs measured link behaviour (`edgestage bench
fidelity [--impairment auto|netem|userspace] [--duration 2] [--dilation K ...] [--json]` prints it).

With `--dilation K ...`: the links the time-dilation targets name (2, 20 and 100 Mbit/s, 40, 20
and 5 ms) measured once per K in emulated time (emulation/calibration.py divides by K), one
network per K; the rows carry `time_dilation`.

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


DILATED = [{"bw_mbit": 2, "delay_ms": 40}, {"bw_mbit": 20, "delay_ms": 20},
           {"bw_mbit": 100, "delay_ms": 5}]


def sweep(impairment: str = "auto", duration: float = 2.0, dilation: float | None = None) -> list[dict]:
    """The rows of the sweep (the full one), or of the dilation links at one K."""
    links = SWEEP if dilation is None else DILATED
    devices = [{"name": f"s{i + 1}", **c} for i, c in enumerate(links)]
    spec = parse_topology({"kind": "star", "impairment": impairment, "devices": devices,
                           "seed": 11})
    with EmulatedNetwork(spec, dynamics=False, cpu_limits=False, dilation=dilation or 1.0) as net:
        return measure_links(net, duration=duration)


def summary(rows: list[dict]) -> dict[str, str]:
    out = {}
    for key in ("ok_bw", "ok_rtt", "ok_loss", "ok_jitter"):
        judged = [r[key] for r in rows if r[key] is not None]
        out[key] = f"{sum(judged)}/{len(judged)}"
    return out
