"""analysis/traffic.py, the ZMTP stream reassembler and packet attribution, without root: on the
captures of a real smoke run (tests/data/smoke-run, see its README.md) and on small TCP streams
built here with scapy for the cases a run rarely shows (reordering, a retransmission cut at other
boundaries, a segment shared by two messages, a hole in the capture)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether
from scapy.utils import RawPcapReader, wrpcap

from analysis.accuracy import HEADER_BYTES
from analysis.traffic import COLUMNS, parse_run_traffic, parse_zmtp, read_flows, rebuild_stream

from .conftest import SMOKE_RUN

PCAPS = sorted((SMOKE_RUN / "pcap").glob("*.pcap"))
NODE_KINDS = {"request", "accepted", "stage", "result", "error", "report"}
# the smoke topology (two_tier) is a tree: every host's links up to the edge server
UP = {"d1": ["d1-ap", "ap-edge"], "d2": ["d2-ap", "ap-edge"], "edge": [], "cloud": ["edge-cloud"]}
# ZMTP frame headers: 2 bytes (short frame) or 9 (long frame) per frame; node messages have a few frames
MAX_FRAMING_BYTES = 9 * 8


def route(src: str, dst: str) -> set[str]:
    return set(UP[src]) ^ set(UP[dst])


@pytest.fixture(scope="module")
def network() -> dict:
    return json.loads((SMOKE_RUN / "network.json").read_text())


@pytest.fixture(scope="module")
def traffic(network) -> pd.DataFrame:
    return parse_run_traffic(SMOKE_RUN / "pcap", network)


@pytest.fixture(scope="module")
def requests() -> pd.DataFrame:
    return pd.read_parquet(SMOKE_RUN / "requests.parquet")


def expected_messages(requests: pd.DataFrame) -> pd.DataFrame:
    """Every node message the records say was sent between two hosts: (request, kind, stage), who
    sent it to whom and the nodes' own count of its bytes (None where the records have none)."""
    rows = []
    for rid, group in requests[requests["outcome"] == "ok"].groupby("request_id"):
        stages = group.sort_values("stage_index").to_dict("records")
        device = stages[0]["device"]
        rows += [(rid, "request", -1, device, "edge", None), (rid, "accepted", -1, "edge", device, None)]
        for k, stage in enumerate(stages):
            src = "edge" if k == 0 else stages[k - 1]["host"]
            rows.append((rid, "stage", k, src, stage["host"], stage["message_bytes"]))
        rows.append((rid, "result", -1, stages[-1]["host"], device, stages[-1]["result_message_bytes"]))
    frame = pd.DataFrame(rows, columns=["request_id", "kind", "stage", "src", "dst", "records_bytes"])
    return frame[frame["src"] != frame["dst"]].reset_index(drop=True)


def data_rows(traffic: pd.DataFrame) -> pd.DataFrame:
    t = traffic[(traffic["part"] == "data") & traffic["request_id"].notna()]
    return t.assign(stage=t["stage"].astype("Int64").fillna(-1).astype(int))


# ---- the committed capture -----------------------------------------------------------------------

def test_the_fixture_has_every_link_captured_without_drops(network):
    manifest = json.loads((SMOKE_RUN / "manifest.json").read_text())
    assert {c["link"] for c in manifest["capture"]} == {li["link"] for li in network["links"]}
    assert {Path(c["file"]).name for c in manifest["capture"]} == {p.name for p in PCAPS}
    assert all(c["dropped_by_kernel"] == 0 for c in manifest["capture"])


