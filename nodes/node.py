"""The node process: one per Mininet host, `python -m nodes.node --config FILE.json`, or `main()`
in a child forked by the node launcher (nodes/launcher.py), as the runner does.

Threads, each with its own ZeroMQ sockets (a socket is never shared across threads):
    receiver     the PULL inbox bound on this host's endpoint; stamps the arrival time, checks the
                 message completely (nodes/protocol.py) and hands it to the thread it is for;
                 a malformed message is dropped, logged and counted, never fatal. A stage message
                 is also checked against this node (plan, models, tensor shapes) before it is
                 queued, within a byte bound (WorkQueue); a refused one is counted by reason and
                 its device told why
    worker       runs stages (any node that holds models), forwards the state to the next
                 stage's host, or the result to the requesting device, over its PUSH sockets
    coordinator  (the edge host named `coordinator`) plans each request with its strategy and
                 dispatches stage 0
    device       (role device) issues the workload at t0 + at_s, collects results, errors and
                 timeouts, writes records and samples

Files under `run_dir`: records/<host>.jsonl and samples/<request_id>.npz (devices),
nodes/<host>.json (status and counters: written when ready, when a device's workload is done,
and at exit). SIGTERM or SIGINT: every thread stops, sockets close with linger 0, exit 0.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import queue
import signal
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, replace
from typing import Any

import zmq
from zmq.utils.monitor import recv_monitor_message

from nodes.node_config import NodeConfig, load_node_config
from nodes.plan import Plan, Stage
from nodes.protocol import (
    MAX_ENVELOPE_BYTES,
    WIRE_VERSION,
    AcceptedMsg,
    ErrorMsg,
    Message,
    ProtocolError,
    RequestMsg,
    ResultMsg,
    StageMsg,
    decode,
    encode,
)
from nodes.security import (
    REFUSED_EVENTS,
    CurveKeys,
    load_curve_keys,
    secure_client,
    secure_server,
    start_authenticator,
)
from nodes.state import MAX_HEADER_BYTES

log = logging.getLogger("nodes.node")
POLL_MS = 100
STATUS_INTERVAL_S = 2.0
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
    made the Outbox. With `curve` (nodes/security.py) every socket is a CURVE client pinned to its
    peer's key.

    Each socket has a monitor: a killed peer's TCP connections are closed by its kernel, so the
    DISCONNECTED event comes at once. A host whose connection closed and has not completed a
    handshake again within DOWN_GRACE_S is down: sends to it raise PeerDown at once rather than
    queue for a peer that may never come back."""

    def __init__(self, context: zmq.Context, endpoints: dict[str, str],
                 curve: CurveKeys | None = None) -> None:
        self._context = context
        self._endpoints = endpoints
        self._curve = curve
        self._sockets: dict[str, zmq.Socket] = {}
        self._monitors: dict[str, zmq.Socket] = {}
        self._lost: dict[str, float] = {}  # host -> when its connection closed (not back since)
        self._reported: set[str] = set()

    def connect(self, host: str) -> zmq.Socket:
        """The socket to `host`, connecting it now if need be (to watch a peer before sending)."""
        if host not in self._endpoints:
            raise RuntimeError(f"no endpoint known for host {host!r}")
        sock = self._sockets.get(host)
        if sock is None:
            sock = self._context.socket(zmq.PUSH)
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.SNDHWM, SEND_HWM)
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


def inbox_frame_limit(config: NodeConfig) -> int:
    """ZMQ_MAXMSGSIZE of the inbox (it bounds each frame, not the message): no legitimate frame is
    bigger than an envelope, a state header or one tensor of max_images images of any model in
    the cluster (a device receives the images of whichever model ran last), so a bigger one (its
    sender is disconnected) is never buffered, whatever max_message_bytes allows."""
    from nodes.worker import largest_tensor_bytes

    models = {m for held in config.models_by_host().values() for m in held}
    legitimate = max(MAX_ENVELOPE_BYTES, MAX_HEADER_BYTES, largest_tensor_bytes(models, config.max_images))
    return min(config.max_message_bytes, legitimate)


def connect_endpoint(bind: str) -> str:
    """An address others (and this node itself) can connect to, for a wildcard bind."""
    return bind.replace("tcp://*:", "tcp://127.0.0.1:").replace("tcp://0.0.0.0:", "tcp://127.0.0.1:")


def rss_figures() -> dict[str, int]:
    """Resident memory: all of it (RSS, which counts pages shared with other processes in full),
    this process's proportional share (PSS), what only it holds (USS), and the RSS high-water mark."""
    import psutil

    process = psutil.Process()
    info = process.memory_full_info()
    figures = {"rss_bytes": info.rss, "uss_bytes": info.uss, "pss_bytes": getattr(info, "pss", 0)}
    with contextlib.suppress(OSError, ValueError, IndexError):
        with open(f"/proc/{process.pid}/status") as f:
            status = f.read()
        figures["rss_peak_bytes"] = int(status.split("VmHWM:")[1].split()[0]) * 1024
    return figures


