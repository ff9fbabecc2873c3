"""The coordinator thread (on the edge host): a plan per request from its strategy, then dispatch.

It answers the device with the plan (`accepted`, so that a timeout can say which stages were
involved) and sends stage 0 to its host without any state: that host draws the initial noise from
the request's seed. Its own thread and sockets, so that planning never waits behind the edge
worker's computation.

It watches the other stage hosts (nodes.runtime.transport.Outbox's monitors): while one is down, a plan
through it is refused with a reason that names it, and every request it dispatched (and has not
yet seen time out) whose plan uses it fails at once, rather than at the device's timeout.

A link can fail without a connection closing (a backhaul outage: TCP just waits).  A planned
strategy's request whose message has been on its way RESCUE_FACTOR times longer than the path's
estimate (and at least two round trips, and RESCUE_MIN_S emulated) is re-planned once, avoiding
the host at the far end of that path, and dispatched again; its device takes whichever result
comes first and counts the other as a late reply.  That host is then avoided by every plan until
a report from it says its path is back (a stuck message got through), or for a request timeout.
Where the stuck message is one of its own dispatches, it also gives up that connection for a
fresh one (Outbox.reconnect): everything sent after the stuck message would wait behind it for
TCP's retransmission back-off, while a fresh connection's handshake says the path is back as soon
as it is, and from then on carries the new dispatches.

It also keeps the live estimates the planned strategies choose by (nodes/planning/estimates.py):
every request's arrival and every `report` (a stage host's after each stage, a device's when its
result arrives) is an observation of a path, and every dispatched plan reserves its stages' time
on their hosts.  Every plan, fixed or planned, is predicted (nodes/planning/planner.py) and the prediction
goes to the device with the plan, so that the records hold predicted beside measured latency.
"""

from __future__ import annotations

import logging
import queue
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING

from nodes.planning.estimates import LiveEstimates
from nodes.planning.hardware import load_power, load_profiles
from nodes.planning.planner import Ask, Decision, HostFacts, Planner
from nodes.planning.quality_table import read_table, table_path
from nodes.planning.strategies import Cluster, Planned, PlanRequest, Strategy, build_strategies
from nodes.planning.strategy_specs import PLANNED_KINDS
from nodes.runtime.node_config import ComputeConfig, NodeConfig
from nodes.runtime.protocol import (
    WIRE_VERSION,
    AcceptedMsg,
    ReportMsg,
    RequestMsg,
    RequestTimes,
    StageMsg,
    WirePrediction,
    WireStage,
    encode,
    plan_to_wire,
)
from nodes.runtime.transport import Inbound, Outbox

if TYPE_CHECKING:
    from nodes.runtime.node import Node

log = logging.getLogger("nodes.runtime.coordinator")
MAX_IN_FLIGHT = 10_000  # dispatched requests remembered for a host failure; the oldest go first
RESCUE_FACTOR = 3.0  # a message this many times its path's estimate late: the path has failed
RESCUE_MIN_S = 0.03  # emulated seconds: never for lateness a queue or a jittery link explains
STUCK = "~stuck"  # a re-planned request's stuck messages stay awaited under <request_id>~stuck


@dataclass
class InFlight:
    request: RequestMsg
    received: float  # when the coordinator had the request
    request_bytes: int
    plan: list[WireStage]
    hosts: frozenset[str]
    until: float  # by then the device has timed it out itself
    rescued: bool = False


