"""Helpers for the emulation tests: what of ours exists on the machine right now."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest


def system_leftovers(host_names: set[str]) -> dict[str, list[str]]:
    """Interfaces, namespaces, NFQUEUE rules, Mininet shells and cgroups that a run with these
    host names could have left (the checks of the issue, done on the whole machine)."""
    links = [n for n in os.listdir("/sys/class/net") if n.split("-eth")[0] in host_names]
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split()
    rules = [r for r in subprocess.run(["iptables-save"], capture_output=True, text=True)
             .stdout.splitlines() if "NFQUEUE" in r]
    shells = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        text = b" ".join(args).decode(errors="replace")
        if any(f"mininet:{h}" == a.decode(errors="replace") for a in args for h in host_names):
            shells.append(f"{pid} {text}")
    groups = []
    for root in ("/sys/fs/cgroup/cpu", "/sys/fs/cgroup/cpuacct", "/sys/fs/cgroup/cpuset",
                 "/sys/fs/cgroup/unified"):
        if os.path.isdir(root):
            groups += [f"{root}/{d}" for d in os.listdir(root) if d.startswith("edgestage-")]
    return {"interfaces": links, "netns": [n for n in netns if n.startswith("es-")],
            "nfqueue_rules": rules, "mininet_shells": shells, "cgroups": groups}


def assert_nothing_left(host_names: set[str]) -> None:
    left = system_leftovers(host_names)
    assert not any(left.values()), left


@pytest.fixture
def nothing_left_after():
    """Yields a set to fill with host names; checks the machine is clean for them afterwards."""
    names: set[str] = set()
    yield names
    assert_nothing_left(names)
