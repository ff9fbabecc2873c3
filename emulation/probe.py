"""A UDP echo with user-space timestamps: RTT, one-way delay, jitter and loss per direction.

`ping` cannot see delay added at the final receiver's ingress (its RTT comes from the kernel's
receive timestamp, taken before netfilter), so calibration measures at the application level.
All network namespaces of one machine share CLOCK_MONOTONIC, so the one-way delay of each
direction is measured exactly: `t_server_recv - t_client_send` forward and
`t_client_recv - t_server_send` back.

    python -m emulation.probe serve PORT          # prints "ready"; ends on stdin EOF
    python -m emulation.probe send HOST PORT --count N --interval S   # prints one JSON object
    python -m emulation.probe reach PORT IP [IP ...]   # {"IP": echoes out of 3, ...}
    python -m emulation.probe ping IP [IP ...] [--tries 3] [--timeout 3]   # same, ICMP echo

`ping` is the reachability check at scale: the kernel of every target answers ICMP echo itself,
so one process in one host checks hundreds of hosts, and no echo server is started anywhere.

Loss per direction: the server counts what it received for each test id; at the end the client
asks for that count (repeated until answered) so forward and return losses are told apart.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import select
import socket
import statistics
import struct
import sys
import time

_PROBE = struct.Struct("!cIIdd d")  # kind, test id, seq, t_client_send, t_server_recv, t_srv_send
_PAD = 64  # payload bytes per probe: small, so probes never load a slow link


def serve(port: int) -> int:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
    sock.bind(("0.0.0.0", port))
    counts: dict[int, int] = {}
    print("ready", flush=True)
    stdin_fd = sys.stdin.fileno()
    while True:
        readable, _, _ = select.select([sock, stdin_fd], [], [])
        if stdin_fd in readable and not os.read(stdin_fd, 4096):
            return 0
        if sock not in readable:
            continue
        data, addr = sock.recvfrom(2048)
        now = time.monotonic()
        kind, test, seq, t0, _, _ = _PROBE.unpack_from(data)
        if kind == b"P":
            counts[test] = counts.get(test, 0) + 1
            reply = _PROBE.pack(b"P", test, seq, t0, now, time.monotonic())
        else:  # b"C": how many probes of this test arrived
            reply = _PROBE.pack(b"C", test, counts.get(test, 0), t0, now, time.monotonic())
        sock.sendto(reply.ljust(len(data), b"\0"), addr)


def send(host: str, port: int, count: int, interval: float, wait: float) -> dict:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
    sock.connect((host, port))
    test = int.from_bytes(os.urandom(4), "big")
    fwd: dict[int, float] = {}
    rev: dict[int, float] = {}
    rtt: dict[int, float] = {}

    def drain(deadline: float) -> None:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            readable, _, _ = select.select([sock], [], [], left)
            if not readable:
                return
            try:
                data = sock.recv(2048)
            except OSError:  # an ICMP error queued on the connected socket
                continue
            now = time.monotonic()
            kind, t_id, seq, t0, t1, t2 = _PROBE.unpack_from(data)
            if kind == b"P" and t_id == test:
                fwd[seq] = t1 - t0
                rev[seq] = now - t2
                rtt[seq] = now - t0

    start = time.monotonic()
    for seq in range(count):
        due = start + seq * interval
        drain(due)
        # No route while a link is down: the probe is lost, as it would be on the air.
        with contextlib.suppress(OSError):
            sock.send(_PROBE.pack(b"P", test, seq, time.monotonic(), 0.0, 0.0).ljust(_PAD, b"\0"))
    drain(time.monotonic() + wait)
    server_count = None
    for _ in range(50):  # the count request itself may be lost on a lossy link
        try:
            sock.send(_PROBE.pack(b"C", test, 0, time.monotonic(), 0.0, 0.0).ljust(_PAD, b"\0"))
            readable, _, _ = select.select([sock], [], [], 0.5)
            data = sock.recv(2048) if readable else b""
        except OSError:  # e.g. ECONNREFUSED from an earlier ICMP error; ask again
            time.sleep(0.1)
            continue
        if data:
            kind, t_id, n, *_ = _PROBE.unpack_from(data)
            if kind == b"C" and t_id == test:
                server_count = n
                break
    return _summarise(count, server_count, fwd, rev, rtt)


def reach(port: int, targets: list[str], tries: int = 3, timeout: float = 2.0) -> dict:
    """Connectivity: how many of `tries` echoes came back from each target (all in parallel).

    Echoes are matched by sequence number, not by source address: a router's reply leaves
    from the address of the interface it goes out of, not necessarily the one asked."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    test = int.from_bytes(os.urandom(4), "big")
    got = [0] * len(targets)
    for k in range(tries):
        for i, ip in enumerate(targets):
            packet = _PROBE.pack(b"P", test, i * tries + k, time.monotonic(), 0.0, 0.0)
            sock.sendto(packet, (ip, port))
    deadline = time.monotonic() + timeout
    while sum(got) < tries * len(targets):
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([sock], [], [], left)[0]:
            break
        kind, t_id, seq, *_ = _PROBE.unpack_from(sock.recv(2048))
        if kind == b"P" and t_id == test and seq < tries * len(targets):
            got[seq // tries] += 1
    return dict(zip(targets, got, strict=True))


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _echo_request(ident: int, seq: int) -> bytes:
    head = struct.pack("!BBHHH", 8, 0, 0, ident, seq)
    payload = b"edgestage-reach".ljust(32, b"\0")
    return struct.pack("!BBHHH", 8, 0, _checksum(head + payload), ident, seq) + payload


def ping(targets: list[str], tries: int = 3, timeout: float = 3.0) -> dict:
    """Reachability by ICMP echo: how many of `tries` echoes came back from each target.

    One raw socket (root) sends every request at once and collects the replies; a reply is
    matched by identifier and sequence number (sequence = target index x tries + try), not by
    source address, as in `reach`.  Ends as soon as every echo is back, or after `timeout`."""
    if len(targets) * tries > 0xFFFF:
        raise ValueError(f"ping: {len(targets)} targets x {tries} tries do not fit 16-bit seqs")
    sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    # a few hundred replies can arrive in one burst: keep them all
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
    ident = int.from_bytes(os.urandom(2), "big")
    got = [0] * len(targets)
    seen: set[int] = set()
    for k in range(tries):
        for i, ip in enumerate(targets):
            with contextlib.suppress(OSError):  # no route: that target simply misses
                sock.sendto(_echo_request(ident, i * tries + k), (ip, 0))
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    deadline = time.monotonic() + timeout
    while len(seen) < tries * len(targets):
        left = deadline - time.monotonic()
        if left <= 0 or not poller.poll(left * 1000):
            break
        seq = _echo_reply_seq(sock.recv(2048), ident)
        if seq is not None and seq < tries * len(targets) and seq not in seen:
            seen.add(seq)
            got[seq // tries] += 1
    return dict(zip(targets, got, strict=True))


def _echo_reply_seq(packet: bytes, ident: int) -> int | None:
    """The sequence number of an echo reply to us (raw sockets see every ICMP packet)."""
    icmp = packet[(packet[0] & 0x0F) * 4:]
    if len(icmp) < 8:
        return None
    kind, _, _, r_ident, seq = struct.unpack_from("!BBHHH", icmp)
    return seq if kind == 0 and r_ident == ident else None


def _ms_stats(values: list[float]) -> dict:
    ms = [v * 1000 for v in values]
    if not ms:
        return {"mean": None, "median": None, "std": None}
    return {
        "mean": statistics.fmean(ms),
        "median": statistics.median(ms),
        "std": statistics.stdev(ms) if len(ms) > 1 else 0.0,
    }


def _summarise(sent: int, server_count: int | None, fwd: dict, rev: dict, rtt: dict) -> dict:
    echoed = len(rtt)
    out = {"sent": sent, "server_received": server_count, "echoed": echoed}
    out["rtt_ms"] = _ms_stats(list(rtt.values()))
    out["fwd_ms"] = _ms_stats(list(fwd.values()))
    out["rev_ms"] = _ms_stats(list(rev.values()))
    if server_count is not None:
        out["fwd_loss_pct"] = 100.0 * (sent - server_count) / sent
        back = 100.0 * (server_count - echoed) / server_count if server_count else None
        out["rev_loss_pct"] = back
    else:
        out["fwd_loss_pct"] = out["rev_loss_pct"] = None
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m emulation.probe")
    sub = parser.add_subparsers(dest="mode", required=True)
    s = sub.add_parser("serve")
    s.add_argument("port", type=int)
    c = sub.add_parser("send")
    c.add_argument("host")
    c.add_argument("port", type=int)
    c.add_argument("--count", type=int, default=100)
    c.add_argument("--interval", type=float, default=0.01)
    c.add_argument("--wait", type=float, default=1.0, help="seconds to wait for late echoes")
    r = sub.add_parser("reach")
    r.add_argument("port", type=int)
    r.add_argument("targets", nargs="+")
    g = sub.add_parser("ping")
    g.add_argument("targets", nargs="+")
    g.add_argument("--tries", type=int, default=3)
    g.add_argument("--timeout", type=float, default=3.0)
    args = parser.parse_args(argv)
    if args.mode == "ping":
        print(json.dumps(ping(args.targets, args.tries, args.timeout)))
        return 0
    if args.mode == "serve":
        return serve(args.port)
    if args.mode == "reach":
        print(json.dumps(reach(args.port, args.targets)))
        return 0
    print(json.dumps(send(args.host, args.port, args.count, args.interval, args.wait)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
