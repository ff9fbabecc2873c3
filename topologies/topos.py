"""Mininet topologies of edge networks, in Mininet's `build()` idiom.

    StarTopo(devices, hub_cpu=None)               edge server acting as access point, N devices
    TwoTierTopo(devices, access, backhaul, ...)   devices - ap - edge - backhaul - cloud
    MultiCellTopo(devices, cells, ...)            ap_k + edge_k per cell, edges in a full mesh

Every host is a routed Mininet host (no switch, no bridge, no OVS): each link is its own /24
(10.X.Y.0/24, the lower-named end gets .1), hosts with one link get a default route, others get
one route per remote subnet along shortest paths (`routes()`), and forwarding hosts have
`ip_forward=1`.  Being routed is what lets each direction of a link be impaired at its receiver,
inside a namespace.  Host options carry `role` (device, edge, cloud, ap) and `cpu` (a share of
the machine, or None); link options carry `spec` (a `LinkParams`).

`topology_from_spec(spec)` builds the right one from a validated `TopologySpec`.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from mininet.topo import Topo

from topologies.spec import DeviceSpec, LinkParams, TopologySpec


@dataclass(frozen=True)
class LinkInfo:
    """One link as built: endpoints, their interfaces and addresses, and its parameters."""

    a: str
    b: str
    intf_a: str
    intf_b: str
    ip_a: str
    ip_b: str
    subnet: str
    spec: LinkParams

    @property
    def name(self) -> str:
        return f"{self.a}-{self.b}"


class EdgeTopo(Topo):
    """Base class: hosts with roles, point-to-point links with their own subnets."""

    def __init__(self, *args: object, **params: object) -> None:
        self.link_infos: list[LinkInfo] = []
        self._ports: dict[str, int] = {}
        super().__init__(*args, **params)

    def add_node(self, name: str, role: str, cpu: float | None = None, radio: str | None = None) -> str:
        # ip is filled in by the node's first link (Mininet sets it on the default interface)
        return self.addHost(name, role=role, cpu=cpu, radio=radio, ip=None)

    def add_link(self, a: str, b: str, spec: LinkParams) -> LinkInfo:
        k = len(self.link_infos) + 1
        subnet_base = f"10.{k // 256}.{k % 256}"
        port_a, port_b = self._ports.get(a, 0), self._ports.get(b, 0)
        self._ports[a], self._ports[b] = port_a + 1, port_b + 1
        info = LinkInfo(
            a=a, b=b, intf_a=f"{a}-eth{port_a}", intf_b=f"{b}-eth{port_b}",
            ip_a=f"{subnet_base}.1", ip_b=f"{subnet_base}.2", subnet=f"{subnet_base}.0/24",
            spec=spec,
        )
        for node, ip, port in ((a, info.ip_a, port_a), (b, info.ip_b, port_b)):
            if port == 0:
                self.g.node[node]["ip"] = f"{ip}/24"
        self.addLink(
            a, b, port1=port_a, port2=port_b, intfName1=info.intf_a, intfName2=info.intf_b,
            params1={"ip": f"{info.ip_a}/24"}, params2={"ip": f"{info.ip_b}/24"}, spec=spec,
        )
        self.link_infos.append(info)
        return info

    def role(self, name: str) -> str:
        return self.nodeInfo(name)["role"]

    def neighbours(self, name: str) -> list[tuple[str, LinkInfo]]:
        out = []
        for info in self.link_infos:
            if info.a == name:
                out.append((info.b, info))
            elif info.b == name:
                out.append((info.a, info))
        return out

    def routes(self) -> dict[str, list[tuple[str, str]]]:
        """Per host: (destination, via) pairs; destination "default" for single-link hosts."""
        table: dict[str, list[tuple[str, str]]] = {}
        for host in self.hosts():
            nbrs = self.neighbours(host)
            if len(nbrs) == 1:
                peer, info = nbrs[0]
                table[host] = [("default", info.ip_b if info.a == host else info.ip_a)]
                continue
            first_hop = self._first_hops(host)
            rows = []
            for info in self.link_infos:
                if host in (info.a, info.b):
                    continue
                # Reach the subnet through whichever end is nearer.
                near = min((info.a, info.b), key=lambda n: first_hop.get(n, (99999, ""))[0])
                hop = first_hop.get(near)
                if hop is not None:
                    rows.append((info.subnet, hop[1]))
            table[host] = rows
        return table

    def link_paths(self, sources: list[str]) -> dict[str, dict[str, list[str]]]:
        """From each of `sources` to every host: the names of the links a packet crosses, in
        order, along the shortest path (the one the static routes take)."""
        out: dict[str, dict[str, list[str]]] = {}
        for src in sources:
            paths: dict[str, list[str]] = {src: []}
            queue = deque([src])
            while queue:
                node = queue.popleft()
                for peer, info in self.neighbours(node):
                    if peer not in paths:
                        paths[peer] = [*paths[node], info.name]
                        queue.append(peer)
            out[src] = paths
        return out

    def hub(self) -> str:
        """The host with the most links (star: edge, two_tier: ap, multi_cell: ap1): every
        other host is reachable from it, so a reachability check at scale starts there."""
        hosts = self.hosts()  # in insertion order: ties go to the first
        return max(hosts, key=lambda h: (len(self.neighbours(h)), -hosts.index(h)))

    def forwarders(self) -> list[str]:
        return [h for h in self.hosts() if len(self.neighbours(h)) > 1]

    def _first_hops(self, src: str) -> dict[str, tuple[int, str]]:
        """BFS: for every host, (distance, gateway IP on src's link towards it)."""
        out: dict[str, tuple[int, str]] = {}
        queue: deque[tuple[str, int, str]] = deque()
        seen = {src}
        for peer, info in self.neighbours(src):
            gw = info.ip_b if info.a == src else info.ip_a
            seen.add(peer)
            out[peer] = (1, gw)
            queue.append((peer, 1, gw))
        while queue:
            node, dist, gw = queue.popleft()
            for peer, _ in self.neighbours(node):
                if peer not in seen:
                    seen.add(peer)
                    out[peer] = (dist + 1, gw)
                    queue.append((peer, dist + 1, gw))
        return out


def _with_override(spec: LinkParams, a: str, b: str, overrides: dict) -> LinkParams:
    over = overrides.get(frozenset((a, b)))
    if over is None:
        return spec
    return LinkParams(**over.model_dump(exclude={"endpoints"}))


def _device_link(d: DeviceSpec) -> LinkParams:
    return LinkParams(**d.model_dump(include=set(LinkParams.model_fields)))


class StarTopo(EdgeTopo):
    """An edge server that is also the access point, with N devices on wireless-like links."""

    def build(self, devices: list[DeviceSpec], cpu_shares: dict | None = None,
              overrides: dict | None = None) -> None:
        cpu_shares, overrides = cpu_shares or {}, overrides or {}
        hub = self.add_node("edge", "edge", cpu_shares.get("edge"))
        for d in devices:
            name = self.add_node(d.name, "device", d.cpu or cpu_shares.get("device"), d.radio)
            self.add_link(name, hub, _with_override(_device_link(d), name, hub, overrides))


class TwoTierTopo(EdgeTopo):
    """devices - ap - edge server - backhaul - cloud."""

    def build(self, devices: list[DeviceSpec], access: LinkParams, backhaul: LinkParams,
              cpu_shares: dict | None = None, overrides: dict | None = None) -> None:
        cpu_shares, overrides = cpu_shares or {}, overrides or {}
        for d in devices:
            self.add_node(d.name, "device", d.cpu or cpu_shares.get("device"), d.radio)
        ap = self.add_node("ap", "ap", cpu_shares.get("ap"))
        edge = self.add_node("edge", "edge", cpu_shares.get("edge"))
        cloud = self.add_node("cloud", "cloud", cpu_shares.get("cloud"))
        for d in devices:
            self.add_link(d.name, ap, _with_override(_device_link(d), d.name, ap, overrides))
        self.add_link(ap, edge, _with_override(access, ap, edge, overrides))
        self.add_link(edge, cloud, _with_override(backhaul, edge, cloud, overrides))


class MultiCellTopo(EdgeTopo):
    """K cells (ap_k with edge_k), devices in their cell, edge servers in a full mesh,
    and optionally a cloud behind edge1's backhaul."""

    def build(self, devices: list[DeviceSpec], cells: int, access: LinkParams,
              inter_edge: LinkParams, backhaul: LinkParams | None = None,
              cpu_shares: dict | None = None, overrides: dict | None = None) -> None:
        cpu_shares, overrides = cpu_shares or {}, overrides or {}
        for d in devices:
            self.add_node(d.name, "device", d.cpu or cpu_shares.get("device"), d.radio)
        aps = [self.add_node(f"ap{k + 1}", "ap", cpu_shares.get("ap")) for k in range(cells)]
        edges = [self.add_node(f"edge{k + 1}", "edge", cpu_shares.get("edge")) for k in range(cells)]
        cloud = self.add_node("cloud", "cloud", cpu_shares.get("cloud")) if backhaul else None
        for d in devices:
            ap = aps[d.cell]
            self.add_link(d.name, ap, _with_override(_device_link(d), d.name, ap, overrides))
        for ap, edge in zip(aps, edges, strict=True):
            self.add_link(ap, edge, _with_override(access, ap, edge, overrides))
        for i in range(cells):
            for j in range(i + 1, cells):
                self.add_link(edges[i], edges[j],
                              _with_override(inter_edge, edges[i], edges[j], overrides))
        if cloud is not None and backhaul is not None:
            self.add_link(edges[0], cloud, _with_override(backhaul, edges[0], cloud, overrides))


def topology_from_spec(spec: TopologySpec) -> EdgeTopo:
    devices = spec.device_specs()
    overrides = {frozenset(o.endpoints): o for o in spec.links}
    for o in spec.links:
        a, b = o.endpoints
        if not _adjacent(spec, a, b, devices):
            raise ValueError(f"topology.links: {a} and {b} are not linked in a {spec.kind}")
    common = {"cpu_shares": dict(spec.cpu_shares), "overrides": overrides}
    if spec.kind == "star":
        return StarTopo(devices=devices, **common)
    if spec.kind == "two_tier":
        if spec.backhaul is None:
            raise ValueError("topology.backhaul: two_tier needs a backhaul link")
        return TwoTierTopo(devices=devices, access=spec.access, backhaul=spec.backhaul, **common)
    return MultiCellTopo(devices=devices, cells=spec.cells, access=spec.access,
                         inter_edge=spec.inter_edge, backhaul=spec.backhaul, **common)


def _adjacent(spec: TopologySpec, a: str, b: str, devices: list[DeviceSpec]) -> bool:
    cell_of = {d.name: d.cell for d in devices}
    pair = {a, b}
    if spec.kind == "star":
        return "edge" in pair and bool(pair & set(cell_of))
    if spec.kind == "two_tier":
        infra = pair in ({"ap", "edge"}, {"edge", "cloud"})
        return infra or ("ap" in pair and bool(pair & set(cell_of)))
    for d, c in cell_of.items():
        if pair == {d, f"ap{c + 1}"}:
            return True
    k = spec.cells
    if any(pair == {f"ap{i + 1}", f"edge{i + 1}"} for i in range(k)):
        return True
    edges = {f"edge{i + 1}" for i in range(k)}
    return (pair <= edges and a != b) or (spec.backhaul is not None and pair == {"edge1", "cloud"})
