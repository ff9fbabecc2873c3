"""Which backend delays, jitters and drops packets: kernel netem, or userspace NFQUEUE.

    kernel_has_netem() -> bool         probed once, in a throwaway named netns deleted by name
    choose_backend("auto") -> str      "netem" where the kernel has sch_netem, else "userspace"

`UserspaceImpairment` runs one `emulation.nfq_impair` process per impaired host (per group of
hosts past `MAX_PROCESSES`: a thousand Python processes take half a minute of two cores and
gigabytes to start), which binds each host's queues inside the host's network namespace, and
adds one iptables rule per impaired interface
(`raw PREROUTING -i INTF -j NFQUEUE --queue-num N --queue-bypass`): packets are held at the
*receiving* end of each link direction.  `--queue-bypass` lets packets through, unimpaired,
if the process is gone, so a crash never blackholes a host.  Teardown deletes exactly the rules
it added and ends the processes by their pid.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import select
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

log = logging.getLogger(__name__)
BACKENDS = ("auto", "netem", "userspace")


@lru_cache(maxsize=1)
def kernel_has_netem() -> bool:
    """True when a netem qdisc can be created (tried on a dummy link in a temporary netns)."""
    ns = f"es-netem-probe-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    run = lambda *a: subprocess.run(a, capture_output=True, text=True, timeout=10)  # noqa: E731
    if run("ip", "netns", "add", ns).returncode != 0:
        return False
    try:
        if run("ip", "-n", ns, "link", "add", "probe0", "type", "dummy").returncode != 0:
            return False
        res = run("ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", "probe0", "root",
                  "netem", "delay", "1ms")
        return res.returncode == 0
    finally:
        run("ip", "netns", "del", ns)  # takes the dummy link and its qdisc with it


def choose_backend(requested: str = "auto") -> str:
    """The backend to use: "netem" or "userspace"."""
    if requested not in BACKENDS:
        choices = ", ".join(BACKENDS)
        raise ValueError(f"impairment: unknown backend {requested!r} (one of {choices})")
    if requested == "userspace":
        return "userspace"
    has = kernel_has_netem()
    if requested == "netem" and not has:
        raise ValueError("impairment: 'netem' asked for, but this kernel has no sch_netem")
    return "netem" if has else "userspace"


@dataclass
class Ingress:
    """Impairment of the packets arriving on one interface of a host."""

    intf: str
    delay_ms: float
    jitter_ms: float
    loss_pct: float
    limit: int | None
    seed: int
    queue: int = 0

    def conf(self) -> dict:
        return {
            "intf": self.intf, "queue": self.queue, "delay_ms": self.delay_ms,
            "jitter_ms": self.jitter_ms, "loss_pct": self.loss_pct, "limit": self.limit,
            "seed": self.seed,
        }


MAX_PROCESSES = 64  # past this many impaired hosts, a process serves several


@dataclass
class _HostDaemon:
    host: object  # mininet Host
    ingresses: list[Ingress]
    proc: subprocess.Popen | None = None  # the process serving this host (maybe others too)
    rules: list[str] = field(default_factory=list)


class UserspaceImpairment:
    """The NFQUEUE processes and rules of one network."""

    def __init__(self) -> None:
        self._daemons: dict[str, _HostDaemon] = {}
        self._lock = threading.Lock()  # control writes come from the caller and dynamics

    def add(self, host: object, ingress: Ingress) -> None:
        d = self._daemons.setdefault(host.name, _HostDaemon(host, []))
        ingress.queue = len(d.ingresses)
        d.ingresses.append(ingress)

    def start(self, timeout: float = 20.0) -> None:
        """Start every process first, then wait for all (they start in parallel).  Each reads
        its configuration from a file (a hub's does not fit in one argument) and enters each of
        its hosts' network namespaces to bind that host's queues there."""
        daemons = list(self._daemons.values())
        per = -(-len(daemons) // MAX_PROCESSES) if daemons else 1
        groups = [daemons[i:i + per] for i in range(0, len(daemons), per)]
        confs_dir = Path(tempfile.mkdtemp(prefix="edgestage-nfq-"))
        try:
            for n, group in enumerate(groups):
                confs = confs_dir / f"{n}.json"
                confs.write_text(json.dumps([{**i.conf(), "netns": f"/proc/{d.host.pid}/ns/net"}
                                             for d in group for i in d.ingresses]))
                proc = subprocess.Popen(
                    [*_python(), "-m", "emulation.nfq_impair", f"@{confs}"],
                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                    env=_python_env(), start_new_session=True)  # Ctrl-C is for the run's process
                for d in group:
                    d.proc = proc
            deadline = time.monotonic() + timeout
            for group in groups:
                proc = group[0].proc
                line = _readline(proc, deadline)
                if line.strip() != "ready":
                    err = ""
                    if proc.poll() is not None:
                        err = proc.stderr.read().decode(errors="replace")
                    names = ", ".join(d.host.name for d in group[:3]) + (", ..." if group[3:] else "")
                    raise RuntimeError(f"impairment process of {names} did not start: {err.strip()}")
        finally:
            shutil.rmtree(confs_dir, ignore_errors=True)
        for d in self._daemons.values():
            d.rules = [
                f"-A PREROUTING -i {i.intf} -j NFQUEUE --queue-num {i.queue} --queue-bypass"
                for i in d.ingresses
            ]
        _iptables_restore_all([(d.host, d.rules) for d in self._daemons.values()])

    def update(self, host: str, intf: str, **params: object) -> bool:
        """Change delay_ms / jitter_ms / loss_pct / down of one interface, live."""
        d = self._daemons.get(host)
        if d is None or d.proc is None or d.proc.poll() is not None:
            return False
        if not any(i.intf == intf for i in d.ingresses):
            return False
        with self._lock:
            d.proc.stdin.write((json.dumps({"intf": intf, **params}) + "\n").encode())
            d.proc.stdin.flush()
        return True

    def has(self, host: str, intf: str) -> bool:
        d = self._daemons.get(host)
        return d is not None and any(i.intf == intf for i in d.ingresses)

    def stats(self) -> dict[str, list[dict]]:
        """Each host's counters, per interface."""
        host_of = {i.intf: name for name, d in self._daemons.items() for i in d.ingresses}
        out: dict[str, list[dict]] = {}
        for proc in self._procs():
            if proc.poll() is not None:
                continue
            with self._lock:
                proc.stdin.write(b'{"cmd": "stats"}\n')
                proc.stdin.flush()
                line = _readline(proc, time.monotonic() + 5)
            with contextlib.suppress(ValueError):
                for row in json.loads(line):
                    out.setdefault(host_of.get(row["intf"], "?"), []).append(row)
        return out

    def pids(self) -> list[int]:
        return [proc.pid for proc in self._procs()]

    def _procs(self) -> list[subprocess.Popen]:
        """Every process, once (one may serve several hosts)."""
        return list({id(d.proc): d.proc for d in self._daemons.values() if d.proc is not None}.values())

    def stop(self, delete_rules: bool = True) -> None:
        """Delete our rules (by their exact spec), then end each process by its pid; every
        host at once (one by one, 256 hosts took 8 s).  `delete_rules=False` when the hosts'
        namespaces are about to go, and their rules with them."""
        removals = [(d.host, [r.replace("-A ", "-D ", 1) for r in d.rules])
                    for d in self._daemons.values() if d.rules and delete_rules]
        for d in self._daemons.values():
            d.rules = []
        try:
            _iptables_restore_all(removals)
        except Exception as exc:  # keep going: the processes must end all the same
            log.warning("removing NFQUEUE rules: %s", exc)
        _end_all(self._procs())
        self._daemons.clear()


@lru_cache(maxsize=1)
def _nfq_path() -> str | None:
    """Where `emulation` and `netfilterqueue` are found, for an interpreter started without
    `site` (None where netfilterqueue is not installed: the process then says so itself)."""
    import importlib.util

    found = importlib.util.find_spec("netfilterqueue")
    if found is None or found.origin is None:
        return None
    origin = Path(found.origin)
    site_dir = origin.parents[1] if origin.name == "__init__.py" else origin.parent
    return os.pathsep.join([str(Path(__file__).resolve().parents[1]), str(site_dir)])


def _python() -> list[str]:
    """The interpreter of an impairment process: without `site` where it can (a quarter of its
    start-up, mostly the editable install's path finder)."""
    return [sys.executable, "-S"] if _nfq_path() else [sys.executable]


def _python_env() -> dict[str, str] | None:
    path = _nfq_path()
    return None if path is None else {**os.environ, "PYTHONPATH": path}


def _iptables_restore_all(work: list[tuple[object, list[str]]]) -> None:
    """Apply each host's rule lines (-A or -D) to its raw table: one iptables-restore per host,
    all started before any is waited for."""
    procs = []
    for host, rules in work:
        proc = host.popen(["iptables-restore", "--noflush"], stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        procs.append((host, rules, proc))
    failed = []
    for host, rules, proc in procs:
        text = "*raw\n" + "\n".join(rules) + "\nCOMMIT\n"
        _, err = proc.communicate(text.encode(), timeout=60)
        if proc.returncode != 0:
            failed.append(f"{host.name}: {err.decode().strip()}")
    if failed:
        raise RuntimeError("iptables-restore: " + "; ".join(failed))


def _readline(proc: subprocess.Popen, deadline: float) -> str:
    fd = proc.stdout.fileno()
    # poll, not select: a network of a few hundred hosts holds more than 1024 descriptors in
    # this process, and select() cannot watch one numbered above that.
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    buf = b""
    while not buf.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0:
            break
        if not poller.poll(left * 1000):
            break
        chunk = os.read(fd, 1)
        if not chunk:
            break
        buf += chunk
    return buf.decode(errors="replace")


def _end_all(procs: list[subprocess.Popen], grace: float = 2.0) -> None:
    """Close every stdin first (each process exits on EOF), then wait for each; SIGTERM and
    SIGKILL by pid for any that lingers past the grace time."""
    for proc in procs:
        with contextlib.suppress(OSError):
            proc.stdin.close()
    deadline = time.monotonic() + grace
    for proc in procs:
        _end(proc, max(0.05, deadline - time.monotonic()), grace)


def _end(proc: subprocess.Popen, wait: float = 2.0, grace: float = 2.0) -> None:
    """Close stdin (the process exits on EOF), then SIGTERM/SIGKILL by pid if it lingers."""
    with contextlib.suppress(OSError):
        proc.stdin.close()
    try:
        proc.wait(timeout=wait)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=grace)
    for stream in (proc.stdout, proc.stderr):
        with contextlib.suppress(Exception):
            stream.close()
