"""`edgestage bench memory`: what node processes cost in memory, started one by one or forked
from the launcher (nodes/runtime/launcher.py).

The default scenario's cluster, on loopback (no root needed): DEVICES devices holding `small`, an
edge server holding `medium` (and the coordinator), a cloud holding `large`.  Every device sends
one request of 8 images (DPM, 30 steps) per strategy, so every model has run.  Then, with every
node still alive, RSS, PSS and USS of each process (nodes/runtime/memory.py).  In the shared mode the
launcher's own PSS is part of the total.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from nodes.clock import Clock
from nodes.runtime.local_cluster import LocalCluster, loopback_configs
from nodes.runtime.memory import nodes_memory

MODES = ("shared", "separate")
STRATEGIES = {
    "cloud_only": {"kind": "cloud_only"}, "edge_only": {"kind": "edge_only"},
    "device_only": {"kind": "device_only"},
    "fixed_split": {"kind": "fixed_split", "split": [
        {"model": "large", "tier": "cloud", "share": 0.4}, {"model": "medium", "tier": "edge", "share": 0.3},
        {"model": "small", "tier": "device", "share": 0.3}]},
}


def cluster_hosts(devices: int) -> dict[str, dict[str, Any]]:
    workload = [{"at_s": 0.5 * i, "n": 8, "seed": i, "strategy": s} for i, s in enumerate(STRATEGIES)]
    hosts: dict[str, dict[str, Any]] = {
        f"d{i + 1}": {"role": "device", "models": ["small"], "workload": workload} for i in range(devices)
    }
    hosts["edge"] = {"role": "edge", "models": ["medium"]}
    hosts["cloud"] = {"role": "cloud", "models": ["large"]}
    return hosts


def measure(mode: str, devices: int, steps: int = 30) -> dict[str, Any]:
    """One cluster in `mode`: its nodes' memory (MB: median and max over nodes, the total PSS with
    the launcher's), once the workload is done."""
    if mode not in MODES:
        raise ValueError(f"mode {mode!r}: expected one of {', '.join(MODES)}")
    with tempfile.TemporaryDirectory(prefix="edgestage-membench-") as tmp:
        # a device ready after its first request is due sends at once: timing is not what is measured here
        configs = loopback_configs(Path(tmp), cluster_hosts(devices), steps=steps, scheduler="dpm",
                                   request_timeout_s=300, strategies=STRATEGIES,
                                   clock=Clock(wall_origin=time.time() + 5))
        began = time.monotonic()
        cluster = LocalCluster(configs, shared_imports=(mode == "shared"))
        with cluster:
            ready_s = time.monotonic() - began
            statuses = cluster.wait_workload(timeout=600)
            memory = nodes_memory({host: node.pid for host, node in cluster.nodes.items()},
                                  cluster.launcher.pid if cluster.launcher is not None else None)
    failed = sum(s["workload"]["failed"] for s in statuses.values())
    return {"mode": mode, "node_processes": len(memory["nodes"]), "all_ready_s": round(ready_s, 1),
            **{k: v for k, v in memory.items() if k.startswith("node_")},
            "launcher_pss_mb": memory["launcher"]["pss_mb"] if memory["launcher"] else None,
            "total_pss_mb": memory["total_pss_mb"], "requests_failed": failed}


def bench_memory(devices: int, modes: tuple[str, ...] = MODES) -> list[dict[str, Any]]:
    return [measure(mode, devices) for mode in modes]
