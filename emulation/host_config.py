"""Host configuration, the part of EmulatedNetwork (emulation/network.py) that makes built Mininet
hosts into the topology's hosts: a cgroup per host (a CPU quota where the spec gives a share),
and per host, in parallel, `ip_forward` where it forwards, addresses, interfaces up, static routes
(one `ip -batch`) and HTB on every egress (`tc -batch`, emulation.shaping), then the impairment
(netem leaves, or NFQUEUE processes, emulation.impairment).  Under time dilation K the kernel and
the impairment processes get each link's dilated shape (rate / K, delay and jitter x K) while
the network's state and logs keep the emulated one.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

from mininet.link import Intf
from mininet.node import Host

from emulation.cgroups import CpuLimiter, cgroup_version, make_cpu_limiter
from emulation.impairment import Ingress, UserspaceImpairment
from emulation.shaping import setup_commands

RTO_MIN_SYSCTL = Path("/proc/sys/net/ipv4/tcp_rto_min_us")
DEFAULT_RTO_MIN_MS = 200.0  # Linux's TCP_RTO_MIN
DILATED_CONGESTION_CONTROL = "reno"  # built into every kernel; see tcp_timers

if TYPE_CHECKING:
    from topologies.spec import LinkShape, TopologySpec
    from topologies.topos import EdgeTopo, LinkInfo


class HostConfiguration:
    """Mixed into EmulatedNetwork, whose bring-up calls these once Mininet has built the hosts."""

    spec: TopologySpec
    topo: EdgeTopo
    links: list[LinkInfo]
    hosts: dict
    net: object
    backend: str
    dilation: float
    cpu_limits: bool
    limiter: CpuLimiter | None
    impair: UserspaceImpairment
    _state: dict[tuple[str, str], LinkShape]
    _dynamic_ingress: set[str]
    _shell_pids: dict[str, int]

    def _setup_cgroups(self) -> None:
        if not self.cpu_limits:  # e.g. calibration: links are measured, not compute
            return
        if cgroup_version() == "none":
            if any(h.cpu for h in self.hosts.values()):
                raise ValueError("topology.compute: CPU shares need cgroups, none found")
            return
        self.limiter = make_cpu_limiter()
        for name, h in self.hosts.items():
            # Unlimited hosts get a group too: it tracks their processes for teardown.
            if h.cpu:
                self.limiter.limit(name, h.cpu)
            else:
                self._unlimited_group(name)
            self.limiter.add(name, self._shell_pids[name])

    def _unlimited_group(self, name: str) -> None:
        lim = self.limiter
        path = lim.group / name
        lim._mkdir(path)
        lim.hosts[name] = path

    def _configure_hosts(self) -> None:
        """Forwarding, routes and egress shaping for every host, all hosts in parallel."""
        routes = self.topo.routes()
        forwarders = set(self.topo.forwarders())
        dynamic = self._dynamic_links()
        scripts: dict[str, list[str]] = {h: [] for h in self.hosts}
        tc: dict[str, list[str]] = {h: [] for h in self.hosts}
        addresses = self._address_lines()
        for index, li in enumerate(self.links):
            s = li.spec
            for k, (src, src_intf, dst, dst_intf) in enumerate(self.directions(li)):
                self._state[(src, src_intf)] = s.shape()  # emulated: what live changes start from
                d = s.dilated(self.dilation)  # what the kernel and the impairment processes do
                is_dynamic = li.name in dynamic
                if self.backend == "netem" and is_dynamic and not d.impaired:
                    d_setup = d.model_copy(update={"queue_pkts": d.queue_pkts or 1000})
                else:
                    d_setup = d
                tc[src] += [c.removeprefix("tc ") for c in
                            setup_commands(src_intf, d_setup, self.backend, force_htb=True)]
                if self.backend == "userspace" and (d.impaired or is_dynamic):
                    self.impair.add(self.net[dst], Ingress(
                        dst_intf, d.delay_ms, d.jitter_ms, d.loss_pct, d.queue_pkts,
                        seed=self.spec.seed * 100_003 + index * 2 + k))
                    self._dynamic_ingress.add(dst_intf)
        for h in self.hosts:
            if h in forwarders:
                scripts[h].append("sysctl -qw net.ipv4.ip_forward=1")
            scripts[h] += self._tcp_timer_lines()
            # addresses and links up first: a route needs its interface up
            lines = addresses[h] + [f"route add {dst} via {via}" for dst, via in routes[h]]
            batch = "\n".join(lines)
            scripts[h].append(f"ip -batch - <<'EOF'\n{batch}\nEOF")
            if tc[h]:
                scripts[h].append("tc -batch - <<'EOF'\n" + "\n".join(tc[h]) + "\nEOF")
        procs = {
            h: self.net[h].popen(["sh", "-ec", "\n".join(lines)], stdin=subprocess.DEVNULL)
            for h, lines in scripts.items() if lines
        }
        failed = []
        for h, p in procs.items():
            out, err = p.communicate(timeout=60)
            if p.returncode != 0:
                failed.append(f"{h}: {(err or out).decode(errors='replace').strip()}")
        if failed:
            raise RuntimeError("configuring hosts failed: " + "; ".join(failed))

    def tcp_timers(self) -> dict:
        """The kernel's TCP under time dilation: what is scaled by K, what is changed so that it
        need not be, and what cannot be."""
        dilated = self.dilation > 1
        scaled = dilated and RTO_MIN_SYSCTL.exists()
        return {"rto_min_ms": DEFAULT_RTO_MIN_MS * (self.dilation if scaled else 1),
                "rto_min_scaled": scaled,
                # CUBIC's window growth is a function of wall-clock time, and under K its goodput
                # fell (measured: 0.885 of the rate at K = 10 on 20 Mbit/s, 20 ms); Reno grows
                # per ACK and kept 0.956 there (README: time dilation)
                "congestion_control": DILATED_CONGESTION_CONTROL if dilated else "kernel default",
                "not_scaled": "initial RTO 1 s (SYN and first data), delayed ACK 40-200 ms, RTO max "
                              "120 s: wall-clock constants of the kernel (README: time dilation)"}

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
        here, in the parallel per-host scripts, instead of by Mininet (see _QuietIntf)."""
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
    per-host scripts of `_configure_hosts` set addresses and bring links up, all hosts at once.
    Mininet's own configuration is a few commands per interface through the host's shell, one
    round trip each, one host after another (4 s of a 256-device bring-up)."""

    def config(self, mac: str | None = None, ip: str | None = None, **_params: object) -> dict:
        if ip is not None:
            self.ip, self.prefixLen = ip.split("/") if "/" in ip else (ip, None)
        self.mac = mac
        return {}


class QuietHost(Host):
    """A Mininet host whose default configuration (address of its first interface, loopback
    up) is left to the per-host scripts, like its interfaces' (see QuietIntf)."""

    def config(self, mac: str | None = None, ip: str | None = None, **_params: object) -> dict:
        intf = self.defaultIntf()
        if intf is not None and ip is not None:
            intf.config(ip=ip)
        return {}


def configure_quietly(topo: EdgeTopo) -> None:
    """Have Mininet build the topology's hosts and links with the quiet classes (a topology's
    node and link options may name the classes Mininet builds them with)."""
    for name in topo.hosts():
        topo.nodeInfo(name)["cls"] = QuietHost
    for _a, _b, info in topo.links(withInfo=True):
        info["intf"] = QuietIntf