class Coordinator:
    def __init__(self, node: Node) -> None:
        self.node = node
        config = node.config
        self.strategies = build_strategies(config.strategies)
        self.live = LiveEstimates()
        self.planner = build_planner(config)
        self.unavailable: dict[str, str] = {}
        self.cluster = Cluster(edge=config.host, roles=config.roles(), models=config.models_by_host(),
                               steps=config.steps, planner=self.planner, live=self.live,
                               unavailable=self.unavailable)
        # the hosts whose death fails requests: devices run only their own requests' stages
        self.watched = [h for h, role in config.roles().items() if role != "device" and h != config.host]
        self.in_flight: OrderedDict[str, InFlight] = OrderedDict()
        self.avoided: dict[str, tuple[float, str]] = {}  # host re-planned around -> (until, why)
        self.replanned: OrderedDict[str, None] = OrderedDict()  # request ids re-planned, newest last
        self.reconnecting: dict[str, float] = {}  # host -> when its stuck connection was given up
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
        # up front: a host must be watched before it can be seen to die, and no plan or dispatch
        # should pay a connection's handshakes
        for host in self.node.endpoints:
            outbox.connect(host)
        try:
            while not self.node.stop.is_set():
                for host in outbox.poll_events():
                    self.host_down(outbox, host)
                for host in outbox.reconnected():
                    self.path_back(host)
                self.rescue(outbox)
                try:
                    item = self.node.requests.get(timeout=0.05)
                except queue.Empty:
                    continue
                self.handle(item, outbox)
        finally:
            outbox.close()

    def handle(self, item: Inbound, outbox: Outbox) -> None:
        if isinstance(item.message.envelope, ReportMsg):
            self.observe(item.message.envelope)
            return
        request: RequestMsg = item.message.envelope  # type: ignore[assignment]
        stats = self.node.stats
        strategy = self.strategies.get(request.strategy)
        sent = request.timestamps.request_sent
        self.live.observe_transfer(request.origin, self.node.host, item.message.message_bytes,
                                   item.received - sent)
        self._refresh_unavailable(outbox)
        try:
            if strategy is None:
                known = ", ".join(sorted(self.strategies))
                raise ValueError(f"unknown strategy {request.strategy!r} (known: {known})")
            asked = PlanRequest(request.request_id, request.origin, request.n, request.strategy,
                                request.deadline_s, sent=sent, received=item.received,
                                request_bytes=item.message.message_bytes, explore=request.warmup,
                                escalation=request.escalation_of is not None)
            decision = self._plan(strategy, asked)
        except Exception as exc:  # ValueError: cannot serve; anything else: a planner bug, same outcome
            stats.count("requests_refused")
            self._error(outbox, request, f"no plan: {exc}")
            return
        decision = self._predicted(decision, request, item)
        self._dispatch(outbox, request, decision, item.received, item.message.message_bytes)

    def _dispatch(self, outbox: Outbox, request: RequestMsg, decision: Decision, received: float,
                  request_bytes: int, note: str | None = None) -> None:
        """Tell the device its plan and send the first stage on its way (or fail the request)."""
        stats = self.node.stats
        plan = decision.plan
        wire = plan_to_wire(plan)
        hosts = frozenset(stage.host or "" for stage in plan.stages)
        down = [reason for host in sorted(hosts) if (reason := outbox.down_reason(host))]
        if down:
            stats.count("requests_refused")
            self._error(outbox, request, down[0], wire)
            return
        common = {"v": WIRE_VERSION, "request_id": request.request_id, "origin": request.origin,
                  "strategy": request.strategy, "plan": wire}
        prediction = None
        if decision.prediction is not None:
            p = decision.prediction
            why = "; ".join(n for n in (note, decision.note) if n) or None
            prediction = WirePrediction(latency_s=max(0.0, p.latency_s), fid=p.fid,
                                        class_accuracy=p.class_accuracy, device_energy_j=p.device_energy_j,
                                        note=why[:500] if why else None)
        try:
            outbox.send(request.origin, encode(AcceptedMsg(kind="accepted", prediction=prediction, **common)))
        except RuntimeError as exc:
            log.warning("could not tell %s its plan: %s", request.origin, exc)
        first = plan.stages[0]
        dispatched = time.time()
        times = RequestTimes(request_sent=request.timestamps.request_sent, coordinator_received=received,
                             dispatched=dispatched)
        stage = StageMsg(kind="stage", stage=0, start=first.start, end=first.end, n=request.n,
                         labels=request.labels, seed=request.seed, timestamps=times, hops=[],
                         prediction=prediction, **common)
        try:
            outbox.send(first.host or "", encode(stage))
        except RuntimeError as exc:
            self._error(outbox, request, f"dispatch to {first.host} failed: {exc}", wire)
            return
        stats.count("requests_planned")
        self._remember(request, received, request_bytes, wire, hosts, dispatched)
        self._reserve(request.request_id, decision, dispatched)
        until = dispatched + self.node.config.request_timeout_s
        self.live.sent((request.request_id, 0), self.node.host, first.host or "", dispatched, until,
                       self.planner.sizes.dispatch)
        log.debug("%s: %s", request.request_id, plan)

    def _plan(self, strategy: Strategy, asked: PlanRequest) -> Decision:
        """The strategy's plan; where only a host being avoided (re-planned around) could serve
        it, a plan through that host after all: waiting on a path that may be back beats failing."""
        try:
            return strategy.plan_for(asked, self.cluster)
        except ValueError:
            avoided = [h for h in self.avoided if h in self.unavailable]
            if not avoided:
                raise
            for host in avoided:
                del self.unavailable[host]
            return strategy.plan_for(asked, self.cluster)

    def _predicted(self, decision: Decision, request: RequestMsg, item: Inbound) -> Decision:
        """A fixed strategy's plan gets the same prediction a planned one makes for itself."""
        if decision.prediction is not None:
            return decision
        ask = Ask(request.request_id, request.origin, request.n, sent=request.timestamps.request_sent,
                  now=item.received, deadline_s=request.deadline_s, request_bytes=item.message.message_bytes)
        row = self.planner.row_of(decision.plan)
        predicted = self.planner.predict(decision.plan, row, ask, self.live)
        return Decision(decision.plan, predicted, decision.note)

    def _reserve(self, request_id: str, decision: Decision, dispatched: float) -> None:
        """Each stage holds its host for its predicted time, from its predicted arrival."""
        until = dispatched + self.node.config.request_timeout_s
        assert decision.prediction is not None
        for index, (stage, (ready, start, end)) in enumerate(zip(decision.plan.stages,
                                                                 decision.prediction.stages, strict=True)):
            self.live.queues.reserve(stage.host or "", (request_id, index), ready, end - start, until)

    def observe(self, report: ReportMsg) -> None:
        """A report: the path its work came by, and the end of its stage (or of its request)."""
        self.live.reports += 1
        self.avoided.pop(report.host, None)  # a report came through: its path is back
        flight = self.in_flight.get(report.request_id)
        if report.late:  # the first plan's result of a re-planned request reached its device
            for key, (src, *_) in list(self.live.awaited.items()):
                if key[0] == report.request_id + STUCK:
                    self.avoided.pop(src, None)  # it got through from there: that path is back
            self.live.forget(report.request_id + STUCK)
            return
        if report.stage is not None and report.request_id in self.replanned and (
                flight is None or report.stage >= len(flight.plan)
                or flight.plan[report.stage].host != report.host):
            # the plan it was re-planned away from: its message got through, so that path is up
            # again, and the time it took tells of the failure, not of the path now
            self.live.arrived((report.request_id + STUCK, report.stage))
            return
        if report.transfer is not None:
            t = report.transfer
            self.live.observe_transfer(t.source, report.host, t.message_bytes, t.received - t.sent)
            self.planner.sizes.observe(t.kind, t.message_bytes, report.n)
        if report.stage is None:  # the device has its result: nothing of this request is queued
            self.live.forget(report.request_id)
            # nor on its way: a stage's report that comes after this one (another sender, no
            # order between them) must not start awaiting the result it already delivered
            self.in_flight.pop(report.request_id, None)
            return
        self.live.arrived((report.request_id, report.stage))
        if report.compute_end is not None and flight is not None:  # its output is on its way now
            plan, index = flight.plan, report.stage + 1
            last = index == len(plan)
            target = flight.request.origin if last else plan[min(index, len(plan) - 1)].host
            sizes = self.planner.sizes
            size = (sizes.result_per_image if last else sizes.state_per_image) * report.n
            self.live.sent((report.request_id, index), report.host, target, report.compute_end, flight.until,
                           size)
        if report.compute_end is not None:
            self.live.queues.finished(report.host, (report.request_id, report.stage), report.compute_end)
            if report.compute_start is not None and report.model and report.steps:
                self.live.observe_steps(report.host, report.model, report.n, report.steps,
                                        report.compute_end - report.compute_start)

    def _refresh_unavailable(self, outbox: Outbox) -> None:
        """Hosts the planner must avoid now: down (the outbox saw the connection go), suspect (a
        stage there never reported; nodes/planning/estimates.py) or re-planned around (`avoided`)."""
        self.unavailable.clear()
        now = time.time()
        for host in list(self.live.queues.queues):
            self.live.queues.schedule(host, now)  # expires what timed out unreported
        self.live.queues.expire_suspicion(now, self.node.config.request_timeout_s)
        self.unavailable.update(self.live.queues.suspect_reasons())
        for host, (until, why) in list(self.avoided.items()):
            if until <= now:
                del self.avoided[host]
            else:
                self.unavailable.setdefault(host, why)
        for host in self.watched:
            if reason := outbox.down_reason(host):
                self.unavailable[host] = reason

    def _remember(self, request: RequestMsg, received: float, request_bytes: int, plan: list[WireStage],
                  hosts: frozenset[str], dispatched: float) -> None:
        now = time.time()
        while self.in_flight and (len(self.in_flight) >= MAX_IN_FLIGHT
                                  or next(iter(self.in_flight.values())).until <= now):
            self.in_flight.popitem(last=False)  # dispatched earliest, so timed out first
        earlier = self.in_flight.pop(request.request_id, None)
        until = earlier.until if earlier else dispatched + self.node.config.request_timeout_s
        self.in_flight[request.request_id] = InFlight(request, received, request_bytes, plan, hosts, until,
                                                      rescued=earlier is not None)

    def rescue(self, outbox: Outbox) -> None:
        """Re-plan (once) each planned request whose message is stuck on a path that has failed."""
        now = time.time()
        late_after = RESCUE_MIN_S * self.node.config.time_dilation
        for (request_id, index), (src, dst, sent, until, size) in list(self.live.awaited.items()):
            flight = self.in_flight.get(request_id)
            if flight is None or flight.rescued or until <= now:
                continue
            strategy = self.strategies.get(flight.request.strategy)
            avoid = [h for h in (dst, src) if h not in (self.node.host, flight.request.origin)]
            due = self._due_s(request_id, index, src, dst, int(size), sent, now)
            if not isinstance(strategy, Planned) or not avoid or due is None:
                continue  # a fixed plan stays fixed; a device's own link has no way around it
            transfer, expected = due
            if not overdue(now - sent, expected, transfer, self._round_trip_s(src, dst), late_after):
                continue
            late_s = (now - sent) / self.node.config.time_dilation
            self._replan(outbox, flight, strategy, avoid[0], f"{src}->{dst} {late_s:.3g} s late (emulated)")
            if index == 0 and src == self.node.host and dst not in self.reconnecting:  # our dispatch
                self._reconnect(outbox, dst)

    def _reconnect(self, outbox: Outbox, host: str) -> None:
        """A fresh connection to `host` in place of the one stuck behind a failed link; each attempt
        is given a few round trips of the path (at least the kernel's first SYN timeout, 1 s)."""
        self.reconnecting[host] = time.time()
        outbox.reconnect(host, connect_timeout_s=max(1.0, 4 * self._round_trip_s(self.node.host, host)))
        self.node.stats.count("connections_renewed")
        log.info("gave up the connection to %s for a fresh one", host)

    def _round_trip_s(self, a: str, b: str) -> float:
        """An empty message's time a -> b and back (one direction twice where only it is known)."""
        known = [t for t in (self.live.transfer_s(a, b, 0), self.live.transfer_s(b, a, 0)) if t is not None]
        return 2 * sum(known) / len(known) if known else 0.0

    def path_back(self, host: str) -> None:
        """A fresh connection to `host` completed its handshake: the path is back. What was sent on
        the old connection arrives when TCP retransmits it and says nothing of the path now."""
        since = self.reconnecting.pop(host, None)
        if since is None:
            return
        self.avoided.pop(host, None)
        for key, (src, dst, sent, *_) in list(self.live.awaited.items()):
            if (src, dst) == (self.node.host, host) and sent <= since:
                del self.live.awaited[key]
        log.info("the path to %s is back (a fresh connection's handshake)", host)

    def _due_s(self, request_id: str, index: int, src: str, dst: str, size: int, sent: float,
               now: float) -> tuple[float, float] | None:
        """The message's transfer time, and how long after `sent` the report that ends its wait
        is due: a stage's input is reported only once the stage has computed, so its transfer,
        its wait in the host's queue and its compute; a result's, its transfer."""
        transfer = self.live.transfer_s(src, dst, size)
        if transfer is None:
            return None
        for r in self.live.queues.schedule(dst, now):
            if r.key == (request_id, index):
                return transfer, max(transfer, r.start + r.duration - sent)  # its own end, not stretched
        return transfer, transfer

    def _replan(self, outbox: Outbox, flight: InFlight, strategy: Planned, avoid: str, why: str) -> None:
        request = flight.request
        flight.rescued = True
        self._refresh_unavailable(outbox)
        reason = f"a message to or from it is overdue ({why})"
        self.avoided[avoid] = (time.time() + self.node.config.request_timeout_s, reason)
        self.unavailable.setdefault(avoid, reason)
        asked = PlanRequest(request.request_id, request.origin, request.n, request.strategy,
                            request.deadline_s, sent=request.timestamps.request_sent, received=time.time(),
                            request_bytes=flight.request_bytes)
        try:
            decision = strategy.plan_for(asked, self.cluster)
        except ValueError as exc:  # no other plan: the request rides out the stuck one
            log.info("%s: not re-planned (%s): %s", request.request_id, why, exc)
            return
        self.node.stats.count("requests_replanned")
        self.replanned[request.request_id] = None
        while len(self.replanned) > MAX_IN_FLIGHT:
            self.replanned.popitem(last=False)
        self.live.queues.forget(request.request_id)  # the stuck plan's reservations
        for key in [k for k in self.live.awaited if k[0] == request.request_id]:
            # still on its way: it bounds its path from below until it arrives (or times out)
            self.live.awaited[(request.request_id + STUCK, key[1])] = self.live.awaited.pop(key)
        log.info("%s: re-planned (%s): %s", request.request_id, why, decision.plan)
        self._dispatch(outbox, request, decision, flight.received, flight.request_bytes,
                       note=f"re-planned: {why}")

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
                frames = self.node.error_frames(flight.request.origin, request_id, reason, flight.plan)
                outbox.send(flight.request.origin, frames)
            except RuntimeError as exc:
                log.warning("could not tell %s that %s failed: %s", flight.request.origin, request_id, exc)

    def _error(self, outbox: Outbox, request: RequestMsg, reason: str,
               plan: list[WireStage] | None = None) -> None:
        try:
            frames = self.node.error_frames(request.origin, request.request_id, reason, plan)
            outbox.send(request.origin, frames)
        except RuntimeError as exc:
            log.warning("could not tell %s that %s failed: %s", request.origin, request.request_id, exc)


