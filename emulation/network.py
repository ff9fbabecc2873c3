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

The network holds three parts, each owning its state: `setup` (emulation/host_config.py:
the hosts, their shells, cgroups and impairment processes), `live` (emulation/live_links.py:
each link direction's current shape and the log of changes) and `guard` (emulation/guard.py:
the machine lock, the stop signals, the atexit last resort).

What `start()` does, in order: take the machine lock (one network per machine; SIGTERM and
SIGHUP unwind like Ctrl-C from here on); choose the impairment backend (logged); build Mininet
with routed `Host`s, plain `Link`s (veth) and `controller=None` (no switch at all, so no OVS and
no bridge; Mininet creates the veths but configures nothing); put every host's shell in its own
cgroup (a CPU quota where the spec gives a share; a process tracker either way); per host, all
at once, one script from a file: `ip_forward` where it forwards, addresses, interfaces up and
static routes (`ip -batch FILE`), HTB on every egress (`tc -batch FILE`, emulation.shaping);
then the impairment (netem leaves, or NFQUEUE processes and rules, emulation.impairment);
finally the time-varying behaviour (traces, channel model and mobility, scheduled down/up;
emulation.dynamics) unless `dynamics=False`.  No command grows with the number of hosts; a
limit of the machine that is still hit (arguments, open files, memory) is a ValueError of one
line.

`stop()` undoes it by id, each step guarded so one failure does not skip the rest: dynamics
thread; processes started with `popen()` (their process group, by pid) and anything else left
in a host's cgroup (by pid); NFQUEUE processes; Mininet's `net.stop()` (host shells: with the
last process in a namespace gone, the kernel deletes its veth ends and iptables rules in one
batch); cgroups (the directories created); any interface of ours still in the root namespace
(by name).  It runs on normal exit, on exceptions, and on SIGINT, SIGTERM and SIGHUP (which
unwind); those signals wait while it runs and come after.  `atexit` is a last resort.

Link changes (API, traces, channel model, faults) are appended to `net.link_log` and, with a
`run_dir`, to `run_dir/link_events.jsonl`: one JSON object per change with `wall_t` (Unix time),
`t` (emulated seconds on the clock of events and traces, nodes/clock.py: from the network coming
up, or from `start_clock(clock)` for a network made with `hold_dynamics=True`, as a run's is,
whose clock starts at its first measured request; None before), `link`, `source` and the new
values.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import resource
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

from emulation.cgroups import CpuLimiter
from emulation.guard import MACHINE_LOCK, RunGuard, end_processes, hold_machine_lock
from emulation.host_config import HostInfo, HostSetup, configure_quietly
from emulation.impairment import UserspaceImpairment, choose_backend
from emulation.live_links import LiveLinks, directions, ip_on_link
from nodes.clock import Clock
from nodes.runtime.launcher import die_with_parent
from topologies.spec import LinkShape, TopologySpec
from topologies.topos import EdgeTopo, LinkInfo, topology_from_spec

log = logging.getLogger(__name__)
# Largest network whose reachability() checks every pair by default (see reachability).
ALL_PAIRS_MAX = 32
# Descriptors this process holds per host: five (the shell's pty, both ends; the impairment
# process's three pipes), plus popen()s' pipes: with room for those, eight.
_FDS_PER_HOST = 8
SERVERS = ("edge", "cloud")  # the roles that serve requests
# What bring-up hits when a network is too big for this machine: a one-line error, not a traceback
_LIMITS = (errno.E2BIG, errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.EAGAIN, errno.ENOSPC)