@pytest.mark.parametrize("pcap", PCAPS, ids=[p.stem for p in PCAPS])
def test_every_frame_of_a_capture_is_in_the_table_once(traffic, pcap):
    """Packets, packet shares and wire bytes per link add up to the capture file, frame by frame,
    and to tcpdump's own count in the manifest."""
    frames, wirelen = 0, 0
    with RawPcapReader(str(pcap)) as reader:
        for _, meta in reader:
            frames += 1
            wirelen += meta.wirelen
    link, _, interface = pcap.stem.partition(".")
    rows = traffic[(traffic["link"] == link) & (traffic["interface"] == interface)]
    manifest = json.loads((SMOKE_RUN / "manifest.json").read_text())
    captured = {c["file"]: c["captured"] for c in manifest["capture"]}
    assert frames == captured[f"pcap/{pcap.name}"]
    assert int(rows["packets"].sum()) == frames
    assert rows["packet_share"].sum() == pytest.approx(frames)
    assert rows["wire_bytes"].sum() == pytest.approx(wirelen)
    # every row is one of: a node message (data or its ACKs), ZMTP overhead, TCP control, another protocol
    assert set(rows["part"]) <= {"data", "ack", "control"}
    assert set(rows.loc[rows["request_id"].notna(), "kind"]) <= NODE_KINDS
    assert set(rows.loc[rows["request_id"].isna(), "kind"]) <= {"zmtp", "tcp", "ARP", "IPv6"}


@pytest.mark.parametrize("pcap", PCAPS, ids=[p.stem for p in PCAPS])
def test_every_tcp_payload_byte_belongs_to_a_parsed_zmtp_frame(traffic, pcap):
    """No data segment is left as anonymous TCP payload: each byte is ZMTP greeting/command or
    part of a node message that names its request."""
    link, _, interface = pcap.stem.partition(".")
    rows = traffic[(traffic["link"] == link) & (traffic["interface"] == interface)]
    anonymous = rows[(rows["kind"] == "tcp") & (rows["tcp_payload_bytes"] > 0)]
    assert anonymous.empty, anonymous[["src", "dst", "sport", "dport", "packets", "tcp_payload_bytes"]]
    node = rows[rows["kind"].isin(NODE_KINDS)]
    assert node["request_id"].notna().all()
    assert (rows.loc[rows["kind"] == "zmtp", "part"] != "ack").all()  # ACKs of the handshakes are control


def test_each_message_is_seen_on_exactly_the_links_of_its_route(traffic, requests):
    seen = data_rows(traffic).groupby(["request_id", "kind", "stage"])["link"].agg(set)
    expected = expected_messages(requests)
    # per device: request and acceptance of 4 requests, and cloud_only's result, edge_only's result,
    # device_only's dispatch, fixed_split's state cloud -> edge and edge -> device, and the
    # dispatches edge -> cloud of cloud_only and fixed_split
    assert len(expected) == 2 * (8 + 5 + 2)
    for m in expected.itertuples():
        assert seen.get((m.request_id, m.kind, m.stage)) == route(m.src, m.dst), m
    # and nothing else: every attributed message is one the records know of
    every = expected_messages(requests)
    assert set(seen.index) <= set(zip(every["request_id"], every["kind"], every["stage"], strict=True))


def test_the_dispatches_to_the_cloud_are_seen_on_the_backhaul(traffic, requests):
    expected = expected_messages(requests)
    to_cloud = expected[(expected["src"] == "edge") & (expected["dst"] == "cloud")]
    assert len(to_cloud) == 4  # cloud_only and fixed_split, two requests each
    seen = data_rows(traffic)
    seen = seen[seen["link"] == "edge-cloud"]
    missing = [m.request_id for m in to_cloud.itertuples()
               if seen[(seen["request_id"] == m.request_id) & (seen["kind"] == "stage")
                       & (seen["stage"] == m.stage)].empty]
    assert missing == []


