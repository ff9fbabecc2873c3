"""The node process: one per Mininet host, `python -m nodes.runtime.node --config FILE.json`, or `main()`
in a child forked by the node launcher (nodes/runtime/launcher.py), as the runner does.

Threads, each with its own ZeroMQ sockets (a socket is never shared across threads):
    receiver     the PULL inbox bound on this host's endpoint; stamps the arrival time, checks the
                 message completely (nodes/runtime/protocol.py) and hands it to the thread it is for;
                 a malformed message is dropped, logged and counted, never fatal. A stage message
                 is also checked against this node (plan, models, tensor shapes) before it is
                 queued, within a byte bound (WorkQueue); a refused one is counted by reason and
                 its device told why
    worker       runs stages (any node that holds models), forwards the state to the next
                 stage's host, or the result to the requesting device, over its PUSH sockets
    coordinator  (the edge host named `coordinator`) plans each request with its strategy and
                 dispatches stage 0; learns links and load from the other nodes' reports
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
from dataclasses import replace
from typing import Any

import zmq
from zmq.utils.monitor import recv_monitor_message

from nodes.runtime.node_config import NodeConfig, load_node_config
from nodes.runtime.protocol import (
    WIRE_VERSION,
    AcceptedMsg,
    ErrorMsg,
    ProtocolError,
    ReportMsg,
    RequestMsg,
    ResultMsg,
    StageMsg,
    WireStage,
    decode,
    encode,
)
from nodes.runtime.security import (
    REFUSED_EVENTS,
    CurveKeys,
    load_curve_keys,
    secure_server,
    start_authenticator,
)
from nodes.runtime.transport import (
    POLL_MS,
    RECV_HWM,
    Inbound,
    Outbox,
    QueueFull,
    Stats,
    WorkQueue,
    connect_endpoint,
    inbox_frame_limit,
)

log = logging.getLogger("nodes.runtime.node")
STATUS_INTERVAL_S = 2.0
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
        self.coordinator = None
        self.curve: CurveKeys | None = None  # set by prepare() when the config asks for CURVE
        self._auth = None  # the ZAP authenticator thread, with CURVE

    # --- lifecycle ---------------------------------------------------------------------------

    def prepare(self) -> None:
        """Everything that can fail on a bad config, before any socket exists: ValueError."""
        from nodes.runtime.worker import StageWorker  # torch and diffusers: only once the config is good

        self.curve = load_curve_keys(self.config)
        self.worker = StageWorker(self)
        if self.config.role == "device":
            from nodes.runtime.device import Device

            self.device = Device(self)
        if self.config.is_coordinator:
            from nodes.runtime.coordinator import Coordinator

            # here, not at start: a plugin strategy is imported and built now, and may refuse
            self.coordinator = Coordinator(self)

    def start(self) -> None:
        if self.curve is not None:
            self._auth = start_authenticator(self.context, self.curve)
        self._spawn("receiver", self._receive)
        if not self._bound.wait(10) or self._bind_error:
            self.stop.set()
            raise RuntimeError(self._bind_error or f"binding {self.config.bind} timed out")
        self._spawn("worker", self.worker.run)
        if self.coordinator is not None:
            self._spawn("coordinator", self.coordinator.run)
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
        if isinstance(envelope, RequestMsg | ReportMsg):
            if not self.config.is_coordinator:
                reason = f"{envelope.kind} {envelope.request_id} sent to a non-coordinator"
                self.stats.drop("misdirected", reason)
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
        from nodes.runtime.worker import Rejected

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

    def error_frames(self, origin: str, request_id: str, reason: str, plan: list[WireStage] | None = None,
                     stage: int | None = None) -> list:
        return encode(ErrorMsg(v=WIRE_VERSION, kind="error", request_id=request_id, origin=origin,
                               host=self.host, reason=reason[:2000], plan=plan, stage=stage))


def configure_logging(config: NodeConfig) -> None:
    logging.basicConfig(
        level=config.log_level.upper(), stream=sys.stderr,
        format=f"%(asctime)s {config.host} %(threadName)s %(levelname)s %(message)s",
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nodes.runtime.node", description=__doc__.splitlines()[0])
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
