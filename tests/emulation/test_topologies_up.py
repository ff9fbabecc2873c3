"""Each topology comes up with routing between every pair of hosts, and goes away cleanly."""

from __future__ import annotations

import pytest

from emulation.network import EmulatedNetwork
from topologies.spec import parse_topology

pytestmark = pytest.mark.root

TOPOLOGIES = {
    "star": {"kind": "star", "num_devices": 3, "device_link": {"bw_mbit": 20, "delay_ms": 2}},
    "two_tier": {"kind": "two_tier", "devices": [{"name": "d1", "bw_mbit": 10, "delay_ms": 3},
                                                 {"name": "d2", "bw_mbit": 5, "loss_pct": 0.5}]},
    "multi_cell": {"kind": "multi_cell", "cells": 2, "num_devices": 4,
                   "backhaul": {"bw_mbit": 100, "delay_ms": 5}},
}


@pytest.mark.parametrize("kind", sorted(TOPOLOGIES))
def test_topology_connects_every_pair(kind: str, nothing_left_after: set) -> None:
    spec = parse_topology(TOPOLOGIES[kind])
    nothing_left_after.update(spec.host_names())
    with EmulatedNetwork(spec) as net:
        assert set(net.hosts) == set(spec.host_names())
        roles = {h.role for h in net.hosts.values()}
        assert "device" in roles and "edge" in roles
        reach = net.reachability("all")
        assert set(reach) == set(net.hosts)
        unreachable = [(s, d) for s, row in reach.items() for d, n in row.items() if n == 0]
        assert not unreachable
        from_hub = net.reachability("hub")
        assert list(from_hub) == [net.hub()]
        assert set(from_hub[net.hub()]) == set(net.hosts) - {net.hub()}
        assert all(n > 0 for n in from_hub[net.hub()].values())
        manifest = net.manifest()
        assert manifest["impairment_backend"] in ("netem", "userspace")
        assert len(manifest["links"]) == len(net.links)
    assert net.leftovers() == {"interfaces": [], "processes": [], "cgroups": []}
