"""Bytes and packets on the wire, per link, flow and message, from a run's pcap files (scapy).

How packets are attributed to requests (exactly, not by time windows): every node sends over
ZeroMQ PUSH sockets, one TCP connection per (sending thread, peer), and ZeroMQ writes each
multipart message as consecutive ZMTP 3 frames in that connection's byte stream.  So for each
directed TCP flow in a capture:
  1. the byte stream is rebuilt from the packets' sequence numbers (relative to the SYN; a
     retransmitted segment lands on the same bytes and is counted as a retransmission);
  2. the stream is parsed as ZMTP: the 64-byte greeting, command frames (READY ...), then message
     frames (flags, 1- or 8-byte size, body); the first frame of every message is the node
     protocol's JSON envelope, which names the request (`request_id`), the message `kind`
     (request, accepted, stage, result, error) and, for stage messages, the `stage`;
  3. each data packet is attributed to the message(s) its payload bytes belong to (a segment that
     carries the end of one message and the start of the next is split by bytes; the packet is
     counted for the message of its first byte), and each pure ACK of the reverse direction to
     the message that holds the last byte it acknowledges.
What belongs to no message (SYN/FIN handshakes, the ZMTP greeting and commands, ACKs of those)
stays in the table with an empty `request_id`, and frames that are not TCP/IPv4 (ARP, IPv6
neighbour discovery) are rows of their protocol, so per-link totals are complete.

Every link is captured once (emulation/capture.py), so a message that crosses three links
appears in three rows, one per link: `wire_bytes` summed over links is the load the message puts
on the network.  `wire_bytes` is the Ethernet frame length on the wire (pcap "wirelen"); a
segment shared by two messages counts as a packet of the first (`packets`) and as the byte
fraction each one has of it (`packet_share`, which is what header accounting uses).

A row is one (link, direction of a TCP flow, message identity, part) and `part` says what its
packets are: `data` (segments carrying the message's bytes), `ack` (pure ACKs of it, sent the
other way) or `control`.  So a sum over rows means:
  - `packets`, `packet_share`, `wire_bytes`, `tcp_payload_bytes`, `retransmitted_packets`: every
    row counts its own packets once; their sum over any set of rows is what those packets put on
    the wire (over all links: each packet once per link it crossed).
  - `message_bytes`, `zmtp_bytes`: the length of the message(s) a `data` row carries (frame bodies;
    with the ZMTP frame headers), once per link it crossed, and empty on every `ack` and `control`
    row, so their sum is the messages' bytes per link crossed, never counted twice.  (Before
    schema version 2, analysis/schema.py, ack rows repeated them.)
  - `message_index`: an identifier (the message's place on its connection), not a quantity.
"""

from __future__ import annotations

import bisect
import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

GREETING_BYTES = 64
COLUMNS = ["link", "interface", "src", "dst", "src_ip", "dst_ip", "sport", "dport", "request_id", "kind",
           "stage", "part", "packets", "packet_share", "retransmitted_packets", "wire_bytes",
           "tcp_payload_bytes", "message_bytes", "zmtp_bytes", "message_index", "wall_t_first", "wall_t_last"]


@dataclass
class _Pkt:
    ts: float
    wirelen: int
    seq: int
    ack: int
    flags: int
    payload: bytes


@dataclass
class _Message:
    start: int  # stream offsets [start, end)
    end: int
    request_id: str | None
    kind: str
    stage: int | None
    message_bytes: int  # frame bodies (what the node counts as message_bytes)
    index: int = -1  # place among the flow's node messages: 0 = the first, sent on a cold connection


@dataclass
class _Flow:
    packets: list[_Pkt] = field(default_factory=list)
    isn: int | None = None
    messages: list[_Message] = field(default_factory=list)
    starts: list[int] = field(default_factory=list)

    def message_at(self, offset: int) -> _Message | None:
        i = bisect.bisect_right(self.starts, offset) - 1
        if i >= 0 and self.messages[i].start <= offset < self.messages[i].end:
            return self.messages[i]
        return None


