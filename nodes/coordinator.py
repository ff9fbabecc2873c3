"""The coordinator thread (on the edge host): a plan per request from its strategy, then dispatch.

It answers the device with the plan (`accepted`, so that a timeout can say which stages were
involved) and sends stage 0 to its host without any state: that host draws the initial noise from
the request's seed. Its own thread and sockets, so that planning never waits behind the edge
worker's computation.
"""

from __future__ import annotations

import logging
import queue
import time
from typing import TYPE_CHECKING

from nodes.protocol import WIRE_VERSION, AcceptedMsg, RequestMsg, RequestTimes, StageMsg, encode
from nodes.strategies import Cluster, PlanRequest, build_strategies

if TYPE_CHECKING:
    from nodes.node import Inbound, Node, Outbox

log = logging.getLogger("nodes.coordinator")


class Coordinator:
    def __init__(self, node: Node) -> None:
        self.node = node
        config = node.config
        self.strategies = build_strategies(config.strategies)
        self.cluster = Cluster(edge=config.host, roles=config.roles(), models=config.models_by_host(),
                               steps=config.steps)
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
        from nodes.node import Outbox

        outbox = Outbox(self.node.context, self.node.endpoints, self.node.curve)
        try:
            while not self.node.stop.is_set():
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
        plan_text = str(plan)
        common = {"v": WIRE_VERSION, "request_id": request.request_id, "origin": request.origin,
                  "strategy": request.strategy, "plan": plan_text}
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
            self._error(outbox, request, f"dispatch to {first.host} failed: {exc}", plan_text)
            return
        stats.count("requests_planned")
        log.debug("%s: %s", request.request_id, plan_text)

    def _error(self, outbox: Outbox, request: RequestMsg, reason: str, plan: str | None = None) -> None:
        try:
            frames = self.node.error_frames(request.origin, request.request_id, reason, plan)
            outbox.send(request.origin, frames)
        except RuntimeError as exc:
            log.warning("could not tell %s that %s failed: %s", request.origin, request.request_id, exc)
