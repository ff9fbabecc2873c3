"""The coordinator thread (on the edge host): a plan per request from its strategy, then dispatch.

It answers the device with the plan (`accepted`, so that a timeout can say which stages were
involved) and sends stage 0 to its host without any state: that host draws the initial noise from
the request's seed. Its own thread and sockets, so that planning never waits behind the edge
worker's computation.

It watches the other stage hosts (nodes.runtime.transport.Outbox's monitors): while one is down, a plan
through it is refused with a reason that names it, and every request it dispatched (and has not
yet seen time out) whose plan uses it fails at once, rather than at the device's timeout.
"""

from __future__ import annotations

import logging
import queue
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING

from nodes.runtime.protocol import (
    WIRE_VERSION,
    AcceptedMsg,
    RequestMsg,
    RequestTimes,
    StageMsg,
    WireStage,
    encode,
    plan_to_wire,
)
from nodes.runtime.transport import Inbound, Outbox
from nodes.strategies import Cluster, PlanRequest, build_strategies

if TYPE_CHECKING:
    from nodes.runtime.node import Node

log = logging.getLogger("nodes.runtime.coordinator")
MAX_IN_FLIGHT = 10_000  # dispatched requests remembered for a host failure; the oldest go first


@dataclass(frozen=True)
class InFlight:
    origin: str
    plan: list[WireStage]
    hosts: frozenset[str]
    until: float  # by then the device has timed it out itself


class Coordinator:
    def __init__(self, node: Node) -> None:
        self.node = node
        config = node.config
        self.strategies = build_strategies(config.strategies)
        self.cluster = Cluster(edge=config.host, roles=config.roles(), models=config.models_by_host(),
                               steps=config.steps)
        # the hosts whose death fails requests: devices run only their own requests' stages
        self.watched = [h for h, role in config.roles().items() if role != "device" and h != config.host]
        self.in_flight: OrderedDict[str, InFlight] = OrderedDict()
        self._warn_unservable()

    def _warn_unservable(self) -> None:
        """A strategy the cluster cannot serve is not fatal (a run may not use it), but say so."""
        devices = self.cluster.hosts("device")
        if not devices:
            return
        for name, strategy in self.strategies.items():
            try:
                strategy.plan_for(PlanRequest("probe", devices[0], 1, name), self.cluster)
            except ValueError as exc:
                log.warning("strategy %s cannot serve requests in this cluster: %s", name, exc)

    def run(self) -> None:
        outbox = Outbox(self.node.context, self.node.endpoints, self.node.curve)
        for host in self.watched:  # up front: a host must be watched before it can be seen to die
            outbox.connect(host)
        try:
            while not self.node.stop.is_set():
                for host in outbox.poll_events():
                    self.host_down(outbox, host)
                try:
                    item = self.node.requests.get(timeout=0.1)
                except queue.Empty:
                    continue
                self.handle(item, outbox)
        finally:
            outbox.close()

    def handle(self, item: Inbound, outbox: Outbox) -> None:
        request: RequestMsg = item.message.envelope  # type: ignore[assignment]
        stats = self.node.stats
        strategy = self.strategies.get(request.strategy)
        try:
            if strategy is None:
                known = ", ".join(sorted(self.strategies))
                raise ValueError(f"unknown strategy {request.strategy!r} (known: {known})")
            asked = PlanRequest(request.request_id, request.origin, request.n, request.strategy,
                                request.deadline_s)
            plan = strategy.plan_for(asked, self.cluster)
        except Exception as exc:  # ValueError: cannot serve; anything else: a planner bug, same outcome
            stats.count("requests_refused")
            self._error(outbox, request, f"no plan: {exc}")
            return
        wire = plan_to_wire(plan)
        hosts = frozenset(stage.host or "" for stage in plan.stages)
        down = [reason for host in sorted(hosts) if (reason := outbox.down_reason(host))]
        if down:
            stats.count("requests_refused")
            self._error(outbox, request, down[0], wire)
            return
        common = {"v": WIRE_VERSION, "request_id": request.request_id, "origin": request.origin,
                  "strategy": request.strategy, "plan": wire}
        try:
            outbox.send(request.origin, encode(AcceptedMsg(kind="accepted", **common)))
        except RuntimeError as exc:
            log.warning("could not tell %s its plan: %s", request.origin, exc)
        first = plan.stages[0]
        dispatched = time.time()
        times = RequestTimes(request_sent=request.timestamps.request_sent, coordinator_received=item.received,
                             dispatched=dispatched)
        stage = StageMsg(kind="stage", stage=0, start=first.start, end=first.end, n=request.n,
                         labels=request.labels, seed=request.seed, timestamps=times, hops=[], **common)
        try:
            outbox.send(first.host or "", encode(stage))
        except RuntimeError as exc:
            self._error(outbox, request, f"dispatch to {first.host} failed: {exc}", wire)
            return
        stats.count("requests_planned")
        self._remember(request, wire, hosts, dispatched)
        log.debug("%s: %s", request.request_id, plan)

    def _remember(self, request: RequestMsg, plan: list[WireStage], hosts: frozenset[str],
                  dispatched: float) -> None:
        now = time.time()
        while self.in_flight and (len(self.in_flight) >= MAX_IN_FLIGHT
                                  or next(iter(self.in_flight.values())).until <= now):
            self.in_flight.popitem(last=False)  # dispatched earliest, so timed out first
        until = dispatched + self.node.config.request_timeout_s
        self.in_flight[request.request_id] = InFlight(request.origin, plan, hosts, until)

    def host_down(self, outbox: Outbox, host: str) -> None:
        """Fail every request in flight through `host` now: its device need not wait for a timeout.
        One that had already completed is counted as a late reply by its device, nothing more."""
        reason = outbox.down_reason(host) or f"host {host} is down"
        now = time.time()
        for request_id, flight in list(self.in_flight.items()):
            if flight.until <= now or host not in flight.hosts:
                continue
            del self.in_flight[request_id]
            self.node.stats.count("requests_failed_host_down")
            try:
                frames = self.node.error_frames(flight.origin, request_id, reason, flight.plan)
                outbox.send(flight.origin, frames)
            except RuntimeError as exc:
                log.warning("could not tell %s that %s failed: %s", flight.origin, request_id, exc)

    def _error(self, outbox: Outbox, request: RequestMsg, reason: str,
               plan: list[WireStage] | None = None) -> None:
        try:
            frames = self.node.error_frames(request.origin, request.request_id, reason, plan)
            outbox.send(request.origin, frames)
        except RuntimeError as exc:
            log.warning("could not tell %s that %s failed: %s", request.origin, request.request_id, exc)
