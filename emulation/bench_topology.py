"""Benchmark: bring a star of N devices up, check it, and bring it down (`edgestage bench topology
[--devices 64] [--reps 3] [--all-pairs] [--json]` prints it).

Each repetition builds the whole `EmulatedNetwork` (Mininet hosts and veth links, routes, HTB on
every interface, one NFQUEUE process per host for the 10 ms device links, cgroups), checks that
the hub reaches every device (ICMP echo from one prober in the hub; `--all-pairs` checks every
pair instead, for small networks), tears everything down and checks that nothing is left.
`bench()` returns the median, min and max of the bring-up, reachability and teardown wall times, and
whether bring-up plus reachability met the target: 20 s up to 256 devices, 60 s up to 1,024
(issue 17), on the 2-core development machines.
"""

from __future__ import annotations

import statistics
import time

from emulation.network import EmulatedNetwork
from topologies.spec import parse_topology

# bring-up plus reachability check, by the largest star it holds for
TARGETS_S = {256: 20.0, 1024: 60.0}


def target_s(devices: int) -> float:
    """The target for a star of this many devices (ValueError past the largest one)."""
    for most, target in sorted(TARGETS_S.items()):
        if devices <= most:
            return target
    raise ValueError(f"no bring-up target for {devices} devices (at most {max(TARGETS_S)})")


def bench(devices: int = 64, reps: int = 3, all_pairs: bool = False) -> dict:
    spec = parse_topology({"kind": "star", "num_devices": devices,
                           "device_link": {"bw_mbit": 20, "delay_ms": 10}})
    times: dict[str, list[float]] = {"up_s": [], "reach_s": [], "down_s": []}
    for _ in range(reps):
        up, reach, down, backend = _one(spec, all_pairs)
        times["up_s"].append(up)
        times["reach_s"].append(reach)
        times["down_s"].append(down)
    ready = [u + r for u, r in zip(times["up_s"], times["reach_s"], strict=True)]
    out = {"devices": devices, "hosts": devices + 1, "reps": reps, "backend": backend,
           "reachability": "all pairs" if all_pairs else "hub to every host"}
    for key, values in {**times, "up_and_reach_s": ready}.items():
        out[key] = {"median": statistics.median(values), "min": min(values), "max": max(values)}
    out["target_s"] = target_s(devices)
    out["met"] = out["up_and_reach_s"]["median"] <= out["target_s"]
    return out


def _one(spec: object, all_pairs: bool) -> tuple[float, float, float, str]:
    """One bring-up, check and teardown: (up, reach, down) seconds and the backend."""
    t0 = time.monotonic()
    net = EmulatedNetwork(spec)
    with net:
        t1 = time.monotonic()
        reach = net.reachability("all" if all_pairs else "hub")
        missing = sorted({f"{s}->{d}" for s, row in reach.items() for d, n in row.items() if n == 0})
        if missing:
            raise RuntimeError(f"unreachable: {', '.join(missing[:20])}"
                               + (f" and {len(missing) - 20} more" if len(missing) > 20 else ""))
        t2 = time.monotonic()
    t3 = time.monotonic()
    left = net.leftovers()
    if any(left.values()):
        raise RuntimeError(f"left behind: {left}")
    return t1 - t0, t2 - t1, t3 - t2, net.backend
