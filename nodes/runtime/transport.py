"""How nodes talk: the inbox's bounds, the checked-message hand-off between a node's threads
(Inbound, WorkQueue), counters of what was dropped, and the Outbox of PUSH sockets to peers whose
socket monitors tell a dead host (PeerDown).  The node process (node.py) and its roles (worker,
coordinator, device) all import it; it imports none of them.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import zmq
from zmq.utils.monitor import recv_monitor_message

from nodes.diffusion.latent_folders import latent_space
from nodes.diffusion.model_zoo import SampleShape, denoiser_config, is_pipeline_folder
from nodes.diffusion.state import MAX_HEADER_BYTES
from nodes.planning.plan import Plan, Stage
from nodes.runtime.node_config import NodeConfig
from nodes.runtime.protocol import MAX_ENVELOPE_BYTES, Message
from nodes.runtime.security import CurveKeys, secure_client

log = logging.getLogger("nodes.runtime.transport")

POLL_MS = 100
SEND_HWM = 1000
# What a peer can make this node hold before anything is checked: ZeroMQ queues up to RECV_HWM
# messages per connected peer while the receiver is busy, each of at most MAX_FRAMES frames of the
# inbox's frame limit (inbox_frame_limit); checked stage messages then wait in the WorkQueue.
RECV_HWM = 16
WORK_QUEUE_MAX = 1000
# The largest legitimate stage message (MAX_IMAGES images: envelope, state header and 16 tensors of
# 256 images x 16 x 16 float32) is 4.25 MB: this holds 60 of them, and far more of the usual ones.
WORK_QUEUE_BYTES = 256 * 1024 * 1024
LOGGED_DROPS = 50  # log every drop up to this many, then one line per 1000
# a connection that comes back within this long was a blip; one that does not is a dead host
DOWN_GRACE_S = 0.3
_PEER_EVENTS = zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_DISCONNECTED


class Stopping(Exception):
    """Raised inside a computation when the node is told to stop."""


@dataclass(frozen=True)
class Inbound:
    message: Message
    received: float  # time.time() when the receiver got it
    checked: tuple[Plan, Stage] | None = None  # a stage message's plan and stage, once checked


class QueueFull(Exception):
    """The work queue cannot take a message; `category` is the drop counter it goes to."""

    def __init__(self, category: str, reason: str) -> None:
        super().__init__(reason)
        self.category = category


class WorkQueue:
    """The checked stage messages waiting for the worker, bounded in count and in bytes: a few
    large messages hold as much memory as many small ones."""

    def __init__(self, max_items: int = WORK_QUEUE_MAX, max_bytes: int = WORK_QUEUE_BYTES) -> None:
        self.max_items = max_items
        self.max_bytes = max_bytes
        self._queue: queue.Queue[tuple[Any, int]] = queue.Queue()
        self._lock = threading.Lock()
        self._bytes = 0

    @property
    def bytes(self) -> int:
        with self._lock:
            return self._bytes

    def put_nowait(self, item: Any, nbytes: int) -> None:
        """Raises QueueFull (category `overload` or `overload_bytes`) rather than wait."""
        with self._lock:
            count = self._queue.qsize()
            if count >= self.max_items:
                raise QueueFull("overload", f"work queue full ({count} messages)")
            if self._bytes + nbytes > self.max_bytes:
                raise QueueFull("overload_bytes", f"work queue full ({self._bytes} + {nbytes} bytes exceed "
                                                  f"{self.max_bytes})")
            self._bytes += nbytes
            self._queue.put((item, nbytes))

    def get(self, timeout: float) -> Any:
        """Raises queue.Empty after `timeout` seconds without an item."""
        item, nbytes = self._queue.get(timeout=timeout)
        with self._lock:
            self._bytes -= nbytes
        return item


class Stats:
    """Counters shared by the threads (under a lock) and written to nodes/<host>.json."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counts: Counter[str] = Counter()
        self.drops: Counter[str] = Counter()

    def count(self, key: str, by: int = 1) -> None:
        with self._lock:
            self.counts[key] += by

    def drop(self, category: str, reason: str) -> None:
        with self._lock:
            self.drops[category] += 1
            total = sum(self.drops.values())
        if total <= LOGGED_DROPS:
            log.warning("dropped a message: %s", reason)
        elif total % 1000 == 0:
            log.warning("dropped %d messages so far (latest: %s)", total, reason)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            dropped = sum(self.drops.values())
            return {"counts": dict(self.counts), "dropped": dropped, "drops": dict(self.drops)}


