"""Node processes: the one handle on a node process (NodeProcess: its own process, forked from the
launcher, or forked into a Mininet host's namespace), waiting until nodes are ready, stopping them,
and the cluster of them on this machine (LocalCluster: the tests, deploy mode, anyone who wants to
try a workload without root; the emulated runner starts the same handles in Mininet hosts).
Every process this module starts is stopped by its own PID (SIGTERM, then SIGKILL after a grace
period); nothing is ever killed by name.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from nodes.runtime.launcher import LaunchedNode, NodeLauncher, die_with_parent
from nodes.runtime.node_config import NodeConfig, Peer

ROOT = Path(__file__).resolve().parents[2]  # the repository
LIVE = ("ready", "running")  # the states of a node that serves
STOP_GRACE_S = 15.0


def free_ports(count: int) -> list[int]:
    """Ports the kernel hands out now (held open together so that they are distinct)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def loopback_configs(run_dir: Path, hosts: dict[str, dict[str, Any]], coordinator: str = "edge",
                     **common: Any) -> dict[str, NodeConfig]:
    """One config per host. `hosts`: name -> {role, models, and any other NodeConfig field};
    `common`: fields every node shares (steps, scheduler, request_timeout_s, clock, ...)."""
    ports = dict(zip(hosts, free_ports(len(hosts)), strict=True))
    endpoints = {h: f"tcp://127.0.0.1:{p}" for h, p in ports.items()}
    peers = {h: Peer(endpoint=endpoints[h], role=spec["role"], models=spec.get("models", []),
                     latent_components=spec.get("latent_components"))
             for h, spec in hosts.items()}
    configs = {}
    for host, spec in hosts.items():
        data = {"host": host, "bind": endpoints[host], "coordinator": coordinator, "run_dir": run_dir,
                "peers": {h: p for h, p in peers.items() if h != host}, **common, **spec}
        configs[host] = NodeConfig.model_validate(data)
    return configs


