"""The coordinator's core: events in, actions out, no socket.

The coordinator (on the edge host) answers each request with its strategy's plan and dispatches
stage 0; nodes/runtime/coordinator.py is the loop that turns messages into the events below and
the actions into messages.  Every method takes `now` (wall epoch seconds), so that any sequence
of events can be replayed in a test.

Events: a request (`on_request`), a report (`on_report`: a stage host's after each stage, a
device's when its result arrives), the passing of time (`on_tick`), a connection lost
(`on_connection_lost`) or back (`on_connection_back`), a fresh connection's handshake
(`on_path_back`), a dispatch the loop could not send (`on_dispatch_failed`).
Actions: `Dispatch` (tell the device its plan, send stage 0), `Fail` (tell the device why),
`Reconnect` (give up a connection stuck behind a failed link for a fresh one).

While a host's connection is lost, a plan through it is refused with a reason that names it,
and every request in flight whose plan uses it fails at once, rather than at the device's
timeout.

A link can fail without a connection closing (a backhaul outage: TCP just waits).  A planned
strategy's request (or a cascade's escalation, which is routed too) whose message has been on its
way RESCUE_FACTOR times longer than the path's estimate (and at least two round trips, and
RESCUE_MIN_S emulated) is re-planned once, avoiding the host at the far end of that path, and
dispatched again; its device takes whichever result
comes first and counts the other as a late reply.  That host is then avoided by every plan until
a report from it says its path is back (a stranded message got through), or for a request
timeout.  Where the stuck message is the coordinator's own dispatch, it also gives up that
connection for a fresh one (`Reconnect`): everything sent after the stuck message would wait
behind it for TCP's retransmission back-off, while a fresh connection's handshake says the path
is back as soon as it is (`on_path_back`), and from then on carries the new dispatches.

The live estimates (nodes/planning/estimates.py) are kept here: every request's arrival and
every report is an observation of a path, and every dispatched plan reserves its stages' time on
their hosts.  Every plan, fixed or planned, is predicted (nodes/planning/planner.py), so that the
records hold predicted beside measured latency.

A strategy with an `observe` method (nodes/planning/strategies.py `Outcome`) is told what happened
to each request it planned, once: done when its device reports the result (latency from the
device's sending to the result's arrival, emulated), failed with the reason of every `Fail` here,
or failed when no result was reported by the request's timeout.  What `observe` raises is logged
and goes no further.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass

from nodes.clock import Clock
from nodes.diffusion.model_zoo import is_pipeline_folder, plan_models_kind
from nodes.planning.estimates import LiveEstimates
from nodes.planning.plan import Plan
from nodes.planning.planner import Decision, Planner
from nodes.planning.request import PlanRequest
from nodes.planning.strategies import Cluster, Outcome, Plugin, Strategy, reroutes

log = logging.getLogger("nodes.planning.coordination")

MAX_IN_FLIGHT = 10_000  # dispatched requests remembered for a host failure; the oldest go first
RESCUE_FACTOR = 3.0  # a message this many times its path's estimate late: the path has failed
RESCUE_MIN_S = 0.03  # emulated seconds: never for lateness a queue or a jittery link explains


@dataclass(frozen=True)
class Delivery:
    """What brought a reported piece of work: from where, what kind, its bytes, when."""

    source: str
    kind: str  # dispatch, state or result
    sent: float
    received: float
    message_bytes: int


@dataclass(frozen=True)
class Report:
    """A stage host's report after its stage (`stage` set), or a device's on its result."""

    host: str
    request_id: str
    n: int
    stage: int | None = None
    model: str | None = None
    steps: int = 0
    compute_start: float | None = None
    compute_end: float | None = None
    delivery: Delivery | None = None
    late: bool = False  # a device's: a result of a request that had already ended (re-planned)


@dataclass(frozen=True)
class Dispatch:
    request: PlanRequest
    decision: Decision  # its prediction is always set
    note: str | None = None  # why it was re-planned
    replanned: bool = False


@dataclass(frozen=True)
class Fail:
    request: PlanRequest
    reason: str
    plan: Plan | None = None
    counter: str = "requests_refused"  # the node's counter: or requests_failed_host_down, ..._dispatch_failed


@dataclass(frozen=True)
class Reconnect:
    host: str
    connect_timeout_s: float


Action = Dispatch | Fail | Reconnect


@dataclass
class Flight:
    request: PlanRequest
    plan: Plan
    hosts: frozenset[str]
    until: float  # by then the device has timed it out itself
    rescued: bool = False
    told: bool = False  # its strategy has been told its outcome


def overdue(elapsed_s: float, expected_s: float, transfer_s: float, round_trip_s: float,
            floor_s: float) -> bool:
    """Whether a message `elapsed_s` on its way, due after `expected_s` (its transfer of
    `transfer_s`, and for a stage's input the stage's queue and compute), is stuck behind a failed
    link: late by RESCUE_FACTOR - 1 transfers, two round trips (TCP restarts its window after an
    idle spell, RFC 2861, so a message on a quiet connection may wait one for an ACK) and
    `floor_s`, whichever is most."""
    return elapsed_s >= expected_s + max((RESCUE_FACTOR - 1) * transfer_s, 2 * round_trip_s, floor_s)


def check_fits(plan: Plan, request: PlanRequest) -> None:
    """A plan of latent pipelines for a request with prompts, of pixel models for one without;
    ValueError naming the mismatch (and, through plan_models_kind, a plan mixing both or of latent
    pipelines that do not share a latent space)."""
    kind = plan_models_kind(plan)
    if kind == "latent" and not request.latent:
        raise ValueError(f"plan {plan} runs latent pipelines, and the request has no prompts")
    if kind == "pixel" and request.latent:
        raise ValueError(f"plan {plan} runs pixel models, and the request has prompts (for latent pipelines)")


class CoordinatorCore:
    """The decisions of the coordinator on `host` (see the module docstring).  Every `now` and every
    time kept here is the wall clock's, as the messages' timestamps are; `request_timeout_s` is
    emulated, as the scenario gives it, and `clock` gives its K (nodes/clock.py)."""

    def __init__(self, host: str, roles: Mapping[str, str], models: Mapping[str, tuple[str, ...]], steps: int,
                 strategies: Mapping[str, Strategy], planner: Planner, request_timeout_s: float,
                 clock: Clock | None = None) -> None:
        self.host = host
        self.strategies = dict(strategies)
        self.planner = planner
        self.live = LiveEstimates()
        self.clock = clock or Clock()
        self.request_timeout_s = request_timeout_s
        self.wall_timeout_s = self.clock.wall(request_timeout_s)
        self.unavailable: dict[str, str] = {}
        self.cluster = Cluster(edge=host, roles=roles, models=models, steps=steps, planner=planner,
                               live=self.live, unavailable=self.unavailable, clock=self.clock)
        # the strategies that learn: told what happened to each request they planned
        self.observers = {name: s for name, s in self.strategies.items()
                          if callable(getattr(s, "observe", None))}
        # the hosts whose loss fails requests: devices run only their own requests' stages
        self.watched = [h for h, role in roles.items() if role != "device" and h != host]
        self.down: dict[str, str] = {}  # host -> why: its connection closed and is not back
        self.in_flight: OrderedDict[str, Flight] = OrderedDict()
        self.avoided: dict[str, tuple[float, str]] = {}  # host re-planned around -> (until, why)
        self.replanned: OrderedDict[str, None] = OrderedDict()  # request ids re-planned, newest last
        self.reconnecting: dict[str, float] = {}  # host -> when its stuck connection was given up

    def unservable(self) -> list[str]:
        """The strategies this cluster cannot serve, each with why (not fatal: a run may not use it).
        A plugin is not asked: a probe would be a decision it might learn from or fault on."""
        devices = self.cluster.hosts("device")
        held = [m for models in self.cluster.models.values() for m in models]
        # a cluster of latent pipelines only serves requests with prompts, at a guidance scale: probed
        # at each one the latent quality table was measured at (a floor is met at some, not others)
        latent = bool(held) and all(map(is_pipeline_folder, held))
        planner = self.cluster.planner
        scales = sorted({g for _, g in planner.latent_rows}) if latent and planner is not None else []
        asked = [{"prompts": ("probe",), "guidance_scale": g} for g in scales or [7.5]] if latent else [{}]
        found = []
        for name, strategy in self.strategies.items() if devices else ():
            if isinstance(strategy, Plugin):
                continue
            failures = []
            for prompts in asked:
                try:
                    probe = PlanRequest(request_id="probe", device=devices[0], n=1, strategy=name, **prompts)
                    strategy.plan_for(probe, self.cluster)
                except ValueError as exc:
                    failures.append(str(exc))
            if len(failures) == len(asked):
                found.append(f"strategy {name} cannot serve requests in this cluster: {failures[0]}")
        return found

    # ---- events ---------------------------------------------------------------------------

    def on_request(self, request: PlanRequest, now: float) -> list[Action]:
        self.live.observe_transfer(request.device, self.host, request.request_bytes,
                                   request.wall_received - request.wall_sent)
        self._refresh_unavailable(now)
        strategy = self.strategies.get(request.strategy)
        try:
            if strategy is None:
                known = ", ".join(sorted(self.strategies))
                raise ValueError(f"unknown strategy {request.strategy!r} (known: {known})")
            decision = self._plan(strategy, request)
            check_fits(decision.plan, request)
        except Exception as exc:  # ValueError: cannot serve; anything else: a planner bug, same outcome
            return self._told([Fail(request, f"no plan: {exc}")])
        return self._told(self._dispatch(request, self._predicted(decision, request), now))

    def on_report(self, report: Report, now: float) -> list[Action]:
        """A report: the path its work came by, and the end of its stage (or of its request)."""
        self.live.reports += 1
        self.avoided.pop(report.host, None)  # a report came through: its path is back
        flight = self.in_flight.get(report.request_id)
        if report.late:  # the first plan's result of a re-planned request reached its device
            for message in self.live.take_stranded(report.request_id):
                self.avoided.pop(message.src, None)  # it got through from there: that path is back
            return []
        if report.stage is not None and report.request_id in self.replanned and (
                flight is None or report.stage >= len(flight.plan.stages)
                or flight.plan.stages[report.stage].host != report.host):
            # the plan it was re-planned away from: its message got through, so that path is up
            # again, and the time it took tells of the failure, not of the path now
            self.live.arrived((report.request_id, report.stage), stranded=True)
            return []
        if (d := report.delivery) is not None:
            self.live.observe_transfer(d.source, report.host, d.message_bytes, d.received - d.sent)
            if not (report.model and is_pipeline_folder(report.model)):  # a latent plan's are computed
                self.planner.sizes.observe(d.kind, d.message_bytes, report.n)
        if report.stage is None:  # the device has its result: nothing of this request is queued
            self.live.forget(report.request_id)
            # nor on its way: a stage's report that comes after this one (another sender, no
            # order between them) must not start awaiting the result it already delivered
            done = self.in_flight.pop(report.request_id, None)
            if done is not None and not done.told:
                self._tell(done, self._done(done, report, now))
            return []
        self.live.arrived((report.request_id, report.stage))
        if report.compute_end is not None and flight is not None:  # its output is on its way now
            stages, index = flight.plan.stages, report.stage + 1
            last = index == len(stages)
            target = flight.request.device if last else stages[min(index, len(stages) - 1)].host or ""
            sizes = self.planner.sizes
            size = (sizes.result_per_image if last else sizes.state_per_image) * report.n
            self.live.sent((report.request_id, index), report.host, target, report.compute_end, flight.until,
                           size)
        if report.compute_end is not None:
            self.live.queues.finished(report.host, (report.request_id, report.stage), report.compute_end)
            if report.compute_start is not None and report.model and report.steps:
                self.live.observe_steps(report.host, report.model, report.n, report.steps,
                                        report.compute_end - report.compute_start)
        return []

    def on_tick(self, now: float) -> list[Action]:
        """Re-plan (once) each planned request whose message is stuck on a path that has failed; tell
        a strategy that observes of its requests that timed out unreported."""
        if self.observers:
            for flight in [f for f in self.in_flight.values() if f.until <= now and not f.told]:
                self._tell(flight, self._timed_out(flight))
        actions: list[Action] = []
        late_after = self.clock.wall(RESCUE_MIN_S)
        for (request_id, index), m in list(self.live.on_way.items()):
            flight = self.in_flight.get(request_id)
            if flight is None or flight.rescued or m.until <= now:
                continue
            strategy = self.strategies.get(flight.request.strategy)
            avoid = [h for h in (m.dst, m.src) if h not in (self.host, flight.request.device)]
            due = self._due_s(request_id, index, m.src, m.dst, int(m.size), m.sent, now)
            if strategy is None or not reroutes(strategy, flight.request) or not avoid or due is None:
                continue  # a fixed plan stays fixed; a device's own link has no way around it
            transfer, expected = due
            if not overdue(now - m.sent, expected, transfer, self._round_trip_s(m.src, m.dst), late_after):
                continue
            late_s = self.clock.emulated(now - m.sent)
            why = f"{m.src}->{m.dst} {late_s:.3g} s late (emulated)"
            actions += self._replan(flight, strategy, avoid[0], why, now)
            if index == 0 and m.src == self.host and m.dst not in self.reconnecting:  # our dispatch
                self.reconnecting[m.dst] = now
                # each attempt is given a few round trips (at least the kernel's first SYN timeout)
                actions.append(Reconnect(m.dst, max(1.0, 4 * self._round_trip_s(self.host, m.dst))))
        return actions

    def on_connection_lost(self, host: str, reason: str, now: float) -> list[Action]:
        """Fail every request in flight through `host` now: its device need not wait for a timeout.
        One that had already completed is counted as a late reply by its device, nothing more."""
        self.down[host] = reason
        failed: list[Action] = []
        for request_id, flight in list(self.in_flight.items()):
            if flight.until <= now or host not in flight.hosts:
                continue
            del self.in_flight[request_id]
            failed.append(Fail(flight.request, reason, flight.plan, "requests_failed_host_down"))
        return self._told(failed)

    def on_connection_back(self, host: str) -> None:
        self.down.pop(host, None)

    def on_path_back(self, host: str) -> None:
        """A fresh connection to `host` completed its handshake: the path is back. What was sent on
        the old connection arrives when TCP retransmits it and says nothing of the path now."""
        since = self.reconnecting.pop(host, None)
        if since is None:
            return
        self.avoided.pop(host, None)
        self.live.drop_sent(self.host, host, before=since)

    def on_dispatch_failed(self, dispatch: Dispatch, reason: str) -> list[Action]:
        """The loop could not send a dispatch's stage 0: the request fails, nothing of it is awaited."""
        request_id = dispatch.request.request_id
        self.in_flight.pop(request_id, None)
        self.live.forget(request_id)
        fail = Fail(dispatch.request, reason, dispatch.decision.plan, "requests_dispatch_failed")
        return self._told([fail])

    # ---- decisions ------------------------------------------------------------------------

    def _dispatch(self, request: PlanRequest, decision: Decision, now: float, note: str | None = None,
                  replanned: bool = False) -> list[Action]:
        plan = decision.plan
        hosts = frozenset(stage.host or "" for stage in plan.stages)
        down = [self.down[h] for h in sorted(hosts) if h in self.down]
        if down:
            return [Fail(request, down[0], plan)]
        self._remember(request, plan, hosts, now)
        until = now + self.wall_timeout_s
        assert decision.prediction is not None
        for index, (stage, (ready, start, end)) in enumerate(zip(plan.stages, decision.prediction.stages,
                                                                 strict=True)):
            # each stage holds its host for its predicted time, from its predicted arrival
            self.live.queues.reserve(stage.host or "", (request.request_id, index), ready, end - start, until)
        self.live.sent((request.request_id, 0), self.host, plan.stages[0].host or "", now, until,
                       self.planner.sizes.dispatch)
        return [Dispatch(request, decision, note, replanned)]

    def _plan(self, strategy: Strategy, request: PlanRequest) -> Decision:
        """The strategy's plan; where only a host being avoided (re-planned around) could serve
        it, a plan through that host after all: waiting on a path that may be back beats failing."""
        try:
            return strategy.plan_for(request, self.cluster)
        except ValueError:
            avoided = [h for h in self.avoided if h in self.unavailable]
            if not avoided:
                raise
            for host in avoided:
                del self.unavailable[host]
            return strategy.plan_for(request, self.cluster)

    def _predicted(self, decision: Decision, request: PlanRequest) -> Decision:
        """A fixed strategy's plan gets the same prediction a planned one makes for itself."""
        if decision.prediction is not None:
            return decision
        row = self.planner.row_of(decision.plan, request.guidance_scale)
        predicted = self.planner.predict(decision.plan, row, request, self.live)
        return Decision(decision.plan, predicted, decision.note)

    def _refresh_unavailable(self, now: float) -> None:
        """Hosts the planner must avoid now: down (their connection closed), suspect (a stage there
        never reported; nodes/planning/estimates.py) or re-planned around (`avoided`)."""
        self.unavailable.clear()
        for host in list(self.live.queues.queues):
            self.live.queues.schedule(host, now)  # expires what timed out unreported
        self.live.queues.expire_suspicion(now, self.wall_timeout_s)
        self.unavailable.update(self.live.queues.suspect_reasons())
        for host, (until, why) in list(self.avoided.items()):
            if until <= now:
                del self.avoided[host]
            else:
                self.unavailable.setdefault(host, why)
        for host in self.watched:
            if host in self.down:
                self.unavailable[host] = self.down[host]

    def _remember(self, request: PlanRequest, plan: Plan, hosts: frozenset[str], now: float) -> None:
        while self.in_flight and (len(self.in_flight) >= MAX_IN_FLIGHT
                                  or next(iter(self.in_flight.values())).until <= now):
            _, oldest = self.in_flight.popitem(last=False)  # dispatched earliest, so timed out first
            if oldest.until <= now and not oldest.told:  # (one pushed out by the bound is never told)
                self._tell(oldest, self._timed_out(oldest))
        earlier = self.in_flight.pop(request.request_id, None)
        until = earlier.until if earlier else now + self.wall_timeout_s
        self.in_flight[request.request_id] = Flight(request, plan, hosts, until, rescued=earlier is not None)

    # ---- what a strategy is told ------------------------------------------------------------

    def _told(self, actions: list[Action]) -> list[Action]:
        """`actions`, after telling each failed request's strategy why it failed."""
        for action in actions:
            if isinstance(action, Fail):
                self._observe(action.request.strategy,
                              Outcome(action.request, action.plan, ok=False, reason=action.reason))
        return actions

    def _tell(self, flight: Flight, outcome: Outcome) -> None:
        flight.told = True
        self._observe(flight.request.strategy, outcome)

    def _done(self, flight: Flight, report: Report, now: float) -> Outcome:
        """The outcome of a request whose device reported its result: done, unless its device had
        given it up by then (past `until`)."""
        if flight.until <= now:
            return self._timed_out(flight)
        arrived = report.delivery.received if report.delivery is not None else now
        sent = flight.request.wall_sent or flight.request.wall_received
        return Outcome(flight.request, flight.plan, ok=True, latency_s=self.clock.emulated(arrived - sent))

    def _timed_out(self, flight: Flight) -> Outcome:
        why = f"no result reported within the request timeout of {self.request_timeout_s:g} s"
        return Outcome(flight.request, flight.plan, ok=False, reason=why)

    def _observe(self, name: str, outcome: Outcome) -> None:
        strategy = self.observers.get(name)
        if strategy is None:
            return
        try:
            strategy.observe(outcome)  # type: ignore[attr-defined]  # observers have it
        except Exception as exc:  # a strategy's learning is never the coordinator's failure
            log.warning("strategy %s: observe(%s) raised %s: %s", name, outcome.request.request_id,
                        type(exc).__name__, exc)

    def _round_trip_s(self, a: str, b: str) -> float:
        """An empty message's time a -> b and back (one direction twice where only it is known)."""
        known = [t for t in (self.live.transfer_s(a, b, 0), self.live.transfer_s(b, a, 0)) if t is not None]
        return 2 * sum(known) / len(known) if known else 0.0

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

    def _replan(self, flight: Flight, strategy: Strategy, avoid: str, why: str, now: float) -> list[Action]:
        request = flight.request
        flight.rescued = True
        self._refresh_unavailable(now)
        reason = f"a message to or from it is overdue ({why})"
        self.avoided[avoid] = (now + self.wall_timeout_s, reason)
        self.unavailable.setdefault(avoid, reason)
        try:
            again = request.model_copy(update={"wall_received": now, "warmup": False})  # no exploring now
            decision = self._predicted(strategy.plan_for(again, self.cluster), again)
        except ValueError:  # no other plan: the request rides out the stuck one
            return []
        self.replanned[request.request_id] = None
        while len(self.replanned) > MAX_IN_FLIGHT:
            self.replanned.popitem(last=False)
        self.live.queues.forget(request.request_id)  # the stuck plan's reservations
        self.live.strand(request.request_id)
        return self._dispatch(request, decision, now, note=f"re-planned: {why}", replanned=True)
