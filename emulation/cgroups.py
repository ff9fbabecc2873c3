"""CPU shares for emulated hosts through cgroups, v1 (cpu controller) or v2 (`cpu.max`).

A share is a fraction of the whole machine, as in Mininet's `CPULimitedHost(cpu=...)`:
quota = share x period x number of CPUs.  One group per run (`edgestage-<pid>-<n>`), one child
per limited host; processes join before they exec (`wrap()`), so nothing escapes the limit by
forking early.  `stats()` reads `cpu.stat` (periods, throttled periods, throttled time) so runs
can record throttling; `remove()` deletes exactly the directories this object created.

Debian's Mininet 2.3.0 `CPULimitedHost` only knows v1 and leaves cpuacct/cpuset groups behind,
hence this module.  The v2 path takes a `root` so it can be tested on a fake tree.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
import time
from pathlib import Path

V1_ROOT = Path("/sys/fs/cgroup/cpu")
V2_ROOT = Path("/sys/fs/cgroup")
PERIOD_US = 100_000
_counter = itertools.count(1)


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
        self.name = name or f"edgestage-{os.getpid()}-{next(_counter)}"
        self.group = self.root / self.name
        self.hosts: dict[str, Path] = {}
        self._created: list[Path] = []
        self._written: dict[Path, list[str]] = {}

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

    def limit(self, host: str, share: float) -> Path:
        raise NotImplementedError

    def procs_file(self, host: str) -> Path:
        return self.hosts[host] / "cgroup.procs"

    def add(self, host: str, pid: int) -> None:
        self._write(self.procs_file(host), str(pid))

    def wrap(self, host: str, argv: list[str]) -> list[str]:
        """argv that joins the host's group, then execs the command.

        Run it in the root mount namespace: a Mininet host mounts its own /sys, without cgroups,
        so the prefix goes before `mnexec` (see EmulatedNetwork.popen)."""
        procs = self.procs_file(host)
        return ["sh", "-c", f'echo $$ > "{procs}" && exec "$@"', "sh", *argv]

    def stats(self, host: str) -> dict[str, int]:
        raise NotImplementedError

    def remove(self) -> None:
        """Remove the groups this object created, deepest first (processes must be gone)."""
        for path in reversed(self._created):
            self._rmdir(path)
        self._created.clear()
        self.hosts.clear()

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


class CgroupV1(CpuLimiter):
    version = "v1"

    def __init__(self, root: str | Path = V1_ROOT, name: str | None = None) -> None:
        super().__init__(root, name)
        self._mkdir(self.group)

    def limit(self, host: str, share: float) -> Path:
        path = self.group / host
        self._mkdir(path)
        self._write(path / "cpu.cfs_period_us", str(PERIOD_US))
        self._write(path / "cpu.cfs_quota_us", str(self.quota_us(share)))
        self.hosts[host] = path
        return path

    def stats(self, host: str) -> dict[str, int]:
        raw = _read_kv(self.hosts[host] / "cpu.stat")
        return {
            "nr_periods": raw.get("nr_periods", 0),
            "nr_throttled": raw.get("nr_throttled", 0),
            "throttled_us": raw.get("throttled_time", 0) // 1000,
        }


class CgroupV2(CpuLimiter):
    version = "v2"

    def __init__(self, root: str | Path = V2_ROOT, name: str | None = None) -> None:
        super().__init__(root, name)
        self._enabled_at_root = False
        # The cpu controller must be enabled in every ancestor's subtree_control.
        if "cpu" not in _read_words(self.root / "cgroup.subtree_control"):
            self._write(self.root / "cgroup.subtree_control", "+cpu")
            self._enabled_at_root = True
        self._mkdir(self.group)
        self._write(self.group / "cgroup.subtree_control", "+cpu")

    def limit(self, host: str, share: float) -> Path:
        path = self.group / host
        self._mkdir(path)
        self._write(path / "cpu.max", f"{self.quota_us(share)} {PERIOD_US}")
        self.hosts[host] = path
        return path

    def stats(self, host: str) -> dict[str, int]:
        raw = _read_kv(self.hosts[host] / "cpu.stat")
        return {
            "nr_periods": raw.get("nr_periods", 0),
            "nr_throttled": raw.get("nr_throttled", 0),
            "throttled_us": raw.get("throttled_usec", 0),
        }

    def remove(self) -> None:
        super().remove()
        if self._enabled_at_root:  # give the machine back as we found it, if nobody needs it
            with contextlib.suppress(OSError):
                (self.root / "cgroup.subtree_control").write_text("-cpu")
            self._enabled_at_root = False


def make_cpu_limiter(version: str | None = None, root: str | Path | None = None) -> CpuLimiter:
    """A limiter for this machine's cgroup version (or the one asked for)."""
    version = version or cgroup_version()
    if version == "v1":
        return CgroupV1(root or V1_ROOT)
    if version == "v2":
        if root is None:
            root = V2_ROOT if (V2_ROOT / "cgroup.controllers").exists() else V2_ROOT / "unified"
        return CgroupV2(root)
    raise ValueError("CPU limits need cgroups: no cgroup v1 cpu controller or v2 cpu controller")


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
