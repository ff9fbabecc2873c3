"""Node processes inside Mininet hosts: configs, start, readiness, CPU limits, stop by pid.

The emulated counterpart of nodes/runtime/local_cluster.py.  Every host with a node role (device, edge,
cloud; not the access point, which only forwards) runs a node (`nodes.runtime.node.main` on its config
file), bound on its own address in the host's network namespace.  The nodes are forked from one
launcher (nodes/runtime/launcher.py) that has imported torch and diffusers once, so that they share those
pages rather than hold a copy each.  Start-up (loading the weights) is not part of any
measurement, so a node starts outside its host's CPU limit and is moved into the host's cgroup
the moment it reports ready, before the workload's t0: the CPU share governs the run, not the
start-up.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from emulation.network import EmulatedNetwork
from emulation.scenario import Scenario
from emulation.workload import PlannedRequest
from nodes.runtime.launcher import LaunchedNode, NodeLauncher
from nodes.runtime.node_config import ComputeConfig, NodeConfig, Peer
from nodes.schema import NODE_ROLES

ROOT = Path(__file__).resolve().parent.parent
NODE_PORT = 5555  # every host has its own namespace, so one port number for all


def node_hosts(net: EmulatedNetwork) -> dict[str, str]:
    """host -> role, for the hosts that run a node, in topology order."""
    return {h.name: h.role for h in net.hosts.values() if h.role in NODE_ROLES}


def coordinator_of(net: EmulatedNetwork) -> str:
    return next(h for h, role in node_hosts(net).items() if role == "edge")


def build_configs(scenario: Scenario, net: EmulatedNetwork, run_dir: Path,
                  workload: dict[str, list[PlannedRequest]], t0: float | None) -> dict[str, NodeConfig]:
    hosts = node_hosts(net)
    endpoints = {h: f"tcp://{net.ip(h)}:{NODE_PORT}" for h in hosts}
    peers = {h: Peer(endpoint=endpoints[h], role=role, models=scenario.nodes.role(role).models)
             for h, role in hosts.items()}
    coordinator = coordinator_of(net)
    configs = {}
    for host, role in hosts.items():
        spec = scenario.nodes.role(role)
        compute = ComputeConfig(mode=spec.compute, hardware=spec.hardware, threads=spec.threads,
                                profiles_file=scenario.nodes.profiles_file)
        configs[host] = NodeConfig(
            host=host, role=role, bind=endpoints[host], coordinator=coordinator,
            peers={h: p for h, p in peers.items() if h != host}, models=spec.models, compute=compute,
            run_dir=run_dir, scheduler=scenario.generation.scheduler, steps=scenario.generation.steps,
            request_timeout_s=scenario.workload.request_timeout_s, t0=t0 if role == "device" else None,
            workload=[r.node_request() for r in workload.get(host, [])] if role == "device" else [],
            strategies=scenario.strategies,
        )
    return configs


class NodeHandle:
    """One node process in a Mininet host; its log is <run_dir>/logs/<host>.log."""

    def __init__(self, net: EmulatedNetwork, launcher: NodeLauncher, config: NodeConfig) -> None:
        self.net = net
        self.launcher = launcher
        self.config = config
        self.host = config.host
        self.config_path = config.config_file
        self.log_path = config.log_file
        self.status_path = config.status_file
        self.process: LaunchedNode | None = None
        self.ready_at: float | None = None
        self.limited = False

    def start(self) -> None:
        self.config.write_for_launch()
        self.process = self.launcher.spawn(self.host, self.config_path, self.log_path,
                                           netns_pid=self.net.namespace_pid(self.host))

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
        return status if status.get("pid") == self.pid else None

    def poll_ready(self) -> bool:
        """True once ready; moves the process into its host's CPU group then (see module doc)."""
        if self.ready_at is not None:
            return True
        code = self.exit_code()
        if code is not None:
            raise RuntimeError(f"node {self.host} exited with {code} before it was ready: {self.log_tail()}")
        status = self.status()
        if status and status["state"] in ("ready", "running"):
            self.ready_at = time.time()
            limiter = self.net.limiter
            if limiter is not None and self.host in limiter.hosts and self.pid is not None:
                limiter.add(self.host, self.pid)  # cgroup.procs moves every thread of the process
                self.limited = True
            return True
        return False

    def log_tail(self, lines: int = 5) -> str:
        try:
            return " | ".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def terminate(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)

    def wait(self, timeout: float) -> int | None:
        if self.process is None:
            return None
        try:
            return self.process.wait(timeout=max(0.01, timeout))
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait(timeout=5)


def wait_ready(handles: list[NodeHandle], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not all(h.poll_ready() for h in handles):
        if time.monotonic() > deadline:
            late = [h.host for h in handles if h.ready_at is None]
            raise RuntimeError(f"nodes not ready after {timeout:g} s: {', '.join(late)} "
                               f"({handles[0].log_tail() if handles else ''})")
        time.sleep(0.05)


def stop_all(handles: list[NodeHandle], grace: float = 15.0) -> dict[str, int | None]:
    """SIGTERM to every node, then wait: devices record their unfinished requests as failed."""
    for h in handles:
        h.terminate()
    deadline = time.monotonic() + grace
    return {h.host: h.wait(deadline - time.monotonic()) for h in handles}