class Node:
    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self.host = config.host
        self.stop = threading.Event()
        self.stats = Stats()
        self.context = zmq.Context()
        self.endpoints = {h: p.endpoint for h, p in config.peers.items()}
        self.endpoints[self.host] = connect_endpoint(config.bind)
        self.roles = config.roles()
        self.work = WorkQueue()
        self.requests: queue.Queue[Inbound] = queue.Queue()
        self.replies: queue.Queue[Inbound] = queue.Queue()
        self._bound = threading.Event()
        self._bind_error: str | None = None
        self._threads: list[threading.Thread] = []
        self._status_lock = threading.Lock()
        self.started = time.time()
        self.status_path = config.status_file
        self.worker = None
        self.device = None
        self.curve: CurveKeys | None = None  # set by prepare() when the config asks for CURVE
        self._auth = None  # the ZAP authenticator thread, with CURVE

    # --- lifecycle ---------------------------------------------------------------------------

    def prepare(self) -> None:
        """Everything that can fail on a bad config, before any socket exists: ValueError."""
        from nodes.worker import StageWorker  # torch and diffusers: only once the config is good

        self.curve = load_curve_keys(self.config)
        self.worker = StageWorker(self)
        if self.config.role == "device":
            from nodes.device import Device

            self.device = Device(self)

    def start(self) -> None:
        if self.curve is not None:
            self._auth = start_authenticator(self.context, self.curve)
        self._spawn("receiver", self._receive)
        if not self._bound.wait(10) or self._bind_error:
            self.stop.set()
            raise RuntimeError(self._bind_error or f"binding {self.config.bind} timed out")
        self._spawn("worker", self.worker.run)
        if self.config.is_coordinator:
            from nodes.coordinator import Coordinator

            self._spawn("coordinator", Coordinator(self).run)
        self.write_status("ready")
        if self.device is not None:
            self._spawn("device", self.device.run)
        config = self.config
        log.info("ready: %s on %s, models %s", config.role, config.bind, config.models or "none")

    def _spawn(self, name: str, target) -> None:
        thread = threading.Thread(target=self._guard, args=(name, target), name=name, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _guard(self, name: str, target) -> None:
        """A thread that dies of a bug stops the node loudly rather than leaving it half-alive."""
        try:
            target()
        except Exception:
            log.exception("thread %s failed; stopping the node", name)
            self.stats.count("thread_failures")
            self.stop.set()

    def shutdown(self) -> bool:
        self.stop.set()
        for thread in self._threads:
            thread.join(timeout=10)
        alive = [t.name for t in self._threads if t.is_alive()]
        if self.device is not None:
            self.device.close()
        self.write_status("stopped")
        if alive:
            log.error("threads still running at exit: %s", ", ".join(alive))
            return False
        if self._auth is not None:
            self._auth.stop()
        self.context.term()
        return True

    def write_status(self, state: str, **extra: Any) -> None:
        status = {
            "host": self.host, "role": self.config.role, "state": state, "pid": os.getpid(),
            "bind": self.config.bind, "coordinator": self.config.is_coordinator,
            "models": list(self.config.models), "compute_mode": self.config.compute.mode,
            "hardware": self.config.compute.hardware, "started": self.started, "time": time.time(),
            **(self.worker.status() if self.worker else {}), **rss_figures(), **self.stats.snapshot(),
            **({"workload": self.device.progress()} if self.device else {}), **extra,
        }
        path = self.status_path
        with self._status_lock:  # written by the main and the device thread
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.tmp")
            tmp.write_text(json.dumps(status, indent=1))
            os.replace(tmp, path)

    # --- receiver thread ---------------------------------------------------------------------

    def _receive(self) -> None:
        inbox = self.context.socket(zmq.PULL)
        inbox.setsockopt(zmq.LINGER, 0)
        # a peer that sends a bigger frame than this is disconnected by ZeroMQ before we see it
        inbox.setsockopt(zmq.MAXMSGSIZE, inbox_frame_limit(self.config))
        inbox.setsockopt(zmq.RCVHWM, RECV_HWM)
        monitor = None
        if self.curve is not None:
            secure_server(inbox, self.curve)
            # refused peers never produce a message: the handshake events are what shows them
            monitor = inbox.get_monitor_socket(REFUSED_EVENTS)
        try:
            inbox.bind(self.config.bind)
        except zmq.ZMQError as exc:
            self._bind_error = f"cannot bind {self.config.bind}: {exc}"
            if monitor is not None:
                inbox.disable_monitor()
                monitor.close(linger=0)
            inbox.close(linger=0)
            self._bound.set()
            return
        self._bound.set()
        poller = zmq.Poller()
        poller.register(inbox, zmq.POLLIN)
        if monitor is not None:
            poller.register(monitor, zmq.POLLIN)
        refusals = Outbox(self.context, self.endpoints, self.curve)  # errors for refused stages
        try:
            while not self.stop.is_set():
                ready = dict(poller.poll(POLL_MS))
                if monitor is not None and monitor in ready:
                    self._refused(monitor)
                if inbox not in ready:
                    continue
                while True:
                    try:
                        frames = inbox.recv_multipart(copy=False, flags=zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    self._route(frames, time.time(), refusals)
        finally:
            refusals.close()
            if monitor is not None:
                inbox.disable_monitor()
                monitor.close(linger=0)
            inbox.close(linger=0)

    def _refused(self, monitor: zmq.Socket) -> None:
        while monitor.poll(0):
            event = recv_monitor_message(monitor)
            self.stats.count("handshake_refused")
            # event: EVENT_HANDSHAKE_FAILED_AUTH (an unknown key; value: the ZAP status code) or
            # _PROTOCOL / _NO_DETAIL (no CURVE, or not ZeroMQ at all)
            log.warning("refused a peer on %s: handshake failed (event %#x, value %#x)",
                        event["endpoint"].decode(errors="replace"), event["event"], event["value"])

    def _route(self, frames: list, received: float, refusals: Outbox) -> None:
        self.stats.count("received")
        try:
            message = decode([f.buffer for f in frames])
        except ProtocolError as exc:
            self.stats.drop("malformed", str(exc))
            return
        except Exception as exc:  # a decoder bug must not kill the node either; count it apart
            self.stats.drop("decoder_error", f"{exc.__class__.__name__}: {exc}")
            return
        envelope = message.envelope
        item = Inbound(message, received)
        if envelope.origin not in self.roles or self.roles[envelope.origin] != "device":
            self.stats.drop("unknown_origin", f"{envelope.kind} from unknown device {envelope.origin!r}")
            return
        if isinstance(envelope, RequestMsg):
            if not self.config.is_coordinator:
                self.stats.drop("misdirected", f"request {envelope.request_id} sent to a non-coordinator")
                return
            self.requests.put(item)
        elif isinstance(envelope, StageMsg):
            self._admit(item, refusals)
        elif isinstance(envelope, AcceptedMsg | ResultMsg | ErrorMsg):
            if self.device is None or envelope.origin != self.host:
                reason = f"{envelope.kind} for {envelope.origin} arrived at {self.host}"
                self.stats.drop("misdirected", reason)
                return
            self.replies.put(item)

    def _admit(self, item: Inbound, refusals: Outbox) -> None:
        """Check a stage message against this node (plan, models, tensor shapes) before it is
        queued, so that a message the worker would refuse never waits in memory."""
        from nodes.worker import Rejected

        envelope: StageMsg = item.message.envelope  # type: ignore[assignment]
        try:
            checked = self.worker.check(envelope, item.message.state)
        except Exception as exc:  # Rejected, or a checker bug: either way the message goes, not the node
            category = f"rejected_{exc.part}" if isinstance(exc, Rejected) else "checker_error"
            self._refuse(refusals, category, envelope, f"stage {envelope.stage} rejected: {exc}")
            return
        try:
            self.work.put_nowait(replace(item, checked=checked), item.message.message_bytes)
        except QueueFull as exc:
            reason = f"stage {envelope.stage} dropped on {self.host}: {exc}"
            self._refuse(refusals, exc.category, envelope, reason)

    def _refuse(self, refusals: Outbox, category: str, envelope: StageMsg, reason: str) -> None:
        """Count and log the drop; the request's device hears why, as from the worker."""
        self.stats.drop(category, f"{envelope.request_id}: {reason}")
        frames = self.error_frames(envelope.origin, envelope.request_id, reason, envelope.plan,
                                   envelope.stage)
        try:
            refusals.send(envelope.origin, frames)
            self.stats.count("errors_sent")
        except RuntimeError:  # a flood of refusals must not become a flood of log lines too
            self.stats.count("errors_unsent")

    # --- helpers for the other threads --------------------------------------------------------

    def error_frames(self, origin: str, request_id: str, reason: str, plan: str | None = None,
                     stage: int | None = None) -> list:
        return encode(ErrorMsg(v=WIRE_VERSION, kind="error", request_id=request_id, origin=origin,
                               host=self.host, reason=reason[:2000], plan=plan, stage=stage))


def configure_logging(config: NodeConfig) -> None:
    logging.basicConfig(
        level=config.log_level.upper(), stream=sys.stderr,
        format=f"%(asctime)s {config.host} %(threadName)s %(levelname)s %(message)s",
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nodes.node", description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="the node's JSON config file")
    args = parser.parse_args(argv)
    try:
        config = load_node_config(args.config)
    except ValueError as exc:
        print(f"node: error: {exc}", file=sys.stderr)
        return 2
    configure_logging(config)
    node = Node(config)
    try:
        node.prepare()
    except ValueError as exc:
        print(f"node {config.host}: error: {exc}", file=sys.stderr)
        return 2
    # the handlers only set a flag: the main thread does the stopping, outside signal context
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: node.stop.set())
    try:
        node.start()
    except RuntimeError as exc:
        print(f"node {config.host}: error: {exc}", file=sys.stderr)
        node.shutdown()
        return 1
    # a fresh status every few seconds: liveness and counters for whoever watches the run
    while not node.stop.wait(STATUS_INTERVAL_S):
        node.write_status("running")
    failed = node.stats.snapshot()["counts"].get("thread_failures", 0)
    clean = node.shutdown()
    log.info("stopped")
    return 0 if clean and not failed else 1


if __name__ == "__main__":
    sys.exit(main())