def overdue(elapsed_s: float, expected_s: float, transfer_s: float, round_trip_s: float,
            floor_s: float) -> bool:
    """Whether a message `elapsed_s` on its way, due after `expected_s` (its transfer of
    `transfer_s`, and for a stage's input the stage's queue and compute), is stuck behind a failed
    link: late by RESCUE_FACTOR - 1 transfers, two round trips (TCP restarts its window after an
    idle spell, RFC 2861, so a message on a quiet connection may wait one for an ACK) and
    `floor_s`, whichever is most."""
    return elapsed_s >= expected_s + max((RESCUE_FACTOR - 1) * transfer_s, 2 * round_trip_s, floor_s)


def build_planner(config: NodeConfig) -> Planner:
    """The planner of this coordinator: the quality table of the run's scheduler and steps (needed
    by the planned strategies; without it the fixed ones are still predicted, without quality),
    and what every host's config says of its hardware and radio."""
    planned = any(spec.kind in PLANNED_KINDS for spec in config.strategies.values())
    rows = []
    if planned or table_path(config.scheduler, config.steps).is_file():
        rows = read_table(config.scheduler, config.steps)
    computes = {config.host: config.compute, **{h: p.compute for h, p in config.peers.items()}}
    radios = {h: p.radio for h, p in config.peers.items()}
    hosts = {h: _facts(config.roles()[h], config.models_by_host()[h], computes[h], radios.get(h))
             for h in config.roles()}
    return Planner(rows, hosts, coordinator=config.host, steps=config.steps, dilation=config.time_dilation)


def _facts(role: str, models: tuple[str, ...], compute: ComputeConfig | None, radio: str | None) -> HostFacts:
    if compute is None or compute.mode != "profiled" or not compute.hardware:
        return HostFacts(role, models, radio=radio)
    profiles = load_profiles(compute.profiles_file).get(compute.hardware, {})
    power = load_power(compute.profiles_file).get(compute.hardware)
    return HostFacts(role, models, {m: profiles[m] for m in models if m in profiles}, power, radio)