class NodeProcess:
    """The one handle on a node process, however it starts: a process of its own (`python -m
    nodes.runtime.node`), forked from a launcher that holds the imports, or forked from it into a
    Mininet host's network namespace (`netns_pid`).  Its log goes to <run_dir>/logs/<host>.log;
    it is stopped by its own PID."""

    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self.host = config.host
        self.config_path = config.config_file
        self.log_path = config.log_file
        self.status_path = config.status_file
        self.process: subprocess.Popen | LaunchedNode | None = None
        self.ready_at: float | None = None  # time.time() when it was first seen ready

    def start(self, launcher: NodeLauncher | None = None, netns_pid: int | None = None) -> None:
        argv = self.config.write_for_launch()
        if launcher is not None:
            self.process = launcher.spawn(self.host, self.config_path, self.log_path, netns_pid=netns_pid)
            return
        if netns_pid is not None:
            raise ValueError("a node enters a network namespace only when forked from a launcher")
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                argv,
                cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env={**os.environ, "PYTHONUNBUFFERED": "1"}, preexec_fn=die_with_parent,
            )

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def exit_code(self) -> int | None:
        return self.process.poll() if self.process is not None else None

    def status(self) -> dict[str, Any] | None:
        try:
            status = json.loads(self.status_path.read_text())
        except (OSError, json.JSONDecodeError):
            return None
        return status if status.get("pid") == self.pid else None  # not a previous run's file

    def poll_ready(self) -> bool:
        """Whether it has reported ready (its first sighting sets `ready_at`); RuntimeError naming
        its log's last lines if it exited before."""
        if self.ready_at is not None:
            return True
        code = self.exit_code()
        if code is not None:
            raise RuntimeError(f"node {self.host} exited with {code} before it was ready: {self.log_tail()}")
        status = self.status()
        if status and status["state"] in LIVE:
            self.ready_at = time.time()
            return True
        return False

    def wait_for(self, states: Iterable[str], timeout: float, workload_done: bool = False) -> dict[str, Any]:
        """The status file once its state is one of `states` (and, if asked, the workload is done)."""
        wanted = set(states)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.status()
            if status and status["state"] in wanted and (
                not workload_done or status.get("workload", {}).get("done")
            ):
                return status
            code = self.exit_code()
            if code is not None:
                raise RuntimeError(f"node {self.host} exited with {code}: {self.log_tail()}")
            time.sleep(0.05)
        states = "/".join(sorted(wanted))
        raise TimeoutError(f"node {self.host} not {states} after {timeout:g} s: {self.log_tail()}")

    def log_tail(self, lines: int = 5) -> str:
        try:
            return " | ".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def terminate(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)

    def wait(self, timeout: float) -> int | None:
        """Its exit code within `timeout` seconds, else SIGKILL and its exit code."""
        if self.process is None:
            return None
        try:
            return self.process.wait(max(0.01, timeout))
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait(5)

    def stop(self, grace: float = STOP_GRACE_S) -> int | None:
        """SIGTERM, wait; SIGKILL if it has not exited after `grace` seconds. Its exit code."""
        self.terminate()
        return self.wait(grace)

    def kill(self) -> None:
        """Abrupt death (SIGKILL), as when a host fails."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def wait_ready(nodes: Iterable[NodeProcess], timeout: float,
               on_ready: Callable[[NodeProcess], None] | None = None) -> None:
    """Until every node has reported ready; `on_ready(node)` the moment each one does (the runner
    moves it into its host's CPU group then).  RuntimeError naming the late ones after `timeout`."""
    nodes = list(nodes)
    deadline = time.monotonic() + timeout
    pending = list(nodes)
    while pending:
        for node in [n for n in pending if n.poll_ready()]:
            pending.remove(node)
            if on_ready is not None:
                on_ready(node)
        if pending and time.monotonic() > deadline:
            raise RuntimeError(f"nodes not ready after {timeout:g} s: {', '.join(n.host for n in pending)} "
                               f"({pending[0].log_tail()})")
        if pending:
            time.sleep(0.05)


def stop_all(nodes: Iterable[NodeProcess], grace: float = STOP_GRACE_S) -> dict[str, int | None]:
    """SIGTERM to every node, then wait for all within `grace` (SIGKILL after): devices record
    their unfinished requests as failed on the way out."""
    nodes = list(nodes)
    for node in nodes:
        node.terminate()
    deadline = time.monotonic() + grace
    return {node.host: node.wait(deadline - time.monotonic()) for node in nodes}


class LocalCluster:
    """Node processes on this machine: the servers first, ready before any device starts its
    workload, then the devices; on exit the devices stop first (they record what is unfinished),
    then the servers, whatever happened.  `hosts`: which of the configs to start (deploy mode
    starts some hosts on each machine); `shared_imports`: fork the nodes from one launcher
    (nodes/runtime/launcher.py), as the emulated runner does, rather than start a process each."""

    def __init__(self, configs: dict[str, NodeConfig], hosts: Iterable[str] | None = None,
                 shared_imports: bool = False, ready_timeout_s: float = 120.0) -> None:
        chosen = list(configs) if hosts is None else list(dict.fromkeys(hosts))
        unknown = [h for h in chosen if h not in configs]
        if unknown:
            raise ValueError(f"host {unknown[0]!r} has no node config (configs: {', '.join(configs)})")
        order = sorted(chosen, key=lambda h: configs[h].role == "device")  # stable: servers first
        self.nodes = {host: NodeProcess(configs[host]) for host in order}
        self.ready_timeout_s = ready_timeout_s
        self.launcher: NodeLauncher | None = None
        if shared_imports:
            run_dirs = {configs[h].run_dir for h in chosen}
            if len(run_dirs) != 1:
                raise ValueError("shared_imports needs every node in one run directory")
            self.launcher = NodeLauncher(run_dirs.pop())

    def __enter__(self) -> LocalCluster:
        try:
            if self.launcher is not None:
                self.launcher.start()
            for wave in (self._servers(), self._devices()):
                for node in wave:
                    node.start(self.launcher)
                wait_ready(wave, self.ready_timeout_s)
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _servers(self) -> list[NodeProcess]:
        return [n for n in self.nodes.values() if n.config.role != "device"]

    def _devices(self) -> list[NodeProcess]:
        return [n for n in self.nodes.values() if n.config.role == "device"]

    def stop(self) -> dict[str, int | None]:
        codes = {**stop_all(self._devices()), **stop_all(self._servers())}
        if self.launcher is not None:
            self.launcher.close()
        return codes

    @property
    def devices(self) -> list[str]:
        """The devices with a workload."""
        return [n.host for n in self._devices() if n.config.workload]

    def wait_workload(self, timeout: float) -> dict[str, dict[str, Any]]:
        """The status of every device once its workload has ended (all requests recorded)."""
        deadline = time.monotonic() + timeout
        return {host: self.nodes[host].wait_for(LIVE, max(0.1, deadline - time.monotonic()),
                                                workload_done=True) for host in self.devices}

    def wait_stopped(self, stop: threading.Event) -> str | None:
        """Until `stop` is set or a node exits; the host that exited, if one did."""
        while not stop.wait(0.5):
            for host, node in self.nodes.items():
                if node.exit_code() is not None:
                    return host
        return None


class Probe:
    """A device played by the calling process (tests, health checks): it binds the inbox of a host
    listed as a device in the cluster, sends requests to the coordinator and waits for the answer.
    Use from one thread; close() when done."""

    def __init__(self, host: str, endpoint: str, coordinator_endpoint: str) -> None:
        import zmq

        self.host = host
        self.context = zmq.Context()
        self.inbox = self.context.socket(zmq.PULL)
        self.inbox.setsockopt(zmq.LINGER, 0)
        self.inbox.bind(endpoint)
        self.outbox = self.context.socket(zmq.PUSH)
        self.outbox.setsockopt(zmq.LINGER, 0)
        self.outbox.connect(coordinator_endpoint)

    def request(self, request_id: str, strategy: str, labels: list[int], seed: int,
                timeout: float = 60.0, **latent: Any) -> tuple[Any, float]:
        """Send one request; the decoded result or error message, and its arrival time.  `latent`:
        a latent pipeline's request's `prompts`, `negative_prompts`, `guidance_scale`."""
        import zmq

        from nodes.runtime.protocol import WIRE_VERSION, RequestMsg, RequestTimes, decode, encode

        message = RequestMsg(v=WIRE_VERSION, kind="request", request_id=request_id, origin=self.host,
                             strategy=strategy, n=len(labels), labels=labels, seed=seed,
                             timestamps=RequestTimes(request_sent=time.time()), **latent)
        self.outbox.send_multipart(encode(message))
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            if not self.inbox.poll(int(remaining * 1000) + 1, zmq.POLLIN):
                break
            frames = self.inbox.recv_multipart(copy=False)
            received = time.time()
            reply = decode([f.buffer for f in frames])
            if reply.envelope.request_id == request_id and reply.envelope.kind in ("result", "error"):
                return reply, received
        raise TimeoutError(f"no result for {request_id} within {timeout:g} s")

    def close(self) -> None:
        self.inbox.close(linger=0)
        self.outbox.close(linger=0)
        self.context.term()
