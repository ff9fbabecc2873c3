"""Host set-up, an object `EmulatedNetwork` (emulation/network.py) holds: it makes the hosts
Mininet built into the topology's hosts, and owns what that creates besides them: a cgroup per
host (a CPU quota where the spec gives a share; a process tracker either way) and the impairment
processes (NFQUEUE, emulation.impairment).

Each host gets one small script, written to a file with its `ip -batch` and `tc -batch` input
beside it: `ip_forward` where it forwards, the TCP timers under time dilation, addresses,
interfaces up, static routes, HTB on every egress (emulation.shaping).  All hosts run theirs at
once.  No command line holds more than one host's file names, so nothing grows with the number
of hosts in one command (a hub of 1,024 links once passed the kernel's 128 KiB limit on one
argument).  Under time dilation K the kernel and the impairment processes get each link's
dilated shape (rate / K, delay and jitter x K) while live link control keeps the emulated one.
"""

from __future__ import annotations

import os
import pty
import select
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from mininet.link import Intf, Link
from mininet.node import Host

from emulation.cgroups import CpuLimiter, cgroup_version, make_cpu_limiter
from emulation.impairment import Ingress, UserspaceImpairment
from emulation.live_links import directions
from emulation.shaping import setup_commands

RTO_MIN_SYSCTL = Path("/proc/sys/net/ipv4/tcp_rto_min_us")
DEFAULT_RTO_MIN_MS = 200.0  # Linux's TCP_RTO_MIN
DILATED_CONGESTION_CONTROL = "reno"  # built into every kernel; see tcp_timers
CONFIGURE_TIMEOUT_S = 120.0  # every host's script, all of them together

if TYPE_CHECKING:
    from topologies.spec import TopologySpec
    from topologies.topos import EdgeTopo, LinkInfo


@dataclass(frozen=True)
class HostInfo:
    name: str
    role: str
    ip: str
    cpu: float | None
    radio: str | None = None  # devices: the radio kind of the energy model (topologies/radio.py)


def tcp_timers(dilation: float) -> dict:
    """The kernel's TCP under time dilation: what is scaled by K, what is changed so that it
    need not be, and what cannot be."""
    dilated = dilation > 1
    scaled = dilated and RTO_MIN_SYSCTL.exists()
    return {"rto_min_ms": DEFAULT_RTO_MIN_MS * (dilation if scaled else 1),
            "rto_min_scaled": scaled,
            # CUBIC's window growth is a function of wall-clock time, and under K its goodput
            # fell (measured: 0.885 of the rate at K = 10 on 20 Mbit/s, 20 ms); Reno grows
            # per ACK and kept 0.956 there (docs/network-and-dilation.md: time dilation)
            "congestion_control": DILATED_CONGESTION_CONTROL if dilated else "kernel default",
            "not_scaled": "initial RTO 1 s (SYN and first data), delayed ACK 40-200 ms, RTO max "
                          "120 s: wall-clock constants of the kernel (docs/network-and-dilation.md: "
                          "time dilation)"}