def test_message_bytes_on_the_wire_match_the_records(traffic, requests):
    """Per message per link: the length parsed from the capture is the nodes' own count; what
    the segments carried beyond it is the ZMTP framing (and retransmissions), and what the frames
    carried beyond their TCP payload is exactly one Ethernet/IPv4/TCP header per packet."""
    expected = expected_messages(requests).dropna(subset=["records_bytes"])
    t = data_rows(traffic)
    rows = t.merge(expected, on=["request_id", "kind", "stage"], how="inner")
    assert len(rows) >= 20 and set(rows["kind"]) == {"stage", "result"}
    assert (rows["message_bytes"] == rows["records_bytes"]).all()
    framing = rows["zmtp_bytes"] - rows["message_bytes"]
    assert (framing > 0).all() and (framing <= MAX_FRAMING_BYTES).all()
    clean = rows[rows["retransmitted_packets"] == 0]
    assert (clean["tcp_payload_bytes"] == clean["zmtp_bytes"]).all()
    resent = rows[rows["retransmitted_packets"] > 0]
    assert (resent["tcp_payload_bytes"] > resent["zmtp_bytes"]).all()
    overhead = rows["wire_bytes"] - rows["tcp_payload_bytes"]
    assert overhead.to_numpy() == pytest.approx((HEADER_BYTES * rows["packet_share"]).to_numpy())
    # and the tensors the records name travelled inside those messages
    stage_payload = requests.set_index(["request_id", "stage_index"])["payload_bytes"]
    for r in rows[rows["kind"] == "stage"].itertuples():
        assert r.message_bytes > stage_payload[(r.request_id, r.stage)]


def test_a_sum_over_message_bytes_counts_each_message_once_per_link(traffic, requests):
    """A message's length is on its data rows only (not repeated on its ACKs' rows): summed over
    the table, the records' bytes once per link of each message's route, below the wire bytes."""
    assert traffic.loc[traffic["part"] != "data", ["message_bytes", "zmtp_bytes"]].isna().all().all()
    expected = expected_messages(requests).dropna(subset=["records_bytes"])
    links = expected.apply(lambda m: len(route(m["src"], m["dst"])), axis=1)
    measured = data_rows(traffic).merge(expected, on=["request_id", "kind", "stage"])
    assert measured["message_bytes"].sum() == (expected["records_bytes"] * links).sum() > 0
    data = traffic[traffic["part"] == "data"]
    assert traffic["zmtp_bytes"].sum() <= data["tcp_payload_bytes"].sum()
    assert traffic["message_bytes"].sum() < traffic["zmtp_bytes"].sum() < traffic["wire_bytes"].sum()


def test_every_node_message_without_records_bytes_is_whole_on_every_link(traffic):
    """Requests and acceptances: the same ZMTP length on every link they cross, and each link's
    data bytes are that length (plus what was sent twice)."""
    t = data_rows(traffic)
    t = t[t["kind"].isin(["request", "accepted"])]
    assert len(t) >= 16
    assert (t.groupby(["request_id", "kind"])["zmtp_bytes"].nunique() == 1).all()
    clean = t[t["retransmitted_packets"] == 0]
    assert (clean["tcp_payload_bytes"] == clean["zmtp_bytes"]).all()


def test_bytes_per_request_add_up_to_the_records_plus_per_packet_overhead(traffic, requests):
    """Per request, the data bytes of its stage and result messages over all links = the records'
    message bytes once per link crossed + one header per packet + what was sent twice + framing."""
    expected = expected_messages(requests).dropna(subset=["records_bytes"])
    t = data_rows(traffic).merge(expected, on=["request_id", "kind", "stage"])
    t = t.assign(resent=t["tcp_payload_bytes"] - t["zmtp_bytes"])
    per = t.groupby("request_id").agg(wire=("wire_bytes", "sum"), records=("records_bytes", "sum"),
                                      share=("packet_share", "sum"), resent=("resent", "sum"),
                                      message_links=("link", "size"))
    assert set(per.index) == set(requests["request_id"])  # every request's bytes are on the wire
    assert (per["resent"] >= 0).all() and (per["message_links"] >= 2).all()
    lower = per["records"] + HEADER_BYTES * per["share"] + per["resent"]
    upper = lower + MAX_FRAMING_BYTES * per["message_links"]
    assert ((lower < per["wire"]) & (per["wire"] <= upper)).all(), per.assign(lower=lower, upper=upper)


