"""Packet capture: one tcpdump per link, inside the namespace of the link's `a` end.

Every link is captured once, on the interface of its first endpoint (a device's interface for a
device link, the access point's for the access link, the edge server's for the backhaul), so each
packet crossing a link is in exactly one file: `pcap/<link>.<interface>.pcap` (pcap format,
readable by tshark and Wireshark).  tcpdump taps the interface before the receiving host's
netfilter hooks and after the sending host's qdisc, i.e. where the packet is on the wire.
`-U` writes each packet as it comes, so an interrupted run keeps what was captured; `-Z root`
keeps tcpdump's privileges so it can write into a root-owned run directory.  Each tcpdump is
started with `net.popen` (tracked, ended by pid at teardown if `stop()` did not run) and stopped
with SIGTERM (emulation.guard.end_processes), after which it flushes and prints its drop counts,
which go into the manifest.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from emulation.guard import end_processes
from emulation.network import EmulatedNetwork

_COUNTS = re.compile(r"(\d+) packets? (captured|received by filter|dropped by kernel)")


@dataclass
class LinkCapture:
    link: str
    host: str
    interface: str
    path: Path
    log_path: Path
    process: subprocess.Popen | None = None
    stats: dict[str, int] = field(default_factory=dict)


class Capture:
    def __init__(self, net: EmulatedNetwork, pcap_dir: Path, snaplen: int = 0) -> None:
        self.net = net
        self.dir = Path(pcap_dir)
        self.snaplen = snaplen
        self.links: list[LinkCapture] = []

    def start(self, timeout: float = 10.0) -> None:
        tcpdump = shutil.which("tcpdump") or "/usr/bin/tcpdump"
        self.dir.mkdir(parents=True, exist_ok=True)
        for li in self.net.links:
            cap = LinkCapture(li.name, li.a, li.intf_a, self.dir / f"{li.name}.{li.intf_a}.pcap",
                              self.dir / f"{li.name}.{li.intf_a}.log")
            # --immediate-mode: otherwise TPACKET_V3 hands packets over per block or after a 1 s
            # timeout, and those of the last second are still in the ring when tcpdump is stopped
            argv = [tcpdump, "-i", cap.interface, "-n", "-U", "--immediate-mode", "-Z", "root",
                    "-s", str(self.snaplen), "-w", str(cap.path)]
            with cap.log_path.open("wb") as log:
                cap.process = self.net.popen(cap.host, argv, cpu_limited=False, stdout=log, stderr=log)
            self.links.append(cap)
        # tcpdump says "listening on" once its socket is open: only then is the link covered
        deadline = time.monotonic() + timeout
        for cap in self.links:
            while "listening on" not in _read(cap.log_path):
                if cap.process is not None and cap.process.poll() is not None:
                    raise RuntimeError(f"tcpdump on {cap.host}:{cap.interface} exited: "
                                       f"{_read(cap.log_path).strip()}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"tcpdump on {cap.host}:{cap.interface} not listening "
                                       f"after {timeout:g} s")
                time.sleep(0.05)

    def stop(self) -> None:
        """SIGTERM to every tcpdump at once (each flushes and prints its counts), SIGKILL to any
        that has not exited 10 s later."""
        end_processes([cap.process for cap in self.links if cap.process is not None], grace_s=10)
        for cap in self.links:
            for number, what in _COUNTS.findall(_read(cap.log_path)):
                cap.stats[what.replace(" ", "_")] = int(number)

    def manifest(self) -> list[dict]:
        return [{"link": c.link, "host": c.host, "interface": c.interface,
                 "file": str(c.path.relative_to(self.dir.parent)), **c.stats} for c in self.links]


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""