def empty_traffic() -> pd.DataFrame:
    return pd.DataFrame(columns=COLUMNS)


def read_flows(pcap: Path) -> tuple[dict[tuple, _Flow], dict[str, list[_Pkt]]]:
    """Directed TCP flows (src ip, sport, dst ip, dport) of one capture, packets in file order, and
    the frames that are not TCP over IPv4 (ARP, IPv6 neighbour discovery ...) by protocol."""
    from scapy.layers.inet import IP, TCP
    from scapy.layers.l2 import Ether
    from scapy.utils import RawPcapReader

    flows: dict[tuple, _Flow] = defaultdict(_Flow)
    others: dict[str, list[_Pkt]] = defaultdict(list)
    with RawPcapReader(str(pcap)) as reader:
        for data, meta in reader:
            frame = Ether(data)
            if not frame.haslayer(IP) or not frame.haslayer(TCP):
                name = frame.payload.name if frame.payload is not None else "ethernet"
                others[str(name)].append(_Pkt(meta.sec + meta.usec / 1e6, meta.wirelen, 0, 0, 0, b""))
                continue
            ip, tcp = frame[IP], frame[TCP]
            # the payload's length from the headers, not from what was captured (snaplen)
            length = ip.len - ip.ihl * 4 - tcp.dataofs * 4
            payload = bytes(tcp.payload)[:length]
            if len(payload) < length:  # cut by the snaplen: lengths stay right, contents do not
                payload += b"\0" * (length - len(payload))
            ts = meta.sec + meta.usec / 1e6
            flows[(ip.src, tcp.sport, ip.dst, tcp.dport)].packets.append(
                _Pkt(ts, meta.wirelen, tcp.seq, tcp.ack, int(tcp.flags), payload))
    for flow in flows.values():
        syn = next((p for p in flow.packets if p.flags & 0x02), None)
        flow.isn = syn.seq if syn is not None else None
    return flows, others


def _offset(flow: _Flow, seq: int) -> int | None:
    return None if flow.isn is None else (seq - flow.isn - 1) % 2**32


def rebuild_stream(flow: _Flow) -> bytes:
    """The flow's bytes from offset 0 up to the first hole."""
    chunks: dict[int, bytes] = {}
    for p in flow.packets:
        off = _offset(flow, p.seq)
        if p.payload and off is not None and len(p.payload) > len(chunks.get(off, b"")):
            chunks[off] = p.payload
    out = bytearray()
    for off in sorted(chunks):
        data = chunks[off]
        if off > len(out):
            break  # a hole (a packet the capture missed): parse no further
        out += data[len(out) - off:]
    return bytes(out)


def parse_zmtp(stream: bytes) -> list[_Message]:
    """Messages of a ZMTP 3 byte stream (greeting and commands as messages of kind 'zmtp')."""
    if len(stream) < GREETING_BYTES or stream[0] != 0xFF or stream[9] != 0x7F:
        return []
    messages = [_Message(0, GREETING_BYTES, None, "zmtp", None, 0)]
    pos = GREETING_BYTES
    current: _Message | None = None
    while pos + 2 <= len(stream):
        flags = stream[pos]
        if flags & 0x02:
            if pos + 9 > len(stream):
                break
            size, header = int.from_bytes(stream[pos + 1:pos + 9], "big"), 9
        else:
            size, header = stream[pos + 1], 2
        end = pos + header + size
        if end > len(stream):
            break  # the rest of the stream is missing
        body = stream[pos + header:end]
        if flags & 0x04:  # a command (READY, PING ...): protocol overhead
            messages.append(_Message(pos, end, None, "zmtp", None, 0))
        elif current is None:
            current = _Message(pos, end, None, "unknown", None, size)
            try:
                envelope = json.loads(body)
                current.request_id = envelope.get("request_id")
                current.kind = str(envelope.get("kind", "unknown"))
                current.stage = envelope.get("stage") if current.kind == "stage" else None
            except (ValueError, AttributeError):
                pass
        else:
            current.end, current.message_bytes = end, current.message_bytes + size
        if current is not None and not flags & 0x01 and not flags & 0x04:
            current.end = end
            current.index = sum(1 for m in messages if m.kind != "zmtp")
            messages.append(current)
            current = None
        pos = end
    return messages