def test_retransmissions_in_the_capture_are_counted_only_where_the_link_is_lossy(traffic, network):
    """d2's link loses 1 % of packets (the only lossy link): retransmitted segments appear on the
    links of d2's connections only, and each is counted once per link it crossed."""
    lossy = {li["link"] for li in network["links"] if li["loss_pct"] > 0}
    assert lossy == {"d2-ap"}
    resent = traffic[traffic["retransmitted_packets"] > 0]
    assert not resent.empty
    assert set(resent["link"]) <= {"d2-ap", "ap-edge"}
    assert ((resent["src"] == "d2") | (resent["dst"] == "d2")).all()
    on_d2 = resent[resent["link"] == "d2-ap"].set_index(["request_id", "kind"])["retransmitted_packets"]
    on_ap = resent[resent["link"] == "ap-edge"].set_index(["request_id", "kind"])["retransmitted_packets"]
    assert on_d2.equals(on_ap)  # the same segments, seen again one hop on


def test_cold_messages_are_the_first_on_their_connection(traffic):
    """message_index 0: the first node message of a TCP connection; every connection has one."""
    t = traffic[(traffic["part"] == "data") & traffic["request_id"].notna()]
    per_connection = t.groupby(["link", "src_ip", "sport", "dst_ip", "dport"])["message_index"]
    assert (per_connection.min() == 0).all()
    assert (per_connection.agg(lambda s: s.is_unique)).all()


def test_reassembled_streams_parse_as_zmtp(network):
    """Each connection's stream, rebuilt from the capture, begins with a ZMTP 3 greeting and
    parses to its end, with no byte left over."""
    flows, _ = read_flows(SMOKE_RUN / "pcap" / "d2-ap.d2-eth0.pcap")
    assert len(flows) >= 4
    for key, flow in flows.items():
        assert flow.isn is not None, key
        stream = rebuild_stream(flow)
        sent = max(((p.seq - flow.isn - 1) % 2**32) + len(p.payload) for p in flow.packets if p.payload)
        assert len(stream) == sent, key  # no hole: the stream is whole up to its last byte
        messages = parse_zmtp(stream)
        assert stream[0] == 0xFF and stream[9] == 0x7F and stream[10] == 3  # ZMTP 3.x greeting
        assert messages[0].kind == "zmtp" and messages[-1].end == len(stream), key
        assert all(a.end == b.start for a, b in zip(messages, messages[1:], strict=False)), key


# ---- synthetic streams: reordering, retransmission, shared segments, holes ------------------------

CLIENT, SERVER = ("10.9.0.1", 40001), ("10.9.0.2", 5555)
ISN_C, ISN_S = 4_294_967_000, 1000  # the client's sequence numbers wrap past 2**32 in the stream
OPTS = [("NOP", None), ("NOP", None), ("Timestamp", (1, 2))]  # 12 bytes, as Linux sends


def greeting() -> bytes:
    return b"\xff" + b"\0" * 8 + b"\x7f" + b"\x03\x00" + b"NULL".ljust(20, b"\0") + b"\0" + b"\0" * 31


def command(name: bytes, props: bytes = b"") -> bytes:
    body = bytes([len(name)]) + name + props
    return bytes([0x04, len(body)]) + body


def frame(body: bytes, more: bool) -> bytes:
    flags = 0x01 if more else 0x00
    if len(body) > 255:
        return bytes([flags | 0x02]) + len(body).to_bytes(8, "big") + body
    return bytes([flags, len(body)]) + body


def envelope(**fields) -> bytes:
    return json.dumps(fields, separators=(",", ":")).encode()


def segment(t: float, src, dst, seq: int, ack: int, flags: str, payload: bytes = b"") -> Ether:
    pkt = (Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / IP(src=src[0], dst=dst[0])
           / TCP(sport=src[1], dport=dst[1], seq=seq % 2**32, ack=ack % 2**32, flags=flags, options=OPTS)
           / payload)
    pkt.time = t
    return pkt


