"""`edgestage bench memory`: what node processes cost in memory, started one by one or forked
from the launcher (nodes/launcher.py).

The default scenario's cluster, on loopback (no root needed): DEVICES devices holding `small`, an
edge server holding `medium` (and the coordinator), a cloud holding `large`.  Every device sends
one request of 8 images (DPM, 30 steps) per strategy, so every model has run.  Then, with every
node still alive, /proc/PID/smaps_rollup of each process gives
    RSS  every resident page it maps, pages shared with other processes counted in full
    PSS  its proportional share: a shared page counts 1/N in each of the N processes mapping it,
         so the PSS of all processes adds up to the memory they take from the machine
    USS  the pages only it holds: what stopping it would free
In the shared mode the launcher's own PSS is part of the total.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from nodes.local_cluster import LocalCluster, loopback_configs

MODES = ("shared", "separate")
STRATEGIES = {
    "cloud_only": {"kind": "cloud_only"}, "edge_only": {"kind": "edge_only"},
    "device_only": {"kind": "device_only"},
    "fixed_split": {"kind": "fixed_split", "split": [
        {"model": "large", "tier": "cloud", "share": 0.4}, {"model": "medium", "tier": "edge", "share": 0.3},
        {"model": "small", "tier": "device", "share": 0.3}]},
}
MB = 2**20


def process_memory(pid: int) -> dict[str, int]:
    """Bytes: rss, pss, uss (private clean + dirty) from /proc/PID/smaps_rollup."""
    kb = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        name, value, *_ = line.split()
        kb[name.rstrip(":")] = int(value)
    return {"rss": kb["Rss"] * 1024, "pss": kb["Pss"] * 1024,
            "uss": (kb["Private_Clean"] + kb["Private_Dirty"]) * 1024}


def cluster_hosts(devices: int) -> dict[str, dict[str, Any]]:
    workload = [{"at_s": 0.5 * i, "n": 8, "seed": i, "strategy": s} for i, s in enumerate(STRATEGIES)]
    hosts: dict[str, dict[str, Any]] = {
        f"d{i + 1}": {"role": "device", "models": ["small"], "workload": workload} for i in range(devices)
    }
    hosts["edge"] = {"role": "edge", "models": ["medium"]}
    hosts["cloud"] = {"role": "cloud", "models": ["large"]}
    return hosts


def measure(mode: str, devices: int, steps: int = 30) -> dict[str, Any]:
    """One cluster in `mode`; its per-node memory and the total, once the workload is done."""
    if mode not in MODES:
        raise ValueError(f"mode {mode!r}: expected one of {', '.join(MODES)}")
    with tempfile.TemporaryDirectory(prefix="edgestage-membench-") as tmp:
        # a device ready after t0 sends its requests at once: timing is not what is measured here
        configs = loopback_configs(Path(tmp), cluster_hosts(devices), steps=steps, scheduler="dpm",
                                   request_timeout_s=300, strategies=STRATEGIES, t0=time.time() + 5)
        began = time.monotonic()
        cluster = LocalCluster(configs, shared_imports=(mode == "shared"))
        with cluster:
            ready_s = time.monotonic() - began
            statuses = cluster.wait_workload(timeout=600)
            nodes = {host: {"role": node.config.role, **process_memory(node.pid)}
                     for host, node in cluster.nodes.items()}
            launcher = process_memory(cluster.launcher.pid) if cluster.launcher is not None else None
    failed = sum(s["workload"]["failed"] for s in statuses.values())
    total = sum(n["pss"] for n in nodes.values()) + (launcher["pss"] if launcher else 0)
    return {"mode": mode, "devices": devices, "nodes": nodes, "launcher": launcher, "ready_s": ready_s,
            "requests_failed": failed, "total_pss": total}


def summarize(result: dict[str, Any]) -> dict[str, Any]:
    """MB figures: median and max over the node processes, and the total."""
    row: dict[str, Any] = {"mode": result["mode"], "node_processes": len(result["nodes"]),
                           "all_ready_s": round(result["ready_s"], 1)}
    for kind in ("rss", "pss", "uss"):
        values = [n[kind] / MB for n in result["nodes"].values()]
        row[f"{kind}_median_mb"] = round(statistics.median(values), 1)
        row[f"{kind}_max_mb"] = round(max(values), 1)
    row["launcher_pss_mb"] = round(result["launcher"]["pss"] / MB, 1) if result["launcher"] else None
    row["total_pss_mb"] = round(result["total_pss"] / MB, 1)
    row["requests_failed"] = result["requests_failed"]
    return row


def bench_memory(devices: int, modes: tuple[str, ...] = MODES) -> list[dict[str, Any]]:
    return [summarize(measure(mode, devices)) for mode in modes]