class PeerDown(RuntimeError):
    """A send to a host whose connection closed and has not come back."""


def clock(t: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(t)) + f".{int(t % 1 * 1000):03d}"


class Outbox:
    """PUSH sockets to peers, created on first use (or by `connect`), owned by the one thread that
    made the Outbox. With `curve` (nodes/runtime/security.py) every socket is a CURVE client pinned to its
    peer's key.

    Each socket has a monitor: a killed peer's TCP connections are closed by its kernel, so the
    DISCONNECTED event comes at once. A host whose connection closed and has not completed a
    handshake again within DOWN_GRACE_S is down: sends to it raise PeerDown at once rather than
    queue for a peer that may never come back.

    A failed link closes nothing: what was sent into it waits for TCP's retransmission back-off,
    and so does everything sent after it on that connection. `reconnect` gives up the connection
    (what it already handed the kernel is still delivered, late) for a fresh one that tries anew
    every `connect_timeout_s`; its handshake is the first sign that the path is back
    (`reconnected`)."""

    def __init__(self, context: zmq.Context, endpoints: dict[str, str],
                 curve: CurveKeys | None = None) -> None:
        self._context = context
        self._endpoints = endpoints
        self._curve = curve
        self._sockets: dict[str, zmq.Socket] = {}
        self._monitors: dict[str, zmq.Socket] = {}
        self._lost: dict[str, float] = {}  # host -> when its connection closed (not back since)
        self._reported: set[str] = set()
        self._probing: set[str] = set()  # hosts reconnected, their handshake not yet done
        self._back: list[str] = []  # hosts whose fresh connection has completed its handshake

    def reconnect(self, host: str, connect_timeout_s: float) -> None:
        """A fresh connection to `host` instead of the one stuck behind a failed link."""
        old = self._sockets.pop(host, None)
        if old is not None:
            old.disable_monitor()
            self._monitors.pop(host).close(linger=0)
            old.close(linger=0)
        self._probing.add(host)
        self.connect(host, connect_timeout_s)

    def reconnected(self) -> list[str]:
        """The hosts whose fresh connection (`reconnect`) completed its handshake since last asked."""
        self.poll_events()
        back, self._back = self._back, []
        return back

    def connect(self, host: str, connect_timeout_s: float = 0.0) -> zmq.Socket:
        """The socket to `host`, connecting it now if need be (to watch a peer before sending).
        A `connect_timeout_s` abandons an unanswered connection attempt for a new one: without it
        the kernel retransmits the SYN after 1, 3, 7, 15 ... s of wall time."""
        if host not in self._endpoints:
            raise RuntimeError(f"no endpoint known for host {host!r}")
        sock = self._sockets.get(host)
        if sock is None:
            sock = self._context.socket(zmq.PUSH)
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.SNDHWM, SEND_HWM)
            if connect_timeout_s > 0:
                sock.setsockopt(zmq.CONNECT_TIMEOUT, max(1, round(connect_timeout_s * 1000)))
            if self._curve is not None:
                secure_client(sock, self._curve, host)
            self._monitors[host] = sock.get_monitor_socket(_PEER_EVENTS)
            sock.connect(self._endpoints[host])
            self._sockets[host] = sock
        return sock

    def send(self, host: str, frames: list) -> None:
        """Raises RuntimeError if `host` is unknown, down (PeerDown), or its send queue is full."""
        sock = self.connect(host)
        self.poll_events()
        reason = self.down_reason(host)
        if reason is not None:
            raise PeerDown(reason)
        try:
            sock.send_multipart(frames, copy=False, flags=zmq.NOBLOCK)
        except zmq.Again:
            raise RuntimeError(f"send queue to {host} is full (peer unreachable?)") from None

    def poll_events(self) -> list[str]:
        """Take in the monitors' events; the hosts found down since the last call."""
        now = time.time()
        for host, monitor in self._monitors.items():
            while monitor.poll(0):
                event = recv_monitor_message(monitor)["event"]
                if event == zmq.EVENT_DISCONNECTED:
                    self._lost.setdefault(host, now)
                elif event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                    if host in self._reported:
                        log.info("host %s is back", host)
                    if host in self._probing:
                        self._probing.discard(host)
                        self._back.append(host)
                    self._lost.pop(host, None)
                    self._reported.discard(host)
        down = [h for h, t in self._lost.items() if now - t >= DOWN_GRACE_S and h not in self._reported]
        for host in down:
            log.warning("%s", self.down_reason(host))
        self._reported.update(down)
        return down

    def down_reason(self, host: str) -> str | None:
        """Why `host` is down (its connection closed over DOWN_GRACE_S ago), or None."""
        lost = self._lost.get(host)
        if lost is None or time.time() - lost < DOWN_GRACE_S:
            return None
        return f"host {host} is down: its connection closed at {clock(lost)} and has not come back"

    def close(self) -> None:
        for host, sock in self._sockets.items():
            sock.disable_monitor()
            self._monitors[host].close(linger=0)
            sock.close(linger=0)
        self._sockets.clear()
        self._monitors.clear()


