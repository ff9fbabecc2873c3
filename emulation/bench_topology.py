"""Benchmark: bring a star of N devices up and down (target: 64 devices up in <= 20 s).

    python -m emulation.bench_topology [--devices 64] [--reps 3] [--json]

Each repetition builds the whole `EmulatedNetwork` (Mininet hosts and veth links, routes, HTB on
every interface, one NFQUEUE process per host for the 10 ms device links, cgroups), checks that
the hub reaches every device, tears everything down and checks that nothing is left.  Prints the
median, min and max of the bring-up and teardown wall times.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from emulation.network import EmulatedNetwork
from topologies.spec import parse_topology


def bench(devices: int = 64, reps: int = 3) -> dict:
    spec = parse_topology({"kind": "star", "num_devices": devices,
                           "device_link": {"bw": 20, "delay": "10ms"}})
    ups, downs = [], []
    for _ in range(reps):
        t0 = time.monotonic()
        net = EmulatedNetwork(spec)
        with net:
            ups.append(time.monotonic() - t0)
            reach = net.reachability()
            missing = [d for d, n in reach["edge"].items() if n == 0]
            if missing:
                raise RuntimeError(f"hub cannot reach {missing}")
            t1 = time.monotonic()
        downs.append(time.monotonic() - t1)
        left = net.leftovers()
        if any(left.values()):
            raise RuntimeError(f"left behind: {left}")
    return {
        "devices": devices, "hosts": devices + 1, "reps": reps, "backend": net.backend,
        "up_s": {"median": statistics.median(ups), "min": min(ups), "max": max(ups)},
        "down_s": {"median": statistics.median(downs), "min": min(downs), "max": max(downs)},
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m emulation.bench_topology", description=__doc__)
    p.add_argument("--devices", type=int, default=64)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    r = bench(args.devices, args.reps)
    if args.json:
        print(json.dumps(r, indent=1))
    else:
        print(f"star with {r['devices']} devices ({r['backend']} backend), {r['reps']} reps: "
              f"up median {r['up_s']['median']:.2f} s (min {r['up_s']['min']:.2f}, "
              f"max {r['up_s']['max']:.2f}); down median {r['down_s']['median']:.2f} s "
              f"(min {r['down_s']['min']:.2f}, max {r['down_s']['max']:.2f}); nothing left")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