class Stream:
    """A client -> server connection whose segments are written in whatever order a test says."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.packets = [segment(0.0, CLIENT, SERVER, ISN_C, 0, "S"),
                        segment(0.01, SERVER, CLIENT, ISN_S, ISN_C + 1, "SA"),
                        segment(0.02, CLIENT, SERVER, ISN_C + 1, ISN_S + 1, "A")]

    def send(self, start: int, end: int) -> None:
        t = 0.1 + 0.01 * len(self.packets)
        self.packets.append(segment(t, CLIENT, SERVER, ISN_C + 1 + start, ISN_S + 1, "PA",
                                    self.data[start:end]))

    def ack(self, upto: int) -> None:
        t = 0.1 + 0.01 * len(self.packets)
        self.packets.append(segment(t, SERVER, CLIENT, ISN_S + 1, ISN_C + 1 + upto, "A"))

    def table(self, tmp_path: Path) -> pd.DataFrame:
        wrpcap(str(tmp_path / "l1-d1.d1-eth0.pcap"), self.packets)
        network = {"links": [{"link": "l1-d1", "a": "d1", "b": "edge", "ip_a": CLIENT[0], "ip_b": SERVER[0]}]}
        return parse_run_traffic(tmp_path, network)


HELLO = greeting() + command(b"READY", b"\x0bSocket-Type\x00\x00\x00\x04PUSH")
ENV1 = envelope(kind="stage", request_id="rq-1", stage=1)
STAGE = frame(ENV1, more=True) + frame(bytes(range(256)) * 12, more=False)  # 3072-byte long frame
ENV2 = envelope(kind="result", request_id="rq-1")
RESULT = frame(ENV2, more=True) + frame(b"\x01" * 200, more=False)
DATA = HELLO + STAGE + RESULT
M1, M2 = len(HELLO), len(HELLO) + len(STAGE)  # where the two messages start


def by_message(table: pd.DataFrame) -> pd.DataFrame:
    data = table[table["part"] == "data"]
    return data.assign(key=data["kind"] + ":" + data["request_id"].fillna("-")).set_index("key")


def test_synthetic_stream_parses_to_its_messages():
    messages = parse_zmtp(DATA)
    assert [(m.kind, m.request_id, m.stage) for m in messages] == [
        ("zmtp", None, None), ("zmtp", None, None), ("stage", "rq-1", 1), ("result", "rq-1", None)]
    assert [(m.start, m.end) for m in messages[2:]] == [(M1, M2), (M2, len(DATA))]
    assert messages[2].message_bytes == len(ENV1) + 3072 and messages[3].message_bytes == len(ENV2) + 200
    assert [m.index for m in messages[2:]] == [0, 1]
    assert parse_zmtp(DATA[:M2 - 1])[-1].kind == "zmtp"  # a message cut short is not reported
    assert parse_zmtp(b"GET / HTTP/1.1\r\n" * 8) == []


def test_reordered_split_and_shared_segments_are_attributed_by_bytes(tmp_path):
    s = Stream(DATA)
    s.send(0, M1)
    s.ack(M1)
    s.send(M1 + 1000, M1 + 2000)  # reordered: the second piece of the stage message comes first
    s.send(M1, M1 + 1000)
    s.ack(M1 + 2000)
    s.send(M1 + 2000, M2 + 50)  # the stage message's end and the result's start in one segment
    s.ack(M2 + 50)
    s.send(M2 + 50, len(DATA))
    s.ack(len(DATA))
    table = s.table(tmp_path)
    assert list(table.columns) == COLUMNS
    rows = by_message(table)
    stage, result = rows.loc["stage:rq-1"], rows.loc["result:rq-1"]
    assert stage["packets"] == 3 and stage["retransmitted_packets"] == 0  # reordered is not resent
    assert stage["tcp_payload_bytes"] == len(STAGE) and stage["zmtp_bytes"] == len(STAGE)
    assert stage["message_bytes"] == len(ENV1) + 3072 and stage["stage"] == 1
    assert result["packets"] == 1 and result["tcp_payload_bytes"] == len(RESULT)
    shared = M2 + 50 - (M1 + 2000)
    assert stage["packet_share"] == pytest.approx(2 + (shared - 50) / shared)
    assert result["packet_share"] == pytest.approx(1 + 50 / shared)
    for r in (stage, result):
        assert r["wire_bytes"] - r["tcp_payload_bytes"] == pytest.approx(HEADER_BYTES * r["packet_share"])
    assert rows.loc["zmtp:-", "tcp_payload_bytes"] == len(HELLO)
    # ACKs: each to the message holding the last byte it acknowledges; the greeting's is control
    acks = table[table["part"] == "ack"].set_index("kind")["packets"].to_dict()
    assert acks == {"stage": 1, "result": 2}
    assert table.loc[table["part"] == "ack", ["message_bytes", "zmtp_bytes"]].isna().all().all()
    assert table["message_bytes"].sum() == len(ENV1) + 3072 + len(ENV2) + 200  # each message once
    assert (table["src"] == "d1").sum() + (table["src"] == "edge").sum() == len(table)
    assert table["packets"].sum() == len(s.packets)
    assert table["wire_bytes"].sum() == pytest.approx(sum(len(p) for p in s.packets))


def test_a_retransmission_cut_at_other_boundaries_is_counted_once(tmp_path):
    s = Stream(DATA)
    s.send(0, M1)
    s.send(M1, M1 + 1500)
    s.send(M1 + 1500, M2 + 20)
    s.send(M1 + 1000, M2 + 100)  # resent: overlaps both earlier segments and reaches into the result
    s.send(M2 + 100, len(DATA))
    table = s.table(tmp_path)
    rows = by_message(table)
    stage, result = rows.loc["stage:rq-1"], rows.loc["result:rq-1"]
    assert stage["retransmitted_packets"] == 1 and result["retransmitted_packets"] == 0
    assert stage["packets"] == 3 and result["packets"] == 1  # the resent segment is the stage's
    # each byte as often as it crossed: the message once, the resent range twice
    assert stage["tcp_payload_bytes"] == len(STAGE) + (M2 - (M1 + 1000))
    assert result["tcp_payload_bytes"] == len(RESULT) + 20  # [M2, M2 + 20) was sent before
    assert stage["message_bytes"] == len(ENV1) + 3072  # the parsed length is not inflated
    assert table.loc[table["retransmitted_packets"] > 0, "kind"].tolist() == ["stage"]


def test_bytes_after_a_hole_in_the_capture_are_not_attributed(tmp_path):
    s = Stream(DATA)
    s.send(0, M1)
    s.send(M1, M1 + 1000)
    # [M1 + 1000, M1 + 2000) never reached the capture
    s.send(M1 + 2000, len(DATA))
    table = s.table(tmp_path)
    data = table[table["part"] == "data"]
    assert data["request_id"].isna().all()  # no message could be parsed past the hole
    anonymous = data[data["kind"] == "tcp"]
    assert anonymous["tcp_payload_bytes"].sum() == len(DATA) - M1 - 1000
    assert data["tcp_payload_bytes"].sum() == len(DATA) - 1000  # still counted, as TCP payload
    assert table["packets"].sum() == len(s.packets)


def test_a_capture_cut_by_the_snaplen_keeps_the_lengths(tmp_path):
    """tcpdump -s: the frames are cut short, the lengths come from the IP header and wirelen."""
    s = Stream(DATA)
    s.send(0, M1)
    s.send(M1, M2)
    s.send(M2, len(DATA))
    path = tmp_path / "l1-d1.d1-eth0.pcap"
    wrpcap(str(path), s.packets, snaplen=200)
    network = {"links": [{"link": "l1-d1", "a": "d1", "b": "edge", "ip_a": CLIENT[0], "ip_b": SERVER[0]}]}
    table = parse_run_traffic(tmp_path, network)
    assert table["wire_bytes"].sum() == pytest.approx(sum(len(p) for p in s.packets))
    data = table[table["part"] == "data"]
    assert data["tcp_payload_bytes"].sum() == len(DATA)