def serve(node: Any, peers: Iterable[str], inbox: Any, handle: Callable[[Any, Outbox], None],
          tick: Callable[[Outbox], None], wait_s: float) -> None:
    """A role thread's loop: its own Outbox, connected up front to `peers` (a host must be watched
    before it can be seen to die, and no measured message should pay a connection's handshakes);
    then, until the node stops, `tick` and the next item of `inbox` (waiting at most `wait_s`)
    handed to `handle`.  `node`: the role's NodeContext (its context, endpoints, curve, stop)."""
    outbox = Outbox(node.context, node.endpoints, node.curve)
    for host in peers:
        outbox.connect(host)
    try:
        while not node.stop.is_set():
            tick(outbox)
            try:
                item = inbox.get(timeout=wait_s)
            except queue.Empty:
                continue
            handle(item, outbox)
    finally:
        outbox.close()


def largest_tensor_bytes(models: Iterable[str], max_images: int) -> int:
    """The largest tensor a legitimate state for these models holds: a float32 sample (or solver
    history) of max_images images of the largest sample shape their configs give, as the stage
    worker's state check demands; for a latent pipeline folder the largest of its float32 latents,
    embeddings (with guidance: 2 per image) and decoded images (no torch: the configs are read as
    JSON)."""
    return max((_tensor_bytes(m, max_images) for m in models), default=0)


def _tensor_bytes(model: str, n: int) -> int:
    if is_pipeline_folder(model):
        space = latent_space(model)
        return max(space.latents_bytes(n), space.embeddings_bytes(n, guidance=True), space.image_bytes(n))
    return SampleShape.of(denoiser_config(model)).tensor_bytes(n)


def inbox_frame_limit(config: NodeConfig) -> int:
    """ZMQ_MAXMSGSIZE of the inbox (it bounds each frame, not the message): no legitimate frame is
    bigger than an envelope, a state header or one tensor of max_images images of any model in
    the cluster (a device receives the images of whichever model ran last), so a bigger one (its
    sender is disconnected) is never buffered, whatever max_message_bytes allows."""
    models = {m for held in config.models_by_host().values() for m in held}
    legitimate = max(MAX_ENVELOPE_BYTES, MAX_HEADER_BYTES, largest_tensor_bytes(models, config.max_images))
    return min(config.max_message_bytes, legitimate)


def connect_endpoint(bind: str) -> str:
    """An address others (and this node itself) can connect to, for a wildcard bind."""
    return bind.replace("tcp://*:", "tcp://127.0.0.1:").replace("tcp://0.0.0.0:", "tcp://127.0.0.1:")


