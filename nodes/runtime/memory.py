"""Resident memory of processes, from /proc/PID/smaps_rollup (Linux).

    RSS  every resident page a process maps, pages shared with other processes counted in full
    PSS  its proportional share: a page shared by N processes counts 1/N in each, so the PSS of
         a set of processes adds up to the memory they take from the machine
    USS  the pages only it holds: what stopping it would free
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

MB = 2**20
# imported by diffusers when installed (optional sigma schedules) but used by no stage: the node
# processes do without it, as on an install without it, which saves about 55 MB in each
UNUSED_IN_NODES = ("scipy",)


def block_unused() -> None:
    """Make UNUSED_IN_NODES absent to every later import in this process (the launcher, before the
    imports its nodes share): a None entry in sys.modules makes a package absent to
    importlib.util.find_spec and to import."""
    import sys

    for name in UNUSED_IN_NODES:
        sys.modules.setdefault(name, None)  # type: ignore[arg-type]


def unblock_unused() -> None:
    """Let this process import what `block_unused` kept out: the coordinator does so before it
    imports a plugin strategy, which may need scipy or scikit-learn.  What was imported before
    stays as it was (diffusers keeps scipy absent)."""
    import sys

    for name in UNUSED_IN_NODES:
        if name in sys.modules and sys.modules[name] is None:
            del sys.modules[name]


def process_memory(pid: int) -> dict[str, int]:
    """Bytes: rss, pss, uss (private clean + dirty). OSError if the process is gone."""
    kb = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        name, value, *_ = line.split()
        kb[name.rstrip(":")] = int(value)
    return {"rss": kb["Rss"] * 1024, "pss": kb["Pss"] * 1024,
            "uss": (kb["Private_Clean"] + kb["Private_Dirty"]) * 1024}


def _in_mb(pid: int) -> dict[str, float] | None:
    try:
        return {f"{k}_mb": round(v / MB, 1) for k, v in process_memory(pid).items()}
    except OSError:
        return None  # exited: nothing of it is resident any more


def nodes_memory(node_pids: dict[str, int], launcher_pid: int | None = None) -> dict[str, Any]:
    """One snapshot of the live node processes (and the launcher they were forked from), in MB:
    per node, median and max over nodes, and the total PSS of them all."""
    per_node = {host: m for host, pid in node_pids.items() if (m := _in_mb(pid)) is not None}
    launcher = _in_mb(launcher_pid) if launcher_pid is not None else None
    out: dict[str, Any] = {"nodes": per_node, "launcher": launcher}
    if per_node:
        for kind in ("rss", "pss", "uss"):
            values = [n[f"{kind}_mb"] for n in per_node.values()]
            out[f"node_{kind}_median_mb"] = round(statistics.median(values), 1)
            out[f"node_{kind}_max_mb"] = max(values)
        out["total_pss_mb"] = round(sum(n["pss_mb"] for n in per_node.values())
                                    + (launcher["pss_mb"] if launcher else 0.0), 1)
    return out
