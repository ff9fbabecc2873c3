"""`edgestage calibrate SCENARIO [--json]`: configured vs measured, every link, both directions.

Python: `calibrate(spec) -> list[dict]` (brings the topology up, measures, tears down) or
`measure_links(net)` on a running `EmulatedNetwork`.  One row per link direction:

    link, direction, backend,
    bw_mbit, bw_measured_mbit        iperf3 TCP goodput, sender -> receiver (first second omitted)
    rtt_ms, rtt_measured_ms          UDP echo with user-space timestamps (median)
    delay_ms, delay_measured_ms      one-way delay of this direction (median)
    jitter_ms, jitter_measured_ms    standard deviation of this direction's one-way delay
    loss_pct, loss_measured_pct      one-way loss of UDP probes, with probes_sent
    ok_bw, ok_rtt, ok_loss, ok_jitter   inside the project's fidelity targets (None: no target)

Targets: goodput >= 0.93 x configured (1-100 Mbit/s); RTT within 0.5 ms + 3 %; measured loss
inside the 99 % binomial interval of the configured rate; jitter std within 20 %.

Why not `ping`: it takes RTT from the kernel's receive timestamp, before netfilter, so it cannot
see delay that the userspace backend adds at the receiver's ingress.  How the bandwidth of a
lossy link is measured: TCP goodput under random loss is set by the loss (Mathis et al.), not by
the rate, so loss is switched off on that direction while iperf3 runs (logged in the link
events) and measured on its own with probes.  Probes for jitter are spaced at least four jitters
apart so that the order-preserving delay line does not narrow the distribution.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import time

from emulation.network import EmulatedNetwork
from topologies.topos import LinkInfo

_ports = itertools.count(5301)
GOODPUT_TARGET = 0.93


def calibrate(spec: object, duration: float = 2.0) -> list[dict]:
    """Bring the topology up (static: no traces or mobility), measure every link, tear down."""
    with EmulatedNetwork(spec, dynamics=False, cpu_limits=False) as net:
        return measure_links(net, duration=duration)


def measure_links(net: EmulatedNetwork, duration: float = 2.0,
                  links: list[LinkInfo] | None = None) -> list[dict]:
    rows = []
    for li in links or net.links:
        rows += measure_link(net, li, duration=duration)
    return rows


def measure_link(net: EmulatedNetwork, li: LinkInfo, duration: float = 2.0,
                 loss_probes: int = 2000) -> list[dict]:
    """Two rows (a->b, b->a) of configured and measured figures for one link.  Under the
    network's time dilation K everything is in emulated units: probes K times further apart,
    iperf3 K times longer, measured times / K and rates x K."""
    k = net.dilation
    rows = []
    for src, _, dst, _ in net.directions(li):
        rows.append(_configured(net, li, src, dst))
    # Delay and jitter: one echo run gives both directions' one-way delays.
    jitter = max(li.spec.jitter_ms, 0.0)
    interval = max(0.005, 4 * jitter / 1000)
    count = max(50, min(300, int(3.0 / interval)))
    probe = _probe(net, li.a, li.b, net.ip_on_link(li, li.b), count, interval * k, wait=k)
    for row, one_way in ((rows[0], probe["fwd_ms"]), (rows[1], probe["rev_ms"])):
        row["delay_measured_ms"] = one_way["median"] / k
        row["jitter_measured_ms"] = one_way["std"] / k
        row["rtt_measured_ms"] = probe["rtt_ms"]["median"] / k
    # Loss: many small probes, only where a loss is configured (otherwise the echo run counts).
    if li.spec.loss_pct > 0:
        probe = _probe(net, li.a, li.b, net.ip_on_link(li, li.b), loss_probes, 0.001 * k, wait=k)
    rows[0]["loss_measured_pct"], rows[0]["probes_sent"] = probe["fwd_loss_pct"], probe["sent"]
    rows[1]["loss_measured_pct"] = probe["rev_loss_pct"]
    rows[1]["probes_sent"] = probe["server_received"]
    # Bandwidth, each direction, with loss switched off for the run (see module docstring).
    for row, (src, _, dst, _) in zip(rows, net.directions(li), strict=True):
        if li.spec.bw_mbit is None:
            row["bw_measured_mbit"] = None
            continue
        lossy = li.spec.loss_pct > 0
        if lossy:
            net.set_link(li.a, li.b, loss_pct=0.0, direction=src, source="calibrate")
        try:
            wall = iperf3(net, src, dst, net.ip_on_link(li, dst), duration * k, omit=k)
            row["bw_measured_mbit"] = wall * k
        finally:
            if lossy:
                net.set_link(li.a, li.b, loss_pct=li.spec.loss_pct, direction=src, source="calibrate")
    for row in rows:
        row.update(check_targets(row))
    return rows


def _configured(net: EmulatedNetwork, li: LinkInfo, src: str, dst: str) -> dict:
    s = li.spec
    return {
        "link": li.name, "direction": f"{src}->{dst}", "backend": net.backend,
        "time_dilation": net.dilation,
        "bw_mbit": s.bw_mbit, "bw_measured_mbit": None,
        "rtt_ms": 2 * s.delay_ms, "rtt_measured_ms": None,
        "delay_ms": s.delay_ms, "delay_measured_ms": None,
        "jitter_ms": s.jitter_ms, "jitter_measured_ms": None,
        "loss_pct": s.loss_pct, "loss_measured_pct": None, "probes_sent": None,
    }


def check_targets(row: dict) -> dict:
    """The fidelity targets as booleans (None where the row has no such target or figure)."""
    out: dict[str, bool | None] = {"ok_bw": None, "ok_rtt": None, "ok_loss": None,
                                   "ok_jitter": None}
    bw, got = row.get("bw_mbit"), row.get("bw_measured_mbit")
    if bw is not None and got is not None and 1 <= bw <= 100:
        out["ok_bw"] = got >= GOODPUT_TARGET * bw
    rtt, got = row.get("rtt_ms"), row.get("rtt_measured_ms")
    if rtt is not None and got is not None:
        out["ok_rtt"] = abs(got - rtt) <= 0.5 + 0.03 * rtt
    loss, got, n = row.get("loss_pct"), row.get("loss_measured_pct"), row.get("probes_sent")
    if loss is not None and got is not None and n:
        lo, hi = binomial_interval(n, loss / 100)
        out["ok_loss"] = lo <= round(got / 100 * n) <= hi
    jit, got = row.get("jitter_ms"), row.get("jitter_measured_ms")
    if jit and got is not None:
        out["ok_jitter"] = abs(got - jit) <= 0.2 * jit
    return out


def binomial_interval(n: int, p: float, level: float = 0.99) -> tuple[int, int]:
    """Central interval of the number of losses out of n at rate p."""
    from scipy.stats import binom

    if p <= 0:
        return (0, 0)
    lo, hi = binom.interval(level, n, p)
    return int(lo), int(hi)


def iperf3(net: EmulatedNetwork, src: str, dst: str, dst_ip: str, duration: float,
           omit: float = 1.0) -> float:
    """TCP goodput src -> dst in Mbit/s (receiver's count, after `omit` seconds)."""
    port = next(_ports)
    server = net.popen(dst, ["iperf3", "-s", "-1", "-p", str(port)], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, cpu_limited=False)
    try:
        for _ in range(50):
            client = net.popen(src, ["iperf3", "-c", dst_ip, "-p", str(port), "-t", f"{duration:g}",
                                     "-O", f"{omit:g}", "-J"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, cpu_limited=False)
            out, _ = client.communicate(timeout=duration + omit + 30)
            result = json.loads(out or b"{}")
            if "error" in result and "connect" in result["error"]:
                time.sleep(0.1)  # server not listening yet
                continue
            if "error" in result:
                raise RuntimeError(f"iperf3 {src}->{dst}: {result['error']}")
            return result["end"]["sum_received"]["bits_per_second"] / 1e6
        raise RuntimeError(f"iperf3 {src}->{dst}: server never listened")
    finally:
        if server.poll() is None:
            server.terminate()
        server.wait(timeout=5)


def _probe(net: EmulatedNetwork, client: str, server: str, server_ip: str, count: int,
           interval: float, wait: float = 1.0) -> dict:
    """`wait`: seconds for the last answers (time-dilated links answer K times later)."""
    port = next(_ports)
    srv = net.popen(server, [sys.executable, "-m", "emulation.probe", "serve", str(port)],
                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, cpu_limited=False)
    try:
        if srv.stdout.readline().strip() != b"ready":
            raise RuntimeError(f"probe server on {server} did not start")
        cli = net.popen(client, [sys.executable, "-m", "emulation.probe", "send", server_ip,
                                 str(port), "--count", str(count), "--interval", f"{interval:g}",
                                 "--wait", f"{wait:g}"],
                        stdout=subprocess.PIPE, cpu_limited=False)
        out, _ = cli.communicate(timeout=count * interval + wait + 60)
        return json.loads(out)
    finally:
        srv.stdin.close()
        srv.wait(timeout=5)
        srv.stdout.close()


def format_table(rows: list[dict]) -> str:
    def f(v: object, nd: int = 1) -> str:
        if v is None:
            return "-"
        if isinstance(v, float):
            return f"{v:.{nd}f}"
        return str(v)

    def ok(v: bool | None) -> str:
        return {True: "ok", False: "OFF", None: ""}[v]

    head = (f"{'link':<12} {'direction':<14} {'bw':>6} {'meas':>6} {'':3} {'rtt':>6} {'meas':>7}"
            f" {'':3} {'jit':>4} {'meas':>5} {'':3} {'loss%':>5} {'meas':>5} {'':3}")
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r['link']:<12} {r['direction']:<14} {f(r['bw_mbit']):>6} "
            f"{f(r['bw_measured_mbit']):>6} {ok(r['ok_bw']):3} {f(r['rtt_ms']):>6} "
            f"{f(r['rtt_measured_ms'], 2):>7} {ok(r['ok_rtt']):3} {f(r['jitter_ms']):>4} "
            f"{f(r['jitter_measured_ms'], 2):>5} {ok(r['ok_jitter']):3} {f(r['loss_pct'], 2):>5} "
            f"{f(r['loss_measured_pct'], 2):>5} {ok(r['ok_loss']):3}"
        )
    if any(r.get("time_dilation", 1) != 1 for r in rows):  # one K per row: say which
        lines = [f"{'K':<4} {lines[0]}", "-" * (len(head) + 5)] + [
            f"{r['time_dilation']:<4g} {line}" for r, line in zip(rows, lines[2:], strict=True)]
    backend = rows[0]["backend"] if rows else "-"
    lines.append(f"backend: {backend}; bw Mbit/s (iperf3 TCP goodput), rtt/jitter ms "
                 "(UDP echo, median / one-way std), loss % one-way")
    return "\n".join(lines)
