"""The coordinator thread (on the edge host): the loop around nodes/planning/coordination.py.

It turns what arrives (requests and reports from its queue, its outbox's connection events, the
passing of time) into the core's events and the core's actions into messages: a `Dispatch`
answers the device with its plan (`accepted`, so that a timeout can say which stages were
involved) and sends stage 0 to its host without any state (that host draws the initial noise
from the request's seed); a `Fail` tells the device why; a `Reconnect` gives up a connection for
a fresh one (nodes/runtime/transport.py Outbox.reconnect).  Its own thread and sockets, so that
planning never waits behind the edge worker's computation.  What the core decides, and why, is
the core's docstring.
"""

from __future__ import annotations

import logging
import time

from nodes.diffusion.model_zoo import is_pipeline_folder
from nodes.planning import coordination
from nodes.planning.hardware import find_profile, load_power, load_profiles
from nodes.planning.planner import HostFacts, Planner
from nodes.planning.quality_table import read_latent_table, read_table, table_path
from nodes.planning.request import PlanRequest
from nodes.planning.strategies import Plugin, build_strategies
from nodes.planning.strategy_specs import PLANNED_KINDS
from nodes.runtime.memory import unblock_unused
from nodes.runtime.node_config import ComputeConfig, NodeConfig
from nodes.runtime.node_context import NodeContext
from nodes.runtime.protocol import (
    WIRE_VERSION,
    AcceptedMsg,
    ReportMsg,
    RequestMsg,
    RequestTimes,
    StageMsg,
    WirePrediction,
    encode,
    plan_to_wire,
    prompt_fields,
)
from nodes.runtime.transport import Inbound, Outbox, serve

log = logging.getLogger("nodes.runtime.coordinator")


class Coordinator:
    def __init__(self, node: NodeContext) -> None:
        self.node = node
        config = node.config
        if any(spec.kind == "plugin" for spec in config.strategies.values()):
            unblock_unused()  # a plugin may need what the launcher kept out of the nodes
        strategies = build_strategies(config.strategies, (config.scheduler, config.steps))
        planner = build_planner(config)
        self.core = coordination.CoordinatorCore(config.host, config.roles(), config.models_by_host(),
                                                 config.steps, strategies, planner,
                                                 config.request_timeout_s, config.clock)
        self.clock = config.clock
        for name, strategy in strategies.items():  # loaded here, in this process (nodes/planning/plugins.py)
            if isinstance(strategy, Plugin):
                log.info("strategy %s: plugin %s, decision budget %g ms (emulated)", name, strategy.ref,
                         strategy.budget_ms)
        for line in self.core.unservable():
            log.warning("%s", line)

    def run(self) -> None:
        serve(self.node, self.node.endpoints, self.node.requests, self.handle, self._tick, wait_s=0.05)

    def _tick(self, outbox: Outbox) -> None:
        self._connection_events(outbox)
        self._act(outbox, self.core.on_tick(time.time()))

    def _connection_events(self, outbox: Outbox) -> None:
        for host in outbox.poll_events():
            reason = outbox.down_reason(host) or f"host {host} is down"
            self._act(outbox, self.core.on_connection_lost(host, reason, time.time()))
        for host in [h for h in self.core.down if outbox.down_reason(h) is None]:
            self.core.on_connection_back(host)
        for host in outbox.reconnected():
            self.core.on_path_back(host)
            log.info("the path to %s is back (a fresh connection's handshake)", host)

    def handle(self, item: Inbound, outbox: Outbox) -> None:
        envelope = item.message.envelope
        if isinstance(envelope, ReportMsg):
            self.core.on_report(_report(envelope), time.time())
            return
        assert isinstance(envelope, RequestMsg)
        self._act(outbox, self.core.on_request(_request(envelope, item), time.time()))

    def _act(self, outbox: Outbox, actions: list[coordination.Action]) -> None:
        for action in actions:
            if isinstance(action, coordination.Dispatch):
                self._send_dispatch(outbox, action)
            elif isinstance(action, coordination.Fail):
                self.node.stats.count(action.counter)
                self._error(outbox, action)
            elif isinstance(action, coordination.Reconnect):
                outbox.reconnect(action.host, connect_timeout_s=action.connect_timeout_s)
                self.node.stats.count("connections_renewed")
                log.info("gave up the connection to %s for a fresh one", action.host)

    def _send_dispatch(self, outbox: Outbox, dispatch: coordination.Dispatch) -> None:
        """Tell the device its plan and send the first stage on its way."""
        request, decision = dispatch.request, dispatch.decision
        if dispatch.replanned:
            self.node.stats.count("requests_replanned")
            log.info("%s: re-planned (%s): %s", request.request_id, dispatch.note, decision.plan)
        wire = plan_to_wire(decision.plan)
        common = {"v": WIRE_VERSION, "request_id": request.request_id, "origin": request.device,
                  "strategy": request.strategy, "plan": wire}
        p = decision.prediction
        assert p is not None
        why = "; ".join(n for n in (dispatch.note, decision.note) if n) or None
        prediction = WirePrediction(latency_s=max(0.0, self.clock.emulated(p.wall_latency_s)), fid=p.fid,
                                    class_accuracy=p.class_accuracy, device_energy_j=p.device_energy_j,
                                    note=why[:500] if why else None)
        try:
            outbox.send(request.device, encode(AcceptedMsg(kind="accepted", prediction=prediction, **common)))
        except RuntimeError as exc:
            log.warning("could not tell %s its plan: %s", request.device, exc)
        first = decision.plan.stages[0]
        times = RequestTimes(request_sent=request.wall_sent, coordinator_received=request.wall_received,
                             dispatched=time.time())
        # a latent pipeline's plan: the first stage's host encodes the prompts (their text travels)
        stage = StageMsg(kind="stage", stage=0, start=first.start, end=first.end, n=request.n,
                         labels=list(request.labels), seed=request.seed, timestamps=times, hops=[],
                         prediction=prediction, **prompt_fields(request), **common)
        try:
            outbox.send(first.host or "", encode(stage))
        except RuntimeError as exc:
            reason = f"dispatch to {first.host} failed: {exc}"
            self._act(outbox, self.core.on_dispatch_failed(dispatch, reason))
            return
        self.node.stats.count("requests_planned")
        log.debug("%s: %s", request.request_id, decision.plan)

    def _error(self, outbox: Outbox, fail: coordination.Fail) -> None:
        request = fail.request
        try:
            wire = plan_to_wire(fail.plan) if fail.plan is not None else None
            frames = self.node.error_frames(request.device, request.request_id, fail.reason, wire)
            outbox.send(request.device, frames)
        except RuntimeError as exc:
            log.warning("could not tell %s that %s failed: %s", request.device, request.request_id, exc)