class HostSetup:
    """Set-up of one network's hosts, and the cgroups and impairment processes it creates.

        setup.adopt(mininet)       # the built hosts: HostInfo and shell pid of each
        setup.cgroups()            # a group per host, every shell in its own
        setup.configure()          # forwarding, addresses, routes, shaping, impairment
        ...
        setup.end_impairment(); setup.remove_cgroups()
    """

    def __init__(self, spec: TopologySpec, topo: EdgeTopo, links: list[LinkInfo], backend: str,
                 dilation: float = 1.0, cpu_limits: bool = True) -> None:
        self.spec = spec
        self.topo = topo
        self.links = links
        self.backend = backend
        self.dilation = dilation
        self.cpu_limits = cpu_limits
        self.hosts: dict[str, HostInfo] = {}
        self.shell_pids: dict[str, int] = {}  # whose namespaces are each host's
        self.limiter: CpuLimiter | None = None
        self.impair = UserspaceImpairment()
        self._mininet = None

    def adopt(self, mininet: object) -> dict[str, HostInfo]:
        """Take the hosts a built Mininet network holds: each one's facts and shell pid.  Their
        shells, started at once, are awaited here, and the links (veth pairs) created."""
        self._mininet = mininet
        shells = [h for h in getattr(mininet, "hosts", []) if isinstance(h, QuietHost)]
        start_shells(shells)
        workdir = Path(tempfile.mkdtemp(prefix="edgestage-links-"))
        try:
            create_links(getattr(mininet, "links", []), workdir)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        for name in self.topo.hosts():
            info = self.topo.nodeInfo(name)
            self.shell_pids[name] = mininet[name].pid
            self.hosts[name] = HostInfo(name, info["role"], info["ip"].split("/")[0], info["cpu"],
                                        info.get("radio"))
        return self.hosts

    # ---- cgroups ---------------------------------------------------------------------------

    def cgroups(self) -> None:
        """A group per host (a quota where it has a CPU share), each host's shell in it."""
        if not self.cpu_limits:  # e.g. calibration: links are measured, not compute
            return
        if cgroup_version() == "none":
            if any(h.cpu for h in self.hosts.values()):
                raise ValueError("topology.cpu_shares: CPU shares need cgroups, none found")
            return
        self.limiter = make_cpu_limiter()
        for name, h in self.hosts.items():
            # Unlimited hosts get a group too: it tracks their processes for teardown.
            if h.cpu:
                self.limiter.limit(name, h.cpu)
            else:
                self.limiter.track(name)
            self.limiter.add(name, self.shell_pids[name])

    def cgroup_pids(self) -> set[int]:
        return self.limiter.pids() if self.limiter is not None else set()

    def cpu_stats(self) -> dict[str, dict[str, int]]:
        """Per CPU-limited host: its share and the group's throttling counters."""
        if self.limiter is None:
            return {}
        return {name: {"cpu_share": h.cpu, **self.limiter.stats(name)}
                for name, h in self.hosts.items() if h.cpu and name in self.limiter.hosts}

    def remove_cgroups(self) -> None:
        if self.limiter is not None:
            self.limiter.remove()

    # ---- addresses, routes, shaping, impairment --------------------------------------------

    def configure(self) -> None:
        """Forwarding, addresses, routes and egress shaping for every host, all hosts at once;
        then the impairment processes and their rules (userspace backend)."""
        ip_lines, tc_lines = self._batches()
        workdir = Path(tempfile.mkdtemp(prefix="edgestage-hosts-"))
        try:
            self._run_scripts(workdir, ip_lines, tc_lines)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        if self.backend == "userspace":
            self.impair.start()

    def end_impairment(self) -> None:
        """End the impairment processes; their rules go with the hosts' namespaces."""
        self.impair.stop(delete_rules=False)

    def _batches(self) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
        """Per host: its `ip -batch` lines and its `tc -batch` lines; the impairment of each
        link direction that needs one, at its receiving end."""
        routes = self.topo.routes()
        dynamic = self._dynamic_links()
        ip_lines = self._address_lines()
        tc_lines: dict[str, list[str]] = {h: [] for h in self.hosts}
        for index, li in enumerate(self.links):
            s = li.spec
            for k, (src, src_intf, dst, dst_intf) in enumerate(directions(li)):
                d = s.dilated(self.dilation)  # what the kernel and the impairment processes do
                is_dynamic = li.name in dynamic
                if self.backend == "netem" and is_dynamic and not d.impaired:
                    d_setup = d.model_copy(update={"queue_pkts": d.queue_pkts or 1000})
                else:
                    d_setup = d
                tc_lines[src] += [c.removeprefix("tc ") for c in
                                  setup_commands(src_intf, d_setup, self.backend, force_htb=True)]
                if self.backend == "userspace" and (d.impaired or is_dynamic):
                    self.impair.add(self._mininet[dst], Ingress(
                        dst_intf, d.delay_ms, d.jitter_ms, d.loss_pct, d.queue_pkts,
                        seed=self.spec.seed * 100_003 + index * 2 + k))
        for h in self.hosts:
            # addresses and links up first: a route needs its interface up
            ip_lines[h] += [f"route add {dst} via {via}" for dst, via in routes[h]]
        return ip_lines, tc_lines

    def _run_scripts(self, workdir: Path, ip_lines: dict[str, list[str]],
                     tc_lines: dict[str, list[str]]) -> None:
        """One script per host, its batches in files beside it; every script started before
        any is waited for."""
        forwarders = set(self.topo.forwarders())
        timer_lines = self._tcp_timer_lines()
        procs = {}
        for n, h in enumerate(self.hosts):
            lines = ["sysctl -qw net.ipv4.ip_forward=1"] if h in forwarders else []
            lines += timer_lines
            for tool, batch in (("ip", ip_lines[h]), ("tc", tc_lines[h])):
                if batch:
                    path = workdir / f"{n}.{tool}"
                    path.write_text("\n".join(batch) + "\n")
                    lines.append(f"{tool} -batch {path}")
            if not lines:
                continue
            script = workdir / f"{n}.sh"
            script.write_text("\n".join(lines) + "\n")
            procs[h] = self._mininet[h].popen(["sh", "-e", str(script)], stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + CONFIGURE_TIMEOUT_S
        failed = []
        for h, p in procs.items():
            try:
                out, err = p.communicate(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.communicate()
                failed.append(f"{h}: not done after {CONFIGURE_TIMEOUT_S:g} s")
                continue
            if p.returncode != 0:
                failed.append(f"{h}: {(err or out).decode(errors='replace').strip()}")
        if failed:
            more = f" (and {len(failed) - 5} more hosts)" if len(failed) > 5 else ""
            raise RuntimeError("configuring hosts failed: " + "; ".join(failed[:5]) + more)

    def tcp_timers(self) -> dict:
        return tcp_timers(self.dilation)

    def _tcp_timer_lines(self) -> list[str]:
        """Per host namespace under dilation: the minimum retransmission timeout x K (Linux 6.9+
        has it per network namespace) and a congestion control without wall-clock terms; the
        other timers have no knob (see tcp_timers)."""
        timers = self.tcp_timers()
        lines = []
        if timers["rto_min_scaled"]:
            lines.append(f"sysctl -qw net.ipv4.tcp_rto_min_us={round(timers['rto_min_ms'] * 1000)}")
        if self.dilation > 1:
            lines.append(f"sysctl -qw net.ipv4.tcp_congestion_control={DILATED_CONGESTION_CONTROL}")
        return lines

    def _address_lines(self) -> dict[str, list[str]]:
        """`ip -batch` lines per host: loopback up, each interface's address, each up.  Done
        here, in the parallel per-host scripts, instead of by Mininet (see QuietIntf)."""
        out = {h: ["link set dev lo up"] for h in self.hosts}
        for li in self.links:
            prefix = li.subnet.split("/")[1]
            for host, intf, ip in ((li.a, li.intf_a, li.ip_a), (li.b, li.intf_b, li.ip_b)):
                out[host] += [f"address add {ip}/{prefix} dev {intf}", f"link set dev {intf} up"]
        return out

    def _dynamic_links(self) -> set[str]:
        names = {li.name for li in self.links if li.spec.trace}
        if self.spec.channel is not None and self.spec.channel.enabled:
            names |= {li.name for li in self.links if self.hosts[li.a].role == "device"}
        return names


class QuietIntf(Intf):
    """An interface Mininet creates but does not configure: it records its address, and the
    per-host scripts of `HostSetup.configure` set addresses and bring links up, all hosts at
    once.  Mininet's own configuration is a few commands per interface through the host's shell,
    one round trip each, one host after another (4 s of a 256-device bring-up)."""

    def config(self, mac: str | None = None, ip: str | None = None, **_params: object) -> dict:
        if ip is not None:
            self.ip, self.prefixLen = ip.split("/") if "/" in ip else (ip, None)
        self.mac = mac
        return {}


class QuietHost(Host):
    """A Mininet host whose default configuration (address of its first interface, loopback
    up) is left to the per-host scripts, like its interfaces' (see QuietIntf), and whose shell
    is started without waiting for it: `start_shells` waits for every host's at once (Mininet
    waits for each in turn, two round trips per host: 10 s of a 1,024-device bring-up).  A
    command through the shell waits for it first."""

    _starting = False

    def startShell(self, mnopts: str | None = None) -> None:
        """Node.startShell (Mininet 2.3.0) without its waits: spawn the shell, nothing more."""
        if self.shell:
            super().startShell(mnopts)  # says so
            return
        opts = ("-cd" if mnopts is None else mnopts) + ("n" if self.inNamespace else "")
        cmd = ["mnexec", opts, "env", "PS1=" + chr(127), "bash", "--norc", "--noediting",
               "-is", "mininet:" + self.name]
        self.master, self.slave = pty.openpty()
        self.shell = self._popen(cmd, stdin=self.slave, stdout=self.slave, stderr=self.slave,
                                 close_fds=False)
        self.stdin = os.fdopen(self.master, "r")
        self.stdout = self.stdin
        self.pid = self.shell.pid
        self.pollOut = select.poll()
        self.pollOut.register(self.stdout)
        self.outToNode[self.stdout.fileno()] = self
        self.inToNode[self.stdin.fileno()] = self
        self.execed, self.lastCmd, self.lastPid, self.readbuf = False, None, None, ""
        self.waiting = False
        self._starting = True

    def _await_prompt(self) -> None:
        """Until the shell's first prompt: from then on it is in its own namespace."""
        while True:
            data = self.read(1024)
            if data and data[-1] == chr(127):
                break
            if self.shell.poll() is not None:
                raise RuntimeError(f"{self.name}: its shell exited ({self.shell.returncode})")
            self.pollOut.poll(1000)

    def sendCmd(self, *args: object, **kwargs: object) -> None:
        if self._starting:
            start_shells([self])
        super().sendCmd(*args, **kwargs)

    def config(self, mac: str | None = None, ip: str | None = None, **_params: object) -> dict:
        intf = self.defaultIntf()
        if intf is not None and ip is not None:
            intf.config(ip=ip)
        return {}


def start_shells(hosts: list[QuietHost]) -> None:
    """Wait for the shells of these hosts, all started already: every prompt, then each shell's
    settings (Mininet's), sent to all before any answer is awaited."""
    starting = [h for h in hosts if h._starting]
    for h in starting:
        h._await_prompt()
    for h in starting:
        h._starting = False
        h.sendCmd("unset HISTFILE; stty -echo; set +m")
    for h in starting:
        h.waitOutput()


class QuietLink(Link):
    """A veth pair Mininet records but does not create: `create_links` creates every pair of a
    network in one `ip -batch` (Mininet creates each through a host's shell, a round trip each),
    once every host's shell runs in its namespace."""

    pair: tuple[str, str, Host, Host, str | None, str | None] | None = None

    def makeIntfPair(self, intfname1: str, intfname2: str, addr1: str | None = None,
                     addr2: str | None = None, node1: Host | None = None,
                     node2: Host | None = None, deleteIntfs: bool = True) -> None:
        self.pair = (intfname1, intfname2, node1, node2, addr1, addr2)


def create_links(links: list[Link], workdir: Path) -> None:
    """Create the veth pairs of these links, each end in its host's namespace, with one
    `ip -batch` from a file (nothing in a command grows with the number of links)."""
    lines = []
    for link in links:
        if getattr(link, "pair", None) is None:
            continue
        name1, name2, node1, node2, addr1, addr2 = link.pair
        mac1 = f" address {addr1}" if addr1 else ""
        mac2 = f" address {addr2}" if addr2 else ""
        lines.append(f"link add name {name1}{mac1} netns {node1.pid} type veth "
                     f"peer name {name2}{mac2} netns {node2.pid}")
        link.pair = None
    if not lines:
        return
    batch = workdir / "links.ip"
    batch.write_text("\n".join(lines) + "\n")
    res = subprocess.run(["ip", "-batch", str(batch)], capture_output=True, text=True,
                         timeout=CONFIGURE_TIMEOUT_S)
    if res.returncode != 0:
        text = (res.stderr or res.stdout).strip()
        raise RuntimeError(f"creating links failed: {text.splitlines()[0] if text else res.returncode}")


def configure_quietly(topo: EdgeTopo) -> None:
    """Have Mininet build the topology's hosts and links with the quiet classes (a topology's
    node and link options may name the classes Mininet builds them with)."""
    for name in topo.hosts():
        topo.nodeInfo(name)["cls"] = QuietHost
    for _a, _b, info in topo.links(withInfo=True):
        info["intf"] = QuietIntf
        info["cls"] = QuietLink
