"""CPU shares for emulated hosts through cgroups, v1 (cpu controller) or v2 (`cpu.max`).

A share is a fraction of the whole machine, as in Mininet's `CPULimitedHost(cpu=...)`:
quota = share x period x number of CPUs.  One group per run, one child per limited host;
processes join before they exec (`wrap()`), so nothing escapes the limit by forking early.
`stats()` reads `cpu.stat` (periods, throttled periods, throttled time) so runs can record
throttling; `remove()` deletes exactly the directories this object created.

A group is named `edgestage-<pid>.<start>-<n>`: the owner's pid and its start time (clock ticks
since boot, /proc/PID/stat), so a name is never reused when pids wrap (32768 here) and a group
whose owner is gone can be told from a live one.  Creating a limiter first removes the groups
of owners that are gone (`remove_stale`), and `guard()` starts a watcher process that removes
the tree when the owner dies without removing it itself (SIGKILL): `python -m emulation.cgroups`.

Debian's Mininet 2.3.0 `CPULimitedHost` only knows v1 and leaves cpuacct/cpuset groups behind,
hence this module.  The v2 path takes a `root` so it can be tested on a fake tree.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import logging
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

V1_ROOT = Path("/sys/fs/cgroup/cpu")
V2_ROOT = Path("/sys/fs/cgroup")
PERIOD_US = 100_000
_counter = itertools.count(1)
PREFIX = "edgestage-"
# edgestage-<pid>.<start ticks>-<n>; names of earlier versions were edgestage-<pid>-<n>
_NAME = re.compile(r"^edgestage-(?P<pid>\d+)(?:\.(?P<start>\d+))?-\d+$")
log = logging.getLogger(__name__)


def process_start(pid: int) -> int | None:
    """The process's start time in clock ticks since boot, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(") ", 1)[1].split()
    except (OSError, IndexError):
        return None
    return None if fields[0] == "Z" else int(fields[19])


def group_name(pid: int | None = None) -> str:
    pid = pid or os.getpid()
    return f"{PREFIX}{pid}.{process_start(pid) or 0}-{next(_counter)}"


def owner_alive(name: str) -> bool:
    """Whether the process that created the group `name` still runs (unknown names: assumed so)."""
    m = _NAME.match(name)
    if m is None:
        return True
    start = process_start(int(m["pid"]))
    return start is not None and (m["start"] is None or int(m["start"]) == start)


def cgroup_version(root: str | Path = "/sys/fs/cgroup") -> str:
    """Which cgroup version can limit CPU here: "v1", "v2" or "none".

    On hybrid systems (v1 controllers plus an unified tree without `cpu`) the answer is "v1".
    """
    root = Path(root)
    if (root / "cpu" / "cpu.cfs_quota_us").exists():
        return "v1"
    for candidate in (root, root / "unified"):
        controllers = candidate / "cgroup.controllers"
        if controllers.exists() and "cpu" in controllers.read_text().split():
            return "v2"
    return "none"


