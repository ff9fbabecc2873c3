"""Node processes on this machine's loopback: config files, start, wait until ready, stop by PID.

What the runner does inside Mininet hosts, minus Mininet: the tests use it, and so can anyone who
wants to try a workload without root. Every process this module starts is stopped by its own PID
(SIGTERM, then SIGKILL after a grace period); nothing is ever killed by name.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from nodes.runtime.launcher import LaunchedNode, NodeLauncher, die_with_parent
from nodes.runtime.node_config import NodeConfig, Peer

ROOT = Path(__file__).resolve().parents[2]  # the repository


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
    `common`: fields every node shares (steps, scheduler, request_timeout_s, t0, ...)."""
    ports = dict(zip(hosts, free_ports(len(hosts)), strict=True))
    endpoints = {h: f"tcp://127.0.0.1:{p}" for h, p in ports.items()}
    peers = {h: Peer(endpoint=endpoints[h], role=spec["role"], models=spec.get("models", []))
             for h, spec in hosts.items()}
    configs = {}
    for host, spec in hosts.items():
        data = {"host": host, "bind": endpoints[host], "coordinator": coordinator, "run_dir": run_dir,
                "peers": {h: p for h, p in peers.items() if h != host}, **common, **spec}
        configs[host] = NodeConfig.model_validate(data)
    return configs


class NodeProcess:
    """One node process, `python -m nodes.runtime.node` or forked from a launcher; its log goes to
    <run_dir>/logs/<host>.log."""

    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self.host = config.host
        self.config_path = config.config_file
        self.log_path = config.log_file
        self.status_path = config.status_file
        self.process: subprocess.Popen | LaunchedNode | None = None

    def start(self, launcher: NodeLauncher | None = None) -> None:
        """A process of its own, or (with `launcher`) one forked from the shared imports."""
        argv = self.config.write_for_launch()
        if launcher is not None:
            self.process = launcher.spawn(self.host, self.config_path, self.log_path)
            return
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                argv,
                cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env={**os.environ, "PYTHONUNBUFFERED": "1"}, preexec_fn=die_with_parent,
            )

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def status(self) -> dict[str, Any] | None:
        try:
            status = json.loads(self.status_path.read_text())
        except (OSError, json.JSONDecodeError):
            return None
        return status if status.get("pid") == self.pid else None  # not a previous run's file

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
            if self.process is not None and self.process.poll() is not None:
                code = self.process.returncode
                raise RuntimeError(f"node {self.host} exited with {code}: {self.log_tail()}")
            time.sleep(0.05)
        states = "/".join(sorted(wanted))
        raise TimeoutError(f"node {self.host} not {states} after {timeout:g} s: {self.log_tail()}")

    def log_tail(self, lines: int = 5) -> str:
        try:
            return " | ".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, grace: float = 15.0) -> int:
        """SIGTERM, wait; SIGKILL if it has not exited after `grace` seconds. Its exit code."""
        if self.process is None:
            return 0
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(grace)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def kill(self) -> None:
        """Abrupt death (SIGKILL), as when a host fails."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


class LocalCluster:
    """Start every node, wait until all are ready; stop them all on exit, whatever happened.
    `shared_imports`: fork the nodes from one launcher (nodes/runtime/launcher.py) rather than start a
    process each, as the emulated runner does."""

    def __init__(self, configs: dict[str, NodeConfig], shared_imports: bool = False) -> None:
        self.nodes = {host: NodeProcess(config) for host, config in configs.items()}
        self.launcher: NodeLauncher | None = None
        if shared_imports:
            run_dirs = {config.run_dir for config in configs.values()}
            if len(run_dirs) != 1:
                raise ValueError("shared_imports needs every node in one run directory")
            self.launcher = NodeLauncher(run_dirs.pop())

    def __enter__(self) -> LocalCluster:
        try:
            if self.launcher is not None:
                self.launcher.start()
            for node in self.nodes.values():
                node.start(self.launcher)
            for node in self.nodes.values():
                node.wait_for({"ready", "running"}, timeout=120)
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> dict[str, int]:
        codes = {host: node.stop() for host, node in self.nodes.items()}
        if self.launcher is not None:
            self.launcher.close()
        return codes

    def wait_workload(self, timeout: float) -> dict[str, dict[str, Any]]:
        """The status of every device once its workload has ended (all requests recorded)."""
        deadline = time.monotonic() + timeout
        live = {"ready", "running"}
        return {
            host: node.wait_for(live, max(0.1, deadline - time.monotonic()), workload_done=True)
            for host, node in self.nodes.items()
            if node.config.role == "device" and node.config.workload
        }


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
                timeout: float = 60.0) -> tuple[Any, float]:
        """Send one request; the decoded result or error message, and its arrival time."""
        import zmq

        from nodes.runtime.protocol import WIRE_VERSION, RequestMsg, RequestTimes, decode, encode

        message = RequestMsg(v=WIRE_VERSION, kind="request", request_id=request_id, origin=self.host,
                             strategy=strategy, n=len(labels), labels=labels, seed=seed,
                             timestamps=RequestTimes(request_sent=time.time()))
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