def other_rows(link: str, interface: str, others: dict[str, list[_Pkt]]) -> list[dict]:
    rows = []
    for proto, pkts in others.items():
        row = dict.fromkeys(COLUMNS)
        row.update({"link": link, "interface": interface, "kind": proto, "part": "control",
                    "packets": len(pkts), "packet_share": float(len(pkts)), "retransmitted_packets": 0,
                    "wire_bytes": float(sum(p.wirelen for p in pkts)), "tcp_payload_bytes": 0.0,
                    "wall_t_first": min(p.ts for p in pkts), "wall_t_last": max(p.ts for p in pkts)})
        rows.append(row)
    return rows


def flow_rows(link: str, interface: str, flows: dict[tuple, _Flow],
              host_of: dict[str, str]) -> list[dict]:
    for flow in flows.values():
        flow.messages = parse_zmtp(rebuild_stream(flow)) if flow.isn is not None else []
        flow.starts = [m.start for m in flow.messages]
    acc: dict[tuple, dict] = {}
    carried: dict[tuple, set[int]] = {}  # per row: the messages (stream offsets) whose length it holds

    def add(key: tuple, pkt: _Pkt, packets: float, wire: float, payload: float, retrans: int,
            message: _Message | None) -> None:
        row = acc.get(key)
        if row is None:
            row = acc[key] = {"packets": 0.0, "packet_share": 0.0, "retransmitted_packets": 0,
                              "wire_bytes": 0.0,
                              "tcp_payload_bytes": 0.0, "wall_t_first": pkt.ts, "wall_t_last": pkt.ts,
                              "message_bytes": None, "zmtp_bytes": None,
                              "message_index": message.index if message else None}
            carried[key] = set()
        if message is not None and key[-1] == "data" and message.start not in carried[key]:
            # a message's length once, on the row of its data: an ACK row repeating it would count
            # the message twice in a sum over the column
            carried[key].add(message.start)
            row["message_bytes"] = (row["message_bytes"] or 0) + message.message_bytes
            row["zmtp_bytes"] = (row["zmtp_bytes"] or 0) + message.end - message.start
            row["message_index"] = min(row["message_index"], message.index)
        row["packets"] += packets
        row["packet_share"] += wire / pkt.wirelen if pkt.wirelen else 0.0
        row["retransmitted_packets"] += retrans
        row["wire_bytes"] += wire
        row["tcp_payload_bytes"] += payload
        row["wall_t_first"] = min(row["wall_t_first"], pkt.ts)
        row["wall_t_last"] = max(row["wall_t_last"], pkt.ts)

    for (src, sport, dst, dport), flow in flows.items():
        reverse = flows.get((dst, dport, src, sport))
        seen = _Coverage()
        base = (src, dst, sport, dport)
        for pkt in flow.packets:
            if pkt.payload:
                off = _offset(flow, pkt.seq)
                pieces = [(None, len(pkt.payload))] if off is None else _split(flow, off, len(pkt.payload))
                # a retransmission carries bytes already sent (possibly cut at other boundaries);
                # a segment that was only reordered by jitter carries new bytes
                retrans = int(off is not None and seen.add(off, off + len(pkt.payload)))
                for i, (message, nbytes) in enumerate(pieces):
                    share = nbytes / len(pkt.payload)
                    add((*base, *_ident(message), "data"), pkt, 1.0 if i == 0 else 0.0, pkt.wirelen * share,
                        nbytes, retrans if i == 0 else 0, message)
            else:
                message = None
                pure_ack = pkt.flags & 0x10 and not pkt.flags & 0x07  # ACK, no SYN/FIN/RST
                if pure_ack and reverse is not None and reverse.isn is not None:
                    acked = (pkt.ack - reverse.isn - 1) % 2**32 - 1  # the last byte it acknowledges
                    message = reverse.message_at(acked) if acked >= 0 else None
                    if message is not None and message.kind == "zmtp":
                        message = None
                add((*base, *_ident(message), "ack" if message else "control"), pkt, 1.0, pkt.wirelen,
                    0, 0, message if message else None)
    rows = []
    for (src, dst, sport, dport, request_id, kind, stage, part), v in acc.items():
        rows.append({"link": link, "interface": interface, "src": host_of.get(src, src),
                     "dst": host_of.get(dst, dst), "src_ip": src, "dst_ip": dst, "sport": sport,
                     "dport": dport, "request_id": request_id, "kind": kind, "stage": stage, "part": part,
                     **v})
    return rows