class EmulatedNetwork:
    """A running emulated edge network (see the module docstring).

    It holds three parts, each owning its state: `setup` (HostSetup: the hosts, their shells,
    cgroups and impairment processes), `live` (LiveLinks: each link's current shape and the log
    of changes) and `guard` (RunGuard: the machine lock, the stop signals, the atexit resort)."""

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
        self.backend = choose_backend(spec.impairment)
        self.topo: EdgeTopo = topology_from_spec(spec)  # validates link names before anything runs
        configure_quietly(self.topo)
        self.links: list[LinkInfo] = list(self.topo.link_infos)
        _raise_fd_limit(len(self.topo.hosts()) * _FDS_PER_HOST + 256)
        self.setup = HostSetup(spec, self.topo, self.links, self.backend, self.dilation, cpu_limits)
        self.live = LiveLinks(self.topo, self.links, self.backend, self.dilation,
                              self.setup.impair, self.namespace_pid, self.run_dir)
        self.guard = RunGuard()
        self.cpu_stats: dict[str, dict[str, int]] = {}
        self.net = None  # Mininet's
        self.dynamics = None
        self.bringup_s: float | None = None
        self.wall_started_at: float | None = None
        self._procs: list[subprocess.Popen] = []  # popen()'s
        self._started = False
        self._stopped = False

    # the parts' state, where the rest of the project reads it

    @property
    def hosts(self) -> dict[str, HostInfo]:
        return self.setup.hosts

    @property
    def limiter(self) -> CpuLimiter | None:
        """The hosts' cgroups (None without CPU limits)."""
        return self.setup.limiter

    @property
    def impair(self) -> UserspaceImpairment:
        """The NFQUEUE impairment processes (none with the netem backend)."""
        return self.setup.impair

    @property
    def cpu_limits(self) -> bool:
        return self.setup.cpu_limits

    @property
    def link_log(self) -> list[dict]:
        """Every link change so far (see LiveLinks.record)."""
        return self.live.log

    @property
    def clock(self) -> Clock:
        """The clock of events, traces and the channel model (see start_clock); no origin before."""
        return self.live.clock

    # ---- lifecycle -------------------------------------------------------------------------

    def __enter__(self) -> EmulatedNetwork:
        with contextlib.ExitStack() as on_failure:
            on_failure.callback(self.stop)  # a half-built network is taken down, by id
            self.start()
            on_failure.pop_all()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> EmulatedNetwork:
        if self._started:
            raise RuntimeError("network already started")
        self._started = True
        self.guard.enter(self.stop)
        began = time.monotonic()
        try:
            self._bring_up()
        except OSError as exc:
            if exc.errno not in _LIMITS:
                raise
            raise ValueError(f"a network of {len(self.topo.hosts())} hosts is past a limit of this "
                             f"machine: {exc.strerror or exc}") from exc
        self.bringup_s = time.monotonic() - began
        self.wall_started_at = time.time()
        self.live.record(None, "start", backend=self.backend, seed=self.spec.seed)
        if self.run_dir is not None:
            (self.run_dir / "network.json").write_text(json.dumps(self.manifest(), indent=1))
        if self.dynamics_enabled:
            from emulation.dynamics import LinkDynamics

            self.dynamics = LinkDynamics(self)
            if self.dynamics.has_work():
                self.dynamics.start()
        if not self.hold_dynamics:
            self.start_clock(Clock(wall_origin=self.wall_started_at, dilation=self.dilation))
        return self

    def _bring_up(self) -> None:
        from mininet.log import lg
        from mininet.net import Mininet
        from mininet.node import Host

        if lg.getEffectiveLevel() < logging.WARNING:  # Mininet prints "*** ..." otherwise
            lg.setLevel(logging.WARNING)
        log.info("impairment backend: %s (asked: %s)", self.backend, self.spec.impairment)
        self.net = Mininet(topo=self.topo, host=Host, controller=None, build=False,
                           autoSetMacs=False, waitConnected=False)
        self.net.build()
        self.setup.adopt(self.net)
        self.setup.cgroups()
        self.setup.configure()

    def start_clock(self, clock: Clock) -> None:
        """t = 0 of events, traces and the channel model: the clock's origin (may be ahead)."""
        if clock.wall_origin is None or clock.dilation != self.dilation:
            raise ValueError("the network's clock needs an origin and the network's time dilation")
        self.live.clock = clock
        if self.dynamics is not None:
            self.dynamics.set_origin(clock.wall_origin)

    def stop(self) -> None:
        """Tear down everything this network created; safe to call more than once.  The stop
        signals wait until it is done (emulation/guard.py)."""
        if not self._started or self._stopped:
            return
        self._stopped = True
        with self.guard.leaving():
            if self.guard.locked:  # otherwise it never came up: nothing of ours exists
                self._teardown()

    def _teardown(self) -> None:
        steps = [
            ("dynamics", self._stop_dynamics),
            ("processes", self._stop_processes),
            ("cpu stats", self._collect_cpu_stats),
            ("cgroup processes", self._end_cgroup_members),
            # rules go with the namespaces (see _stop_mininet): end the processes only
            ("impairment", self.setup.end_impairment),
            ("mininet", self._stop_mininet),
            ("cgroups", self.setup.remove_cgroups),
            ("interfaces", self._delete_stray_interfaces),
        ]
        for what, step in steps:
            try:
                step()
            except Exception as exc:  # keep going: the next steps still have things to remove
                log.warning("teardown %s: %s", what, exc)
        if self.run_dir is not None:
            with contextlib.suppress(OSError):
                self.run_dir.mkdir(parents=True, exist_ok=True)
                (self.run_dir / "cpu_stats.json").write_text(json.dumps(self.cpu_stats, indent=1))

    # ---- live link control (LiveLinks) -----------------------------------------------------

    def set_link(self, a: str, b: str, *, bw_mbit: float | None = None,
                 delay_ms: float | None = None, jitter_ms: float | None = None,
                 loss_pct: float | None = None, direction: str | None = None,
                 source: str = "api", extra: dict | None = None) -> None:
        """Change a link live, in emulated units (see LiveLinks.set_link)."""
        self.live.set_link(a, b, bw_mbit=bw_mbit, delay_ms=delay_ms, jitter_ms=jitter_ms,
                           loss_pct=loss_pct, direction=direction, source=source, extra=extra)

    def link_down(self, a: str, b: str, source: str = "api") -> None:
        self.live.link_down(a, b, source)

    def link_up(self, a: str, b: str, source: str = "api") -> None:
        self.live.link_up(a, b, source)

    def link(self, a: str, b: str) -> LinkInfo:
        return self.live.link(a, b)

    def state(self, sender: str, intf: str) -> LinkShape:
        """A link direction's current shape, in emulated units."""
        return self.live.state(sender, intf)

    @staticmethod
    def directions(li: LinkInfo) -> list[tuple[str, str, str, str]]:
        return directions(li)

    @staticmethod
    def ip_on_link(li: LinkInfo, host: str) -> str:
        return ip_on_link(li, host)

    def tcp_timers(self) -> dict:
        return self.setup.tcp_timers()

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
        return self.setup.shell_pids[host]

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
            "wall_started_at": self.wall_started_at,
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
        end_processes(self._procs)

    def _collect_cpu_stats(self) -> None:
        self.cpu_stats = self.setup.cpu_stats()

    def _end_cgroup_members(self) -> None:
        """Whatever is still in a host's group was started in that host: end it by pid."""
        if self.limiter is not None:
            self.limiter.end_processes(spare=set(self.setup.shell_pids.values()))

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

    def _delete_stray_interfaces(self) -> None:
        """An interrupted build can leave a veth end in the root namespace: delete ours."""
        ours = {li.intf_a for li in self.links} | {li.intf_b for li in self.links}
        for name in os.listdir("/sys/class/net"):
            if name in ours:
                subprocess.run(["ip", "link", "del", "dev", name], capture_output=True)

    def leftovers(self) -> dict[str, list]:
        """What of ours still exists (empty lists after a clean teardown)."""
        ours = {li.intf_a for li in self.links} | {li.intf_b for li in self.links}
        pids = [*self.setup.shell_pids.values(), *self.impair.pids(), *(p.pid for p in self._procs)]
        return {
            "interfaces": sorted(ours & set(os.listdir("/sys/class/net"))),
            "processes": [p for p in pids if _alive(p)],
            "cgroups": [str(self.limiter.group)] if self.limiter and self.limiter.group.exists()
            else [],
        }


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


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[-1][:1] != "Z"
    except OSError:
        return False


# the machine lock is the guard's (emulation/guard.py); here too for the callers of before
__all__ = ["ALL_PAIRS_MAX", "MACHINE_LOCK", "EmulatedNetwork", "HostInfo", "hold_machine_lock"]