class CpuLimiter:
    """CPU limits for the hosts of one run, on one cgroup version."""

    version = "none"

    def __init__(self, root: str | Path, name: str | None = None) -> None:
        self.root = Path(root)
        self.name = name or group_name()
        self.group = self.root / self.name
        self.hosts: dict[str, Path] = {}
        self._created: list[Path] = []
        self._written: dict[Path, list[str]] = {}
        self._watcher: subprocess.Popen | None = None
        self._guard_fd: int | None = None

    def ncpus(self) -> int:
        return os.cpu_count() or 1

    def quota_us(self, share: float) -> int:
        if not 0 < share <= 1:
            raise ValueError(f"cpu share must be in (0, 1], got {share}")
        return max(1000, int(share * PERIOD_US * self.ncpus()))

    def _mkdir(self, path: Path) -> None:
        path.mkdir()
        self._created.append(path)

    def _write(self, path: Path, value: str) -> None:
        with open(path, "w") as f:  # cgroupfs wants one write per value
            f.write(value)
        self._written.setdefault(path.parent, []).append(path.name)

    THROTTLED: tuple[str, int]  # cpu.stat's throttled-time key, and its units per microsecond

    def limit(self, host: str, share: float) -> Path:
        path = self.track(host)
        self._set_quota(path, share)
        return path

    def _set_quota(self, path: Path, share: float) -> None:
        raise NotImplementedError

    def stats(self, host: str) -> dict[str, int]:
        raw = _read_kv(self.hosts[host] / "cpu.stat")
        key, per_us = self.THROTTLED
        return {"nr_periods": raw.get("nr_periods", 0), "nr_throttled": raw.get("nr_throttled", 0),
                "throttled_us": raw.get(key, 0) // per_us}

    def procs_file(self, host: str) -> Path:
        return self.hosts[host] / "cgroup.procs"

    def add(self, host: str, pid: int) -> None:
        self._write(self.procs_file(host), str(pid))

    def track(self, host: str) -> Path:
        """A group without a limit: it tracks the host's processes, so teardown finds them."""
        path = self.group / host
        self._mkdir(path)
        self.hosts[host] = path
        return path

    def pids(self) -> set[int]:
        """Every process in the hosts' groups."""
        return _tree_pids(list(self.hosts.values()))

    def end_processes(self, spare: set[int] = frozenset()) -> None:
        """End every process in the hosts' groups but `spare` (by pid: SIGTERM, then SIGKILL)."""
        end_members(list(self.hosts.values()), spare, grace=1.0)

    def wrap(self, host: str, argv: list[str]) -> list[str]:
        """argv that joins the host's group, then execs the command.

        Run it in the root mount namespace: a Mininet host mounts its own /sys, without cgroups,
        so the prefix goes before `mnexec` (see EmulatedNetwork.popen)."""
        procs = self.procs_file(host)
        return ["sh", "-c", f'echo $$ > "{procs}" && exec "$@"', "sh", *argv]

    def guard(self) -> None:
        """Start the watcher that removes this tree if this process dies without `remove()`.

        It runs in its own session (Ctrl-C at the terminal does not reach it) and waits on a
        pipe whose other end only this process holds: end of file means `remove()` ran or this
        process died; in the second case the tree is still there and the watcher removes it."""
        if self._watcher is not None:
            return
        read_end, write_end = os.pipe()
        self._watcher = subprocess.Popen(
            [sys.executable, "-m", "emulation.cgroups", str(self.group), str(os.getpid())],
            stdin=read_end, stdout=subprocess.DEVNULL, start_new_session=True, close_fds=True)
        os.close(read_end)
        os.set_inheritable(write_end, False)  # children (nodes, shells) must not hold it open
        self._guard_fd = write_end

    def remove(self) -> None:
        """Remove the groups this object created, deepest first (processes must be gone)."""
        for path in reversed(self._created):
            self._rmdir(path)
        self._created.clear()
        self.hosts.clear()
        self._release_watcher()

    def _release_watcher(self) -> None:
        if self._guard_fd is not None:
            os.close(self._guard_fd)  # end of file: the watcher sees the tree gone and exits
            self._guard_fd = None
        if self._watcher is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._watcher.wait(timeout=5)
            self._watcher = None

    def _rmdir(self, path: Path) -> None:
        for _ in range(50):  # a just-killed process can take a moment to leave its group
            try:
                path.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError as exc:
                if exc.errno == errno.ENOTEMPTY and self._unlink_written(path):
                    continue  # a plain directory tree (tests): remove the files we wrote
                if exc.errno not in (errno.EBUSY, errno.ENOTEMPTY):
                    raise
                time.sleep(0.05)
        path.rmdir()

    def _unlink_written(self, path: Path) -> bool:
        names = self._written.pop(path, [])
        for n in set(names):
            with contextlib.suppress(OSError):
                (path / n).unlink()
        return bool(names)


def remove_tree(group: Path) -> None:
    """End every process in a group tree (by pid: they are ours, they are in our group) and
    remove its directories, deepest first."""
    dirs = sorted((p for p in group.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True)
    dirs.append(group)
    end_members(dirs)
    for d in dirs:
        for _ in range(40):  # a just-killed process takes a moment to leave its group
            try:
                d.rmdir()
                break
            except FileNotFoundError:
                break
            except OSError as exc:
                if exc.errno not in (errno.EBUSY, errno.ENOTEMPTY):
                    raise
                time.sleep(0.05)


def end_members(dirs: list[Path], spare: set[int] = frozenset(), grace: float = 2.0) -> None:
    """End every process in these groups but `spare` and this one, by pid: SIGTERM, and SIGKILL
    for any still there after `grace` seconds."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        pids = _tree_pids(dirs) - spare
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + grace
        while pids and time.monotonic() < deadline:
            time.sleep(0.02)
            pids = _tree_pids(dirs) - spare
        if not pids:
            return


def _tree_pids(dirs: list[Path]) -> set[int]:
    pids: set[int] = set()
    for d in dirs:
        with contextlib.suppress(OSError):
            pids |= {int(p) for p in (d / "cgroup.procs").read_text().split()}
    return pids - {os.getpid()}


def remove_stale(root: str | Path) -> list[str]:
    """Remove the groups of ours whose owner is gone (a run killed with SIGKILL); their names."""
    removed = []
    with contextlib.suppress(OSError):
        for entry in Path(root).iterdir():
            if entry.is_dir() and entry.name.startswith(PREFIX) and not owner_alive(entry.name):
                try:
                    remove_tree(entry)
                except OSError as exc:
                    log.warning("stale cgroup %s of a run that is gone: not removed (%s)", entry, exc)
                    continue
                log.warning("removed cgroup %s left by a run that is gone", entry)
                removed.append(entry.name)
    return removed


class CgroupV1(CpuLimiter):
    version = "v1"
    THROTTLED = ("throttled_time", 1000)  # nanoseconds

    def __init__(self, root: str | Path = V1_ROOT, name: str | None = None) -> None:
        super().__init__(root, name)
        self._mkdir(self.group)

    def _set_quota(self, path: Path, share: float) -> None:
        self._write(path / "cpu.cfs_period_us", str(PERIOD_US))
        self._write(path / "cpu.cfs_quota_us", str(self.quota_us(share)))


class CgroupV2(CpuLimiter):
    version = "v2"
    THROTTLED = ("throttled_usec", 1)  # microseconds

    def __init__(self, root: str | Path = V2_ROOT, name: str | None = None) -> None:
        super().__init__(root, name)
        self._enabled_at_root = False
        # The cpu controller must be enabled in every ancestor's subtree_control.
        if "cpu" not in _read_words(self.root / "cgroup.subtree_control"):
            self._write(self.root / "cgroup.subtree_control", "+cpu")
            self._enabled_at_root = True
        self._mkdir(self.group)
        self._write(self.group / "cgroup.subtree_control", "+cpu")

    def _set_quota(self, path: Path, share: float) -> None:
        self._write(path / "cpu.max", f"{self.quota_us(share)} {PERIOD_US}")

    def remove(self) -> None:
        super().remove()
        if self._enabled_at_root:  # give the machine back as we found it, if nobody needs it
            with contextlib.suppress(OSError):
                (self.root / "cgroup.subtree_control").write_text("-cpu")
            self._enabled_at_root = False


def make_cpu_limiter(version: str | None = None, root: str | Path | None = None) -> CpuLimiter:
    """A limiter for this machine's cgroup version (or the one asked for)."""
    version = version or cgroup_version()
    on_machine = root is None  # a given root is a test's fake tree: no watcher for it
    limiter: CpuLimiter
    if version == "v1":
        root = root or V1_ROOT
        remove_stale(root)
        limiter = CgroupV1(root)
    elif version == "v2":
        if root is None:
            root = V2_ROOT if (V2_ROOT / "cgroup.controllers").exists() else V2_ROOT / "unified"
        remove_stale(root)
        limiter = CgroupV2(root)
    else:
        raise ValueError("CPU limits need cgroups: no cgroup v1 cpu controller or v2 cpu controller")
    if on_machine:
        limiter.guard()
    return limiter


def _read_kv(path: Path) -> dict[str, int]:
    out = {}
    with contextlib.suppress(FileNotFoundError):
        for line in path.read_text().splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[1].lstrip("-").isdigit():
                out[parts[0]] = int(parts[1])
    return out


def _read_words(path: Path) -> list[str]:
    try:
        return path.read_text().split()
    except FileNotFoundError:
        return []


def _watch(group: Path, owner: int) -> int:
    """The watcher (see `CpuLimiter.guard`): wait for end of file on stdin, then remove the tree
    if it is still there once its owner is gone."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    while sys.stdin.buffer.read(4096):
        pass
    if not group.exists():
        return 0  # the owner removed it: the normal end
    deadline = time.monotonic() + 10
    while process_start(owner) is not None and time.monotonic() < deadline:
        time.sleep(0.1)  # the pipe closed before the owner was reaped: give it a moment
    if group.exists() and process_start(owner) is None:
        remove_tree(group)
    return 0


if __name__ == "__main__":
    sys.exit(_watch(Path(sys.argv[1]), int(sys.argv[2])))