class _Coverage:
    """Byte ranges of a stream seen so far, merged and sorted."""

    def __init__(self) -> None:
        self.starts: list[int] = []
        self.ends: list[int] = []

    def add(self, start: int, end: int) -> bool:
        """Record [start, end); True if any of it had been seen before."""
        i = bisect.bisect_right(self.starts, start)
        overlaps = (i > 0 and self.ends[i - 1] > start) or (i < len(self.starts) and self.starts[i] < end)
        lo = i - 1 if i > 0 and self.ends[i - 1] >= start else i
        hi = i
        while hi < len(self.starts) and self.starts[hi] <= end:
            hi += 1
        new_start = min([start, *self.starts[lo:hi]])
        new_end = max([end, *self.ends[lo:hi]])
        self.starts[lo:hi] = [new_start]
        self.ends[lo:hi] = [new_end]
        return overlaps


def _ident(message: _Message | None) -> tuple:
    if message is None or message.kind == "zmtp":
        return (None, "zmtp" if message else "tcp", None)
    return (message.request_id, message.kind, message.stage)


def _split(flow: _Flow, off: int, length: int) -> list[tuple[_Message | None, int]]:
    """The messages that the bytes [off, off+length) belong to, with how many bytes each."""
    out: list[tuple[_Message | None, int]] = []
    pos, end = off, off + length
    while pos < end:
        message = flow.message_at(pos)
        if message is None:
            i = bisect.bisect_right(flow.starts, pos)
            nxt = min(end, flow.starts[i]) if i < len(flow.starts) else end
            out.append((None, nxt - pos))
            pos = nxt
        else:
            take = min(end, message.end) - pos
            out.append((message, take))
            pos += take
    return out


def parse_run_traffic(pcap_dir: Path, network: dict) -> pd.DataFrame:
    """traffic.parquet's table for a run: every pcap of `pcap_dir` (named <link>.<interface>.pcap)."""
    host_of = {}
    for li in network.get("links", []):
        host_of[li["ip_a"]], host_of[li["ip_b"]] = li["a"], li["b"]
    rows: list[dict] = []
    for pcap in sorted(Path(pcap_dir).glob("*.pcap")):
        link, _, interface = pcap.stem.partition(".")
        try:
            flows, others = read_flows(pcap)
        except Exception as exc:  # a capture cut short by a kill: keep the others
            import logging

            logging.getLogger(__name__).warning("cannot read %s: %s", pcap, exc)
            continue
        rows += flow_rows(link, interface, flows, host_of) + other_rows(link, interface, others)
    frame = pd.DataFrame(rows, columns=COLUMNS)
    if not frame.empty:
        frame["packets"] = frame["packets"].round().astype("int64")
        frame["stage"] = frame["stage"].astype("Int64")
        frame["message_index"] = frame["message_index"].astype("Int64")
    return frame
