"""Node processes inside Mininet hosts: their configs and their start; the handle, readiness and
stopping are nodes/runtime/local_cluster.py's (NodeProcess, wait_ready, stop_all), as for a local
cluster and deploy mode.  Every host with a node role (device, edge,
cloud; not the access point, which only forwards) runs a node (`nodes.runtime.node.main` on its config
file), bound on its own address in the host's network namespace.  The nodes are forked from one
launcher (nodes/runtime/launcher.py) that has imported torch and diffusers once, so that they share those
pages rather than hold a copy each.  Start-up (loading the weights) is not part of any
measurement, so a node starts outside its host's CPU limit and is moved into the host's cgroup
the moment it reports ready, before the workload's t0: the CPU share governs the run, not the
start-up.
"""

from __future__ import annotations

from pathlib import Path

from emulation.network import EmulatedNetwork
from emulation.scenario import Scenario
from nodes.clock import Clock
from nodes.planning.request import Request
from nodes.runtime.launcher import NodeLauncher
from nodes.runtime.local_cluster import NodeProcess
from nodes.runtime.node_config import NodeConfig
from nodes.schema import NODE_ROLES

NODE_PORT = 5555  # every host has its own namespace, so one port number for all


def node_hosts(net: EmulatedNetwork) -> dict[str, str]:
    """host -> role, for the hosts that run a node, in topology order."""
    return {h.name: h.role for h in net.hosts.values() if h.role in NODE_ROLES}


def coordinator_of(net: EmulatedNetwork) -> str:
    return next(h for h, role in node_hosts(net).items() if role == "edge")


def build_configs(scenario: Scenario, net: EmulatedNetwork, run_dir: Path,
                  workload: dict[str, list[Request]], clock: Clock) -> dict[str, NodeConfig]:
    """Every node host's config: its address in the emulated network, one port for all, and the
    run's clock (its origin once the devices' start is known, and the network's K)."""
    hosts = {}
    for host, role in node_hosts(net).items():
        endpoint = f"tcp://{net.ip(host)}:{NODE_PORT}"
        hosts[host] = (role, endpoint, endpoint)
    return scenario.node_configs(hosts, coordinator_of(net), run_dir, workload, clock)


def start_in_host(net: EmulatedNetwork, launcher: NodeLauncher, config: NodeConfig) -> NodeProcess:
    """The node of one Mininet host, forked from the launcher into the host's network namespace."""
    node = NodeProcess(config)
    node.start(launcher, netns_pid=net.namespace_pid(config.host))
    return node