def _request(message: RequestMsg, item: Inbound) -> PlanRequest:
    return PlanRequest(**message.request_fields(), wall_sent=message.timestamps.request_sent,
                       wall_received=item.received, request_bytes=item.message.message_bytes)


def _report(message: ReportMsg) -> coordination.Report:
    t = message.transfer
    delivery = None if t is None else coordination.Delivery(t.source, t.kind, t.sent, t.received,
                                                            t.message_bytes)
    return coordination.Report(message.host, message.request_id, message.n, message.stage, message.model,
                               message.steps, message.compute_start, message.compute_end, delivery,
                               message.late)


def build_planner(config: NodeConfig) -> Planner:
    """The planner of this coordinator: the quality table of the run's scheduler and steps (needed
    by the planned strategies; without it the fixed ones are still predicted, without quality),
    and what every host's config says of its hardware and radio."""
    planned = any(spec.kind in PLANNED_KINDS for spec in config.strategies.values())
    pixel = any(not is_pipeline_folder(m) for models in config.models_by_host().values() for m in models)
    rows = []
    if pixel and (planned or table_path(config.scheduler, config.steps).is_file()):
        rows = read_table(config.scheduler, config.steps)
    computes = {config.host: config.compute, **{h: p.compute for h, p in config.peers.items()}}
    radios = {h: p.radio for h, p in config.peers.items()}
    components = {config.host: config.latent_components,
                  **{h: p.latent_components for h, p in config.peers.items()}}
    hosts = {h: _facts(config.roles()[h], config.models_by_host()[h], computes[h], radios.get(h),
                       components[h]) for h in config.roles()}
    return Planner(rows, hosts, coordinator=config.host, steps=config.steps, clock=config.clock,
                   scheduler=config.scheduler, latent_rows=read_latent_table(config.scheduler, config.steps))


def _facts(role: str, models: tuple[str, ...], compute: ComputeConfig | None, radio: str | None,
           components: list[str] | None = None) -> HostFacts:
    parts = None if components is None else tuple(components)
    if compute is None or compute.mode != "profiled" or not compute.hardware:
        return HostFacts(role, models, radio=radio, latent_components=parts)
    profiles = load_profiles(compute.profiles_file).get(compute.hardware, {})
    power = load_power(compute.profiles_file).get(compute.hardware)
    return HostFacts(role, models, {m: p for m in models if (p := find_profile(profiles, m))}, power, radio,
                     parts)
