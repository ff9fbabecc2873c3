"""CPU shares through cgroups: v2 against a fake tree, v1 (or v2) for real on a Mininet host."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from emulation.cgroups import (
    PERIOD_US,
    CgroupV2,
    cgroup_version,
    group_name,
    make_cpu_limiter,
    owner_alive,
    process_start,
    remove_stale,
)
from emulation.network import EmulatedNetwork
from topologies.spec import parse_topology


def fake_v2_tree(root: Path) -> Path:
    root.mkdir(exist_ok=True)
    (root / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    (root / "cgroup.subtree_control").write_text("memory pids\n")
    return root


def test_cgroup_version_of_fake_trees(tmp_path: Path) -> None:
    assert cgroup_version(fake_v2_tree(tmp_path / "v2")) == "v2"
    hybrid = tmp_path / "hybrid"
    (hybrid / "cpu").mkdir(parents=True)
    (hybrid / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    fake_v2_tree(hybrid / "unified")
    assert cgroup_version(hybrid) == "v1"
    (tmp_path / "empty").mkdir()
    assert cgroup_version(tmp_path / "empty") == "none"
    assert cgroup_version() in ("v1", "v2", "none")


def test_v2_limits_on_a_fake_tree(tmp_path: Path) -> None:
    root = fake_v2_tree(tmp_path / "cg")
    lim = make_cpu_limiter("v2", root=root)
    assert isinstance(lim, CgroupV2)
    assert (root / "cgroup.subtree_control").read_text() == "+cpu"  # enabled for our group
    assert (lim.group / "cgroup.subtree_control").read_text() == "+cpu"
    path = lim.limit("d1", 0.25)
    quota = int(0.25 * PERIOD_US * (os.cpu_count() or 1))
    assert (path / "cpu.max").read_text() == f"{quota} {PERIOD_US}"
    lim.add("d1", 4242)
    assert (path / "cgroup.procs").read_text() == "4242"
    argv = lim.wrap("d1", ["mnexec", "-da", "1", "sleep", "1"])
    assert argv[:2] == ["sh", "-c"] and str(path / "cgroup.procs") in argv[2]
    (path / "cpu.stat").write_text(
        "usage_usec 900\nuser_usec 800\nsystem_usec 100\nnr_periods 10\nnr_throttled 4\n"
        "throttled_usec 1234\n")
    assert lim.stats("d1") == {"nr_periods": 10, "nr_throttled": 4, "throttled_us": 1234}
    with pytest.raises(ValueError, match="cpu share"):
        lim.limit("d2", 1.5)
    (path / "cpu.stat").unlink()  # the kernel's file, not ours: the fake needs it gone
    lim.remove()
    assert not lim.group.exists()
    assert (root / "cgroup.subtree_control").read_text() == "-cpu"  # given back


@pytest.mark.root
def test_cpu_share_limits_a_busy_host(nothing_left_after: set) -> None:
    if cgroup_version() == "none":
        pytest.skip("no cgroup CPU controller on this machine")
    spec = parse_topology({"kind": "star", "devices": [{"name": "cpu1", "cpu": 0.1}]})
    nothing_left_after.add("cpu1")
    share_cores = 0.1 * (os.cpu_count() or 1)  # a share of the whole machine, in cores
    with EmulatedNetwork(spec) as net:
        busy = net.popen("cpu1", [sys.executable, "-c", "while True: pass"])
        time.sleep(0.3)
        t0, c0 = time.monotonic(), _cpu_seconds(busy.pid)
        time.sleep(2.0)
        used = (_cpu_seconds(busy.pid) - c0) / (time.monotonic() - t0)
        group = net.limiter.hosts["cpu1"]
        assert str(busy.pid) in (group / "cgroup.procs").read_text().split()
    # Never more than the share (10 % slack for accounting); less is possible on a busy machine.
    assert 0.3 * share_cores < used <= 1.1 * share_cores, used
    stats = net.cpu_stats["cpu1"]
    assert stats["nr_throttled"] > 0 and stats["throttled_us"] > 0
    assert busy.poll() is not None
    assert not group.exists()


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")



def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_group_names_are_unique_and_say_whether_their_owner_lives() -> None:
    a, b = group_name(), group_name()
    assert a != b and a.startswith(f"edgestage-{os.getpid()}.")
    assert owner_alive(a)
    pid, start = os.getpid(), process_start(os.getpid())
    assert not owner_alive(f"edgestage-{pid}.{start + 1}-1")  # same pid, another process: pids wrap
    dead = _dead_pid()
    assert not owner_alive(f"edgestage-{dead}.{start}-3")
    assert not owner_alive(f"edgestage-{dead}-3")  # the names of earlier versions
    assert owner_alive("edgestage-something-else")  # not a name of ours: never touched


def test_stale_groups_of_owners_that_are_gone_are_removed(tmp_path: Path) -> None:
    root = tmp_path / "cpu"
    stale = root / f"edgestage-{_dead_pid()}.1-1"
    (stale / "d1").mkdir(parents=True)
    live = root / group_name()
    (live / "d1").mkdir(parents=True)
    foreign = root / "other-tool"
    foreign.mkdir()
    assert remove_stale(root) == [stale.name]
    assert not stale.exists() and live.exists() and foreign.exists()


@pytest.mark.root
def test_a_killed_owner_leaves_no_cgroup_behind() -> None:
    """SIGKILL of the process that made the groups (e.g. `edgestage run`): its watcher ends
    the processes in them and removes the tree."""
    if cgroup_version() == "none":
        pytest.skip("no cgroup CPU controller on this machine")
    script = ("import subprocess, sys, time\n"
              "from emulation.cgroups import make_cpu_limiter\n"
              "lim = make_cpu_limiter()\n"
              "lim.limit('h1', 0.5)\n"
              "member = subprocess.Popen(lim.wrap('h1', ['sleep', '600']))\n"
              "time.sleep(0.5)\n"
              "print(lim.group, member.pid, flush=True)\n"
              "time.sleep(600)\n")
    owner = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                             cwd=Path(__file__).resolve().parents[2])
    group, member = owner.stdout.readline().split()
    assert Path(group, "h1").is_dir() and member in Path(group, "h1", "cgroup.procs").read_text().split()
    owner.kill()
    owner.wait()
    deadline = time.monotonic() + 15
    while Path(group).exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not Path(group).exists()
    assert process_start(int(member)) is None
