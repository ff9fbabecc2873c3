"""Bringing a topology to life and back down: the Mininet lifecycle the runner builds on.

    from topologies.spec import load_topology
    from emulation.network import EmulatedNetwork

    spec = load_topology("scenarios/default.toml")
    with EmulatedNetwork(spec, run_dir="runs/x") as net:
        net.hosts["d1"]                    # HostInfo(name, role, ip, cpu, radio)
        p = net.popen("edge", ["iperf3", "-s"])   # in edge's namespace: tracked, CPU-limited
        net.namespace_pid("edge")          # whose namespaces are edge's (the node launcher uses it)
        net.cmd("d1", "ip route")          # one shell command in d1's namespace (main thread)
        net.set_link("d1", "ap", bw_mbit=5, delay_ms=30)    # live, logged with a timestamp
        net.link_down("d1", "ap"); net.link_up("d1", "ap")
        net.manifest()                     # backend, seed, hosts, links, cgroup version
        net.reachability()                 # ICMP echoes back: every pair, or from the hub
    # here: processes ended, rules, qdiscs, interfaces, namespaces and cgroups removed

What `start()` does, in order: choose the impairment backend (logged); build Mininet with
routed `Host`s, plain `Link`s (veth) and `controller=None` (no switch at all, so no OVS and no
bridge; Mininet creates the veths but configures nothing, see emulation/host_config.py); put every host's
shell in its own cgroup (a CPU quota where the spec gives a share; a process tracker either
way); per host, in parallel: `ip_forward` where it forwards, addresses, interfaces up and static
routes (one `ip -batch`), HTB on every egress (`tc -batch`, emulation.shaping); then the
impairment (netem leaves, or NFQUEUE processes and rules, emulation.impairment); finally the
time-varying behaviour (traces, channel model and mobility, scheduled down/up;
emulation.dynamics) unless `dynamics=False`.

`stop()` undoes it by id, each step guarded so one failure does not skip the rest: dynamics
thread; processes started with `popen()` (their process group, by pid) and anything else left
in a host's cgroup (by pid); NFQUEUE processes; Mininet's `net.stop()` (host shells: with the
last process in a namespace gone, the kernel deletes its veth ends and iptables rules in one
batch); cgroups (the directories created); any interface of ours still in the root namespace
(by name).  It runs on normal exit, on exceptions, and — because
`start()` turns SIGTERM and SIGHUP into `SystemExit` and SIGINT is a `KeyboardInterrupt` — on
those signals; signals are held off while it runs.  `atexit` is a last resort.

Live link control (`set_link`, `link_down`, `link_up`, the log of changes) is
emulation/live_links.py's, a part of this class.  Link changes (API, traces, channel model,
faults) are appended to `net.link_log` and, with a
`run_dir`, to `run_dir/link_events.jsonl`: one JSON object per change with `t` (Unix time),
`t_rel` (seconds since the network came up), `t_clock` (seconds on the clock of events and
traces: from the network coming up, or from `start_clock(origin)` for a network made with
`hold_dynamics=True`, as a run's is, whose clock starts at its first measured request), `link`,
`source` and the new values.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import resource
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from emulation.cgroups import CpuLimiter
from emulation.host_config import HostConfiguration, configure_quietly
from emulation.impairment import UserspaceImpairment, choose_backend
from emulation.live_links import LiveLinks
from nodes.runtime.launcher import die_with_parent
from topologies.spec import LinkShape, TopologySpec
from topologies.topos import EdgeTopo, LinkInfo, topology_from_spec

log = logging.getLogger(__name__)
_HANDLED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
# Largest network whose reachability() checks every pair by default (see reachability).
ALL_PAIRS_MAX = 32
# Descriptors this process holds per host: five (the shell's pty, both ends; the impairment
# process's three pipes), plus popen()s' pipes: with room for those, eight.
_FDS_PER_HOST = 8
SERVERS = ("edge", "cloud")  # the roles that serve requests


@dataclass(frozen=True)
class HostInfo:
    name: str
    role: str
    ip: str
    cpu: float | None
    radio: str | None = None  # devices: the radio kind of the energy model (topologies/radio.py)


class _Terminated(SystemExit):
    """SIGTERM/SIGHUP arrived: unwind like Ctrl-C does, so `with` blocks clean up."""


def _raise_terminated(signum: int, _frame: object) -> None:
    raise _Terminated(128 + signum)


class EmulatedNetwork(HostConfiguration, LiveLinks):
    """A running emulated edge network (see the module docstring)."""

    def __init__(self, spec: TopologySpec, run_dir: str | Path | None = None,
                 dynamics: bool = True, cpu_limits: bool = True, hold_dynamics: bool = False,
                 dilation: float = 1.0) -> None:
        self.spec = spec
        # time dilation K: links are given and logged in emulated units, and run at rate / K,
        # delay x K; link changes happen at K x their emulated times (emulation/dilation.py)
        self.dilation = float(dilation)
        self.run_dir = Path(run_dir) if run_dir else None
        self.dynamics_enabled = dynamics
        # held: link changes wait for start_clock() (a run's clock starts at its first measured
        # request); otherwise they count from the network coming up
        self.hold_dynamics = hold_dynamics
        self.clock_origin: float | None = None
        self.cpu_limits = cpu_limits
        self.backend = choose_backend(spec.impairment)
        self.topo: EdgeTopo = topology_from_spec(spec)  # validates link names before anything runs
        configure_quietly(self.topo)
        self.links: list[LinkInfo] = list(self.topo.link_infos)
        _raise_fd_limit(len(self.topo.hosts()) * _FDS_PER_HOST + 256)
        self.hosts: dict[str, HostInfo] = {}
        self.link_log: list[dict] = []
        self.cpu_stats: dict[str, dict[str, int]] = {}
        self.net = None
        self.limiter: CpuLimiter | None = None
        self.impair = UserspaceImpairment()
        self.dynamics = None
        self.t0 = 0.0
        self._state: dict[tuple[str, str], LinkShape] = {}  # (sender, its intf) -> now
        self._dynamic_ingress: set[str] = set()
        self._procs: list[subprocess.Popen] = []
        self._shell_pids: dict[str, int] = {}
        self._log_lock = threading.Lock()
        self._prev_handlers: dict[int, object] = {}
        self._started = False
        self._stopped = False
        self._machine_lock: int | None = None

    # ---- lifecycle -------------------------------------------------------------------------

    def __enter__(self) -> EmulatedNetwork:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> EmulatedNetwork:
        from mininet.log import lg
        from mininet.net import Mininet
        from mininet.node import Host

        if self._started:
            raise RuntimeError("network already started")
        self._started = True
        self._install_signal_handlers()
        atexit.register(self.stop)
        self._machine_lock = hold_machine_lock()
        if lg.getEffectiveLevel() < logging.WARNING:  # Mininet prints "*** ..." otherwise
            lg.setLevel(logging.WARNING)
        log.info("impairment backend: %s (asked: %s)", self.backend, self.spec.impairment)
        began = time.monotonic()
        self.net = Mininet(topo=self.topo, host=Host, controller=None, build=False,
                           autoSetMacs=False, waitConnected=False)
        self.net.build()
        for name in self.topo.hosts():
            node = self.net[name]
            self._shell_pids[name] = node.pid
            info = self.topo.nodeInfo(name)
            self.hosts[name] = HostInfo(name, info["role"], info["ip"].split("/")[0], info["cpu"],
                                        info.get("radio"))
        self._setup_cgroups()
        self._configure_hosts()
        if self.backend == "userspace":
            self.impair.start()
        self.t0 = time.time()
        self.bringup_s = time.monotonic() - began
        self._log_change(None, "start", backend=self.backend, seed=self.spec.seed)
        if self.run_dir is not None:
            (self.run_dir / "network.json").write_text(json.dumps(self.manifest(), indent=1))
        if self.dynamics_enabled:
            from emulation.dynamics import LinkDynamics

            self.dynamics = LinkDynamics(self)
            if self.dynamics.has_work():
                self.dynamics.start()
        if not self.hold_dynamics:
            self.start_clock(self.t0)
        return self

    def start_clock(self, origin: float) -> None:
        """t = 0 of events, traces and the channel model: `origin` (time.time(), may be ahead)."""
        self.clock_origin = origin
        if self.dynamics is not None:
            self.dynamics.set_origin(origin)

    def stop(self) -> None:
        """Tear down everything this network created; safe to call more than once."""
        if not self._started or self._stopped:
            return
        self._stopped = True
        blocked = _block_signals()
        try:
            self._teardown()
        finally:
            self._restore_signal_handlers()
            with contextlib.suppress(Exception):
                atexit.unregister(self.stop)
            _unblock_signals(blocked)

    def _teardown(self) -> None:
        if self._machine_lock is None:
            return  # never came up: nothing of ours exists
        steps = [
            ("dynamics", self._stop_dynamics),
            ("processes", self._stop_processes),
            ("cpu stats", self._collect_cpu_stats),
            ("cgroup processes", self._kill_cgroup_members),
            # rules go with the namespaces (see _stop_mininet): end the processes only
            ("impairment", lambda: self.impair.stop(delete_rules=False)),
            ("mininet", self._stop_mininet),
            ("cgroups", self._remove_cgroups),
            ("interfaces", self._delete_stray_interfaces),
        ]
        for what, step in steps:
            try:
                step()
            except Exception as exc:  # keep going: the next steps still have things to remove
                log.warning("teardown %s: %s", what, exc)
        os.close(self._machine_lock)  # the next network may come up
        self._machine_lock = None
        if self.run_dir is not None:
            with contextlib.suppress(OSError):
                self.run_dir.mkdir(parents=True, exist_ok=True)
                (self.run_dir / "cpu_stats.json").write_text(json.dumps(self.cpu_stats, indent=1))

    # ---- what the runner uses --------------------------------------------------------------

    def node(self, name: str):
        if self.net is None or name not in self.hosts:
            raise KeyError(f"no host {name!r}")
        return self.net[name]

    def ip(self, name: str) -> str:
        return self.hosts[name].ip

    def cmd(self, host: str, command: str) -> str:
        """Run one shell command in the host's shell (not thread-safe: main thread only)."""
        return self.node(host).cmd(command)

    def namespace_pid(self, host: str) -> int:
        """The pid of the host's shell, whose namespaces are the host's (`mnexec -a PID`)."""
        return self._shell_pids[host]

    def popen(self, host: str, argv: list[str], cpu_limited: bool = True,
              **kwargs: object) -> subprocess.Popen:
        """Start a process in the host's namespace (and cgroup); ended by pid at teardown, and
        sent SIGTERM if the thread that started it dies first."""
        node = self.node(host)
        mncmd = ["mnexec", "-da", str(node.pid)]
        if cpu_limited and self.limiter is not None and host in self.limiter.hosts:
            # join the cgroup first (from the root mount namespace), then enter the host
            mncmd = self.limiter.wrap(host, mncmd)
        kwargs.setdefault("stdin", subprocess.DEVNULL)
        # mnexec -d detaches, so a SIGKILLed runner would leave it running; two tcpdumps on one
        # veth's ends then hold each other's namespaces, and the veth, alive
        kwargs.setdefault("preexec_fn", die_with_parent)
        proc = node.popen(list(argv), mncmd=mncmd, **kwargs)
        self._procs.append(proc)
        return proc

    def hub(self) -> str:
        """The host with the most links (star: edge, two_tier: ap): every host is reachable
        from it."""
        return self.topo.hub()

    def reachability(self, sources: str | list[str] | None = None, tries: int = 3,
                     timeout: float = 3.0) -> dict[str, dict[str, int]]:
        """ICMP echoes back out of `tries`, {source: {target: n}}, from each source to every
        other host's address.

        `sources`: "all" (every pair: one prober per host, for small networks only), "hub"
        (one prober in `hub()`, the check at scale), or a list of host names.  None means
        "all" up to ALL_PAIRS_MAX hosts and "hub" beyond: every pair of 128 hosts is 49,000
        echoes, all through the hub's one userspace impairment process, which cannot clear
        them within any sensible timeout on two cores (that was the 128-device failure)."""
        names = self._probe_sources(sources)
        py = [sys.executable, "-m", "emulation.probe", "ping", "--tries", str(tries),
              "--timeout", str(timeout)]
        by_ip = {h.ip: h.name for h in self.hosts.values()}
        # every prober first, then every answer: they run at the same time
        procs = {h: self.popen(h, [*py, *[o.ip for o in self.hosts.values() if o.name != h]],
                               stdout=subprocess.PIPE, cpu_limited=False) for h in names}
        out = {}
        for h, proc in procs.items():
            raw = json.loads(proc.communicate(timeout=timeout + 60)[0])
            out[h] = {by_ip[ip]: n for ip, n in raw.items()}
        return out

    def _probe_sources(self, sources: str | list[str] | None) -> list[str]:
        if sources is None:
            sources = "all" if len(self.hosts) <= ALL_PAIRS_MAX else "hub"
        if sources == "hub":
            return [self.hub()]
        if sources == "all":
            if len(self.hosts) > ALL_PAIRS_MAX:
                raise ValueError(f"reachability: every pair of {len(self.hosts)} hosts is too "
                                 f"many (at most {ALL_PAIRS_MAX}); check from the hub")
            return list(self.hosts)
        unknown = [h for h in sources if h not in self.hosts]
        if unknown:
            raise ValueError(f"reachability: no host {unknown}")
        return list(sources)

    def manifest(self) -> dict:
        return {
            "impairment_backend": self.backend,
            "impairment_requested": self.spec.impairment,
            "seed": self.spec.seed,
            "kind": self.spec.kind,
            "time_dilation": self.dilation,  # link figures below are emulated (as configured)
            "tcp_timers": self.tcp_timers(),
            "cgroup_version": self.limiter.version if self.limiter else "none",
            "started_at": self.t0,
            "hosts": [asdict(h) for h in self.hosts.values()],
            "links": [
                {"link": li.name, "a": li.a, "b": li.b, "intf_a": li.intf_a, "intf_b": li.intf_b,
                 "ip_a": li.ip_a, "ip_b": li.ip_b, **li.spec.figures()}
                for li in self.links
            ],
            # every message has a server at one end (no stage runs on a device other than the
            # requesting one), so the paths from the edge and cloud hosts are all a reader needs
            "paths": self.topo.link_paths([h.name for h in self.hosts.values() if h.role in SERVERS]),
        }

    # ---- teardown helpers ------------------------------------------------------------------

    def _stop_dynamics(self) -> None:
        if self.dynamics is not None:
            self.dynamics.stop()

    def _stop_processes(self) -> None:
        for proc in self._procs:
            if proc.poll() is None:
                _signal_group(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 3
        for proc in self._procs:
            try:
                proc.wait(timeout=max(0.05, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal_group(proc.pid, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=2)
            for stream in (proc.stdin, proc.stdout, proc.stderr):
                if stream is not None:
                    with contextlib.suppress(Exception):
                        stream.close()

    def _collect_cpu_stats(self) -> None:
        if self.limiter is None:
            return
        for name, h in self.hosts.items():
            if h.cpu and name in self.limiter.hosts:
                self.cpu_stats[name] = {"cpu_share": h.cpu, **self.limiter.stats(name)}

    def _kill_cgroup_members(self) -> None:
        """Whatever is still in a host's group was started in that host: end it by pid."""
        if self.limiter is None:
            return
        for sig in (signal.SIGTERM, signal.SIGKILL):
            pids = self._cgroup_pids()
            shells = set(self._shell_pids.values())
            for pid in pids - shells:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            deadline = time.monotonic() + 1.0
            while time.monotonic() < deadline and self._cgroup_pids() - shells:
                time.sleep(0.02)

    def _cgroup_pids(self) -> set[int]:
        pids: set[int] = set()
        for path in self.limiter.hosts.values():
            with contextlib.suppress(OSError):
                pids |= {int(p) for p in (path / "cgroup.procs").read_text().split()}
        return pids

    def _stop_mininet(self) -> None:
        if self.net is None:
            return
        # Each host's veth ends and iptables rules go with its namespace when its shell, the
        # last process in it, exits: the kernel deletes all of them in one batch.  Mininet's
        # stop() would delete every interface through the host's shell first, one at a time
        # (a veth deletion waits for an RCU grace period: 5-7 s for 256 links).
        self.net.links = []
        self.net.stop()
        for node in self.net.hosts:  # reap the shells so they leave their cgroups now
            if node.shell is not None:
                with contextlib.suppress(Exception):
                    node.shell.wait(timeout=5)

    def _remove_cgroups(self) -> None:
        if self.limiter is not None:
            self.limiter.remove()

    def _delete_stray_interfaces(self) -> None:
        """An interrupted build can leave a veth end in the root namespace: delete ours."""
        ours = {li.intf_a for li in self.links} | {li.intf_b for li in self.links}
        for name in os.listdir("/sys/class/net"):
            if name in ours:
                subprocess.run(["ip", "link", "del", "dev", name], capture_output=True)

    def leftovers(self) -> dict[str, list]:
        """What of ours still exists (empty lists after a clean teardown)."""
        ours = {li.intf_a for li in self.links} | {li.intf_b for li in self.links}
        pids = list(self._shell_pids.values()) + self.impair.pids() + [p.pid for p in self._procs]
        return {
            "interfaces": sorted(ours & set(os.listdir("/sys/class/net"))),
            "processes": [p for p in pids if _alive(p)],
            "cgroups": [str(self.limiter.group)] if self.limiter and self.limiter.group.exists()
            else [],
        }

    # ---- signals ---------------------------------------------------------------------------

    def _install_signal_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGTERM, signal.SIGHUP):
            if signal.getsignal(sig) in (signal.SIG_DFL, None):
                self._prev_handlers[sig] = signal.signal(sig, _raise_terminated)

    def _restore_signal_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for sig, handler in self._prev_handlers.items():
            signal.signal(sig, handler)
        self._prev_handlers.clear()


def _raise_fd_limit(needed: int) -> None:
    """Let this process hold `needed` descriptors: a few hundred hosts pass the usual soft
    limit of 1024 (raised up to the hard limit, or past it where we may)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return
    new_hard = hard if hard == resource.RLIM_INFINITY or hard >= needed else needed
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, new_hard))
    except (ValueError, OSError) as exc:
        log.warning("open files limit %d < %d needed for this network: %s", soft, needed, exc)


MACHINE_LOCK = Path("/run/lock/edgestage-network.lock")


def hold_machine_lock() -> int:
    """One emulated network per machine: two collide (interface names, cgroups, Mininet's
    shells).  Waits, saying so once, while another process of ours holds the lock; the kernel
    releases it when that process ends, however it ends.  Returns the locked descriptor."""
    import fcntl

    MACHINE_LOCK.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(MACHINE_LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
        log.warning("another edgestage network is up (pid %s): waiting for it to come down", holder)
        fcntl.flock(fd, fcntl.LOCK_EX)
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)
    return fd


def _signal_group(pid: int, sig: int) -> None:
    """Signal the process group the pid leads (mnexec -d made it a session leader)."""
    try:
        if os.getpgid(pid) == pid and pid != os.getpgid(0):
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[-1][:1] != "Z"
    except OSError:
        return False


def _block_signals() -> set:
    if threading.current_thread() is not threading.main_thread():
        return set()
    return signal.pthread_sigmask(signal.SIG_BLOCK, _HANDLED_SIGNALS)


def _unblock_signals(previous: set) -> None:
    if threading.current_thread() is threading.main_thread():
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


__all__ = ["EmulatedNetwork", "HostInfo"]
