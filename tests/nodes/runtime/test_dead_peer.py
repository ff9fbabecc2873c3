"""A dead host is noticed at once: its TCP connections close when it is killed, the Outbox's
socket monitors see it, and the requests through it fail within a second or two with a reason
that names it, while the requests that do not use it go on as before."""

import threading
import time

import pytest
import zmq

from nodes.runtime.local_cluster import LocalCluster, Probe, free_ports, loopback_configs
from nodes.runtime.protocol import wire_text
from nodes.runtime.transport import Outbox, PeerDown

TIMEOUT_S = 60.0  # the device's request timeout: a dead host must be reported far sooner
FAST_S = 5.0


def _wait_down(outbox: Outbox, host: str, timeout: float = 5.0) -> list[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if down := outbox.poll_events():
            return down
        time.sleep(0.02)
    return []


class LoopbackPeer:
    """A host `cloud` on loopback that an Outbox sends to, and that can go away and come back on
    the same address."""

    def __init__(self) -> None:
        self.context = zmq.Context()
        self.endpoint = f"tcp://127.0.0.1:{free_ports(1)[0]}"
        self.inbox: zmq.Socket | None = None
        self.up()
        self.outbox = Outbox(self.context, {"cloud": self.endpoint})

    def up(self) -> None:
        self.inbox = self.context.socket(zmq.PULL)
        self.inbox.bind(self.endpoint)

    def down(self) -> None:
        self.inbox.close(linger=0)

    def received(self) -> bytes | None:
        return self.inbox.recv() if self.inbox.poll(2000) else None

    def close(self) -> None:
        self.outbox.close()
        self.inbox.close(linger=0)
        self.context.term()


@pytest.fixture
def peer():
    peer = LoopbackPeer()
    yield peer
    peer.close()


def test_an_outbox_reports_a_peer_whose_connection_closed_until_it_comes_back(peer):
    outbox = peer.outbox
    outbox.send("cloud", [b"hello"])
    assert peer.received() == b"hello"
    peer.down()
    closed = time.monotonic()
    assert _wait_down(outbox, "cloud") == ["cloud"]
    assert time.monotonic() - closed < 2.0
    with pytest.raises(PeerDown, match=r"^host cloud is down: its connection closed at .* and has not "
                                       r"come back$"):
        outbox.send("cloud", [b"lost"])
    assert outbox.poll_events() == []  # reported once
    peer.up()  # the host comes back on the same address
    deadline = time.monotonic() + 5
    while outbox.down_reason("cloud") and time.monotonic() < deadline:
        outbox.poll_events()
        time.sleep(0.05)
    assert outbox.down_reason("cloud") is None
    outbox.send("cloud", [b"again"])
    assert peer.received() == b"again"


def test_a_fresh_connection_says_when_its_host_is_back_and_carries_what_was_sent_meanwhile(peer):
    outbox = peer.outbox
    outbox.send("cloud", [b"first"])
    assert peer.received() == b"first"
    assert outbox.reconnected() == []  # the first connection's handshake is not a return
    peer.down()  # unreachable from now on: each attempt of the fresh connection fails
    time.sleep(0.1)  # (the listener closes in ZeroMQ's I/O thread)
    outbox.reconnect("cloud", connect_timeout_s=0.2)
    outbox.send("cloud", [b"meanwhile"])  # queued for the fresh connection, not refused
    time.sleep(0.5)
    assert outbox.reconnected() == []
    peer.up()
    deadline = time.monotonic() + 5
    back: list[str] = []
    while not back and time.monotonic() < deadline:
        back = outbox.reconnected()
        time.sleep(0.02)
    assert back == ["cloud"] and outbox.reconnected() == []  # said once
    assert peer.received() == b"meanwhile"


@pytest.mark.slow
def test_killing_the_cloud_fails_its_requests_fast_and_names_it(tmp_path):
    profiles = tmp_path / "profiles.toml"  # slow enough that a cloud request is in flight at the kill
    profiles.write_text("[hardware.slow.models]\nsmall = { step_ms = 500, per_image_ms = 0 }\n")
    hosts = {"d1": {"role": "device"},
             "edge": {"role": "edge", "models": ["small"]},
             "cloud": {"role": "cloud", "models": ["small"],
                       "compute": {"mode": "profiled", "hardware": "slow", "profiles_file": str(profiles)}}}
    strategies = {"cloud_only": {"kind": "cloud_only", "model": "small"},
                  "edge_only": {"kind": "edge_only", "model": "small"},
                  "fixed_split": {"kind": "fixed_split", "split": [
                      {"model": "small", "tier": "edge", "share": 0.5},
                      {"model": "small", "tier": "cloud", "share": 0.5}]}}
    configs = loopback_configs(tmp_path, hosts, steps=8, scheduler="ddim", request_timeout_s=TIMEOUT_S,
                               strategies=strategies)
    probe_endpoint, edge_endpoint = configs["d1"].bind, configs["edge"].bind
    del configs["d1"]  # the test plays the device
    with LocalCluster(configs) as cluster:
        probe = Probe("d1", probe_endpoint, edge_endpoint)
        try:
            reply, _ = probe.request("before", "cloud_only", [1, 2], seed=1, timeout=60)
            assert reply.envelope.kind == "result"
            cloud = cluster.nodes["cloud"]
            killed = []

            def kill() -> None:  # SIGKILL by its pid, mid-stage
                killed.append(time.time())
                cloud.kill()

            killer = threading.Timer(1.0, kill)
            killer.start()
            try:
                reply, received = probe.request("in-flight", "cloud_only", [1, 2], seed=2, timeout=60)
            finally:
                killer.join()
            in_flight_s = received - killed[0]
            replies = {}
            for strategy in ("cloud_only", "fixed_split", "edge_only"):
                sent = time.time()
                answer, at = probe.request(f"after-{strategy}", strategy, [3, 4], seed=3, timeout=60)
                replies[strategy] = (answer.envelope, at - sent)
        finally:
            probe.close()
    assert reply.envelope.kind == "error"
    assert reply.envelope.host == "edge" and wire_text(reply.envelope.plan) == "small:0-8@cloud"
    assert reply.envelope.reason.startswith("host cloud is down: its connection closed at ")
    assert in_flight_s < FAST_S
    for strategy in ("cloud_only", "fixed_split"):
        envelope, took = replies[strategy]
        assert envelope.kind == "error" and "host cloud is down" in envelope.reason, envelope
        assert "cloud" in wire_text(envelope.plan) and took < FAST_S
    envelope, _ = replies["edge_only"]
    assert envelope.kind == "result"
