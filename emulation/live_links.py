"""Live link control, an object `EmulatedNetwork` (emulation/network.py) holds: it changes links
while the network runs (rate, delay, jitter and loss per direction: HTB and netem, or the NFQUEUE
impairment processes; links down and up) and keeps the log of every change (`link_log`,
`link_events.jsonl`: numbers with their units in their names).  It owns each link direction's
current shape (emulated units) and the change log with its clock.  Safe from other threads: every
command runs in a host's namespace through mnexec, not through the host's shell.
"""

from __future__ import annotations

import json
import logging
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from emulation.shaping import netem_change_command, rate_change_command
from nodes.clock import Clock
from topologies.topos import LinkInfo

if TYPE_CHECKING:
    from emulation.impairment import UserspaceImpairment
    from topologies.spec import LinkShape
    from topologies.topos import EdgeTopo

log = logging.getLogger("emulation.network")


def directions(li: LinkInfo) -> list[tuple[str, str, str, str]]:
    """(sender, sender intf, receiver, receiver intf) for a->b and b->a."""
    return [(li.a, li.intf_a, li.b, li.intf_b), (li.b, li.intf_b, li.a, li.intf_a)]


def ip_on_link(li: LinkInfo, host: str) -> str:
    """The host's address on that link (traffic to it crosses exactly this link)."""
    return li.ip_a if host == li.a else li.ip_b


@dataclass(eq=False)
class LiveLinks:
    """The links of one network while it runs, and the log of their changes.

    `namespace_pid(host)` names the process whose namespaces are the host's (its shell);
    `impair` is the network's NFQUEUE processes, which hold the userspace backend's delay, jitter
    and loss (with the netem backend nothing is asked of it)."""

    topo: EdgeTopo
    links: list[LinkInfo]
    backend: str
    dilation: float
    impair: UserspaceImpairment
    namespace_pid: Callable[[str], int]
    run_dir: Path | None = None
    log: list[dict] = field(default_factory=list)
    clock: Clock = field(default_factory=Clock)  # the log's: no origin until the network's clock starts

    def __post_init__(self) -> None:
        # emulated: what live changes start from, per (sender, its intf)
        self._shapes: dict[tuple[str, str], LinkShape] = {
            (src, src_intf): li.spec.shape() for li in self.links for src, src_intf, _, _ in directions(li)}
        self._log_lock = threading.Lock()

    def link(self, a: str, b: str) -> LinkInfo:
        for li in self.links:
            if {li.a, li.b} == {a, b}:
                return li
        raise ValueError(f"no link between {a!r} and {b!r}")

    def state(self, sender: str, intf: str) -> LinkShape:
        return self._shapes[(sender, intf)]

    def set_link(self, a: str, b: str, *, bw_mbit: float | None = None,
                 delay_ms: float | None = None, jitter_ms: float | None = None,
                 loss_pct: float | None = None, direction: str | None = None,
                 source: str = "api", extra: dict | None = None) -> None:
        """Change a link live (both directions, or only `direction` = sender's name), in
        emulated units (the network applies its time dilation); `extra` is added to the logged
        change (e.g. the channel model's distance and SNR).  Values are checked as the
        scenario's are (ValueError naming the field)."""
        li = self.link(a, b)
        changes = {k: v for k, v in (("bw_mbit", bw_mbit), ("delay_ms", delay_ms),
                                      ("jitter_ms", jitter_ms), ("loss_pct", loss_pct))
                   if v is not None}
        if not changes:
            return
        for src, src_intf, dst, dst_intf in directions(li):
            if direction is not None and direction != src:
                continue
            new = self._shapes[(src, src_intf)].changed(**changes)
            wall = new.dilated(self.dilation)  # what the kernel does under time dilation
            if bw_mbit is not None:
                self._run_in(src, rate_change_command(src_intf, wall.bw_mbit))
            if changes.keys() - {"bw_mbit"}:
                if self.backend == "netem":
                    self._run_in(src, netem_change_command(src_intf, wall, has_htb=True))
                elif not self.impair.update(dst, dst_intf, delay_ms=wall.delay_ms,
                                            jitter_ms=wall.jitter_ms, loss_pct=wall.loss_pct):
                    raise ValueError(f"link {li.name}: delay/jitter/loss were not set up to vary "
                                     "(give it a delay, a trace or the channel model)")
            self._shapes[(src, src_intf)] = new
            self.record(li, source, direction=f"{src}->{dst}", **changes, **(extra or {}))

    def link_down(self, a: str, b: str, source: str = "api") -> None:
        li = self.link(a, b)
        for host, intf in ((li.a, li.intf_a), (li.b, li.intf_b)):
            self._run_in(host, ["ip", "link", "set", "dev", intf, "down"])
        self.record(li, source, state="down")

    def link_up(self, a: str, b: str, source: str = "api") -> None:
        li = self.link(a, b)
        for host, intf in ((li.a, li.intf_a), (li.b, li.intf_b)):
            self._run_in(host, ["ip", "link", "set", "dev", intf, "up"])
        # The kernel dropped the routes through the interface when it went down.
        routes = self.topo.routes()
        for host in (li.a, li.b):
            batch = "".join(f"route replace {dst} via {via}\n" for dst, via in routes[host])
            if batch:
                self._run_in(host, ["ip", "-batch", "-"], stdin=batch)
        self.record(li, source, state="up")

    def _run_in(self, host: str, argv: list[str], stdin: str | None = None) -> None:
        """Run a command in a host's namespace without its shell (safe from other threads)."""
        res = subprocess.run(["mnexec", "-a", str(self.namespace_pid(host)), *argv], input=stdin,
                             capture_output=True, text=True, timeout=30)
        if res.returncode != 0:
            raise RuntimeError(f"{host}: {' '.join(argv)}: {res.stderr.strip()}")

    def record(self, li: LinkInfo | None, source: str, **values: object) -> None:
        """One change in the log (and in `run_dir/link_events.jsonl`)."""
        now = time.time()
        started = self.clock.wall_origin is not None
        entry = {"wall_t": now, "t": round(self.clock.at(now), 6) if started else None,
                 "link": li.name if li else None, "source": source, **values}
        with self._log_lock:
            self.log.append(entry)
            if self.run_dir is not None:
                self.run_dir.mkdir(parents=True, exist_ok=True)
                with open(self.run_dir / "link_events.jsonl", "a") as f:
                    f.write(json.dumps(entry) + "\n")
        if li is not None:
            log.info("link %s: %s", li.name, entry)
