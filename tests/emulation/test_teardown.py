"""Nothing of ours is left after a normal exit, an exception, Ctrl-C (SIGINT) or SIGTERM."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from emulation.network import EmulatedNetwork
from topologies.spec import parse_topology

from .conftest import assert_nothing_left

pytestmark = pytest.mark.root


def spec_for(prefix: str) -> dict:
    return {
        "kind": "two_tier",
        "devices": [{"name": f"{prefix}1", "bw_mbit": 10, "delay_ms": 5, "cpu": 0.2},
                    {"name": f"{prefix}2", "bw_mbit": 5, "delay_ms": 10, "loss_pct": 1}],
        "cpu_shares": {"edge": 0.5},
    }


CHILD = textwrap.dedent("""
    import json, sys, time
    from emulation.network import EmulatedNetwork
    from topologies.spec import parse_topology
    spec = parse_topology(json.loads(sys.argv[1]))
    with EmulatedNetwork(spec) as net:
        first = sorted(net.hosts)[0]
        procs = [net.popen(first, ["sleep", "1000"]), net.popen("edge", ["sleep", "1000"])]
        # a process started through the host's shell, in the background: only its cgroup knows it
        net.cmd(first, "sleep 1001 &")
        info = {"pids": [p.pid for p in procs] + net.impair.pids()
                        + list(net.setup.shell_pids.values()),
                "cgroup": str(net.limiter.group), "intfs": [l.intf_a for l in net.links]}
        print(json.dumps(info), flush=True)
        time.sleep(600)
""")


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(") ")[-1][:1]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.parametrize(("sig", "prefix"), [(signal.SIGINT, "sgi"), (signal.SIGTERM, "sgt")])
def test_nothing_left_after_signal(sig: int, prefix: str) -> None:
    spec = spec_for(prefix)
    child = subprocess.Popen([sys.executable, "-c", CHILD, json.dumps(spec)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = child.stdout.readline()
        assert line, child.stderr.read()
        info = json.loads(line)
        assert all(alive(p) for p in info["pids"])
        assert Path(info["cgroup"]).is_dir()
        child.send_signal(sig)
        child.wait(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode in (-sig, 128 + sig, 130), child.stderr.read()
    deadline = time.monotonic() + 5
    while any(alive(p) for p in info["pids"]) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert [p for p in info["pids"] if alive(p)] == []
    assert not Path(info["cgroup"]).exists()
    sleeper = [p for p in os.listdir("/proc") if p.isdigit() and _cmdline(p) == "sleep 1001"]
    assert sleeper == []
    assert_nothing_left(set(parse_topology(spec).host_names()) - {"ap", "edge", "cloud"})
    assert not set(info["intfs"]) & set(os.listdir("/sys/class/net"))


def _cmdline(pid: str) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        return ""


def test_nothing_left_after_exception(nothing_left_after: set) -> None:
    spec = parse_topology(spec_for("exc"))
    nothing_left_after.update(h for h in spec.host_names() if h.startswith("exc"))
    net = EmulatedNetwork(spec)
    with pytest.raises(RuntimeError, match="boom"), net:
        net.popen("exc1", ["sleep", "1000"])
        raise RuntimeError("boom")
    assert net.leftovers() == {"interfaces": [], "processes": [], "cgroups": []}


def test_bad_link_name_starts_nothing(nothing_left_after: set) -> None:
    data = spec_for("bad")
    data["links"] = [{"endpoints": ["bad1", "cloud"], "bw_mbit": 5}]  # both exist, but not linked
    nothing_left_after.update({"bad1", "bad2"})
    with pytest.raises(ValueError, match="not linked"):
        EmulatedNetwork(parse_topology(data))


def test_a_limit_hit_in_bring_up_is_one_line_and_leaves_nothing(nothing_left_after: set,
                                                                monkeypatch) -> None:
    spec = parse_topology(spec_for("lim"))
    nothing_left_after.update(h for h in spec.host_names() if h.startswith("lim"))

    def too_long(_self) -> None:  # what a hub of 1,024 links once hit, configured in one argument
        raise OSError(errno.E2BIG, "Argument list too long", "mnexec")

    monkeypatch.setattr("emulation.host_config.HostSetup.configure", too_long)
    net = EmulatedNetwork(spec)
    with pytest.raises(ValueError, match="past a limit of this machine: Argument list too long") as info:
        net.__enter__()
    assert "\n" not in str(info.value)
    assert net.leftovers() == {"interfaces": [], "processes": [], "cgroups": []}
    assert not net.guard.locked
