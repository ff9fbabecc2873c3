"""Strategies: how the coordinator turns a request into a plan with every stage's host filled in.

One interface for every strategy, the built-in ones and a researcher's own (docs/planner.md,
"Writing a strategy"):

    class MyStrategy:
        def __init__(self, name: str, options: dict) -> None: ...      # a plugin's; the built-ins
                                                                       # are built from their spec
        def plan_for(self, request: PlanRequest, view: Cluster) -> Decision: ...
        def observe(self, outcome: Outcome) -> None: ...               # optional

`plan_for` gets the request as the coordinator has it and `Cluster`, the coordinator's read-only
view (hosts, models, live estimates, queues, hosts to avoid, the quality table, the planner's
prediction of any plan), and returns a `Decision`: the plan, and optionally the planner's
prediction and a note on the choice.  A strategy raises ValueError naming the reason when it cannot
serve a request; the coordinator turns that into a failed request.  `observe`, where a strategy has
it, is told what happened to every request it planned (`Outcome`: done with its latency, or failed
with its reason), so that it can learn.

The fixed strategies (`cloud_only`, `edge_only`, `device_only`, `fixed_split`) give the same plan
whatever happens; `elastic` and `routing` choose per request with nodes/planning/planner.py from the
cluster's live estimates; `cascade` runs the device's model on the device and plans the escalation of
the images its gate doubts.  None of them learns, so none has `observe`.  A `plugin`
(nodes/planning/plugins.py finds it) is wrapped in `Plugin`, which makes its faults its own.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from nodes.clock import Clock
from nodes.diffusion.model_zoo import plan_models_kind
from nodes.planning import plugins
from nodes.planning.cascade_table import escalation_models
from nodes.planning.estimates import LiveEstimates
from nodes.planning.plan import Plan, Stage, check_tiling, parse_plan, place
from nodes.planning.planner import Decision, Objective, Planner, Prediction, QualityFloor
from nodes.planning.request import PlanRequest
from nodes.planning.strategy_specs import DEFAULT_DECISION_BUDGET_MS, StrategySpec
from nodes.schema import Role

DEFAULT_MODEL = {"cloud_only": "large", "edge_only": "medium", "device_only": "small", "cascade": "small"}
RATE_PROBE_BYTES = 1_000_000  # what `Cluster.rate_mbit` times beyond an empty message
CUT_SHORT = 2.0  # a plugin's decision is waited for this many times its budget, then left running


@dataclass(frozen=True)
class Cluster:
    """The coordinator's view, read-only to a strategy: hosts by role and the models each one holds,
    the schedule's steps and the run's clock; in the coordinator also the planner (the quality table,
    message sizes, hardware) and what is known now: the live estimates (paths, step times, queues,
    messages on their way: nodes/planning/estimates.py, updated from every report) and the hosts to
    avoid, each with why (down, suspect, or re-planned around).

    The estimates keep the wall clock, as the messages' timestamps do; the helpers below answer in
    emulated seconds (the scenario's), except `predict`, whose `Prediction` says its clock field by
    field.  A `now` is a wall epoch: in `plan_for`, `request.wall_received`."""

    edge: str  # the coordinator's own edge host
    roles: Mapping[str, str]
    models: Mapping[str, tuple[str, ...]]
    steps: int
    planner: Planner | None = None
    live: LiveEstimates | None = None
    unavailable: Mapping[str, str] = field(default_factory=dict)
    clock: Clock = Clock()

    def hosts(self, role: str) -> list[str]:
        return sorted(h for h, r in self.roles.items() if r == role)

    def host_of(self, tier: Role, request: PlanRequest) -> str:
        if tier == "edge":
            return self.edge
        if tier == "device":
            return request.device
        clouds = self.hosts("cloud")
        if not clouds:
            raise ValueError("no cloud host in the cluster")
        return clouds[0]

    def check(self, plan: Plan) -> Plan:
        """Every stage has a host that exists and holds the stage's model; stages tile [0, T); its
        models are all pixel denoisers or all latent pipelines sharing one latent space
        (nodes/diffusion/model_zoo.py plan_models_kind)."""
        check_tiling(plan, self.steps)
        for stage in plan.stages:
            if stage.host not in self.roles:
                raise ValueError(f"plan stage {stage}: host {stage.host!r} is not in the cluster")
            if stage.model not in self.models.get(stage.host, ()):
                raise ValueError(f"plan stage {stage}: host {stage.host} does not hold model {stage.model!r}")
        plan_models_kind(plan)
        return plan

    # ---- what a strategy may ask ----------------------------------------------------------------

    def quality(self, plan: Plan, guidance_scale: float | None = None) -> Mapping[str, Any] | None:
        """The quality table's row of the plan, hosts aside (`fid`, `class_accuracy`, `kid`, ...);
        a latent plan's at `guidance_scale` (a request's; None: 7.5, diffusers' default); None for a
        plan off the table's grid, or where no table is loaded."""
        return None if self.planner is None else self.planner.row_of(plan, guidance_scale)

    def predict(self, plan: Plan, request: PlanRequest) -> Prediction:
        """What the planner predicts of `plan` for `request` now: latency along its path with the live
        estimates (wall seconds: `clock.emulated(p.wall_latency_s)`), its quality from the table,
        the device's energy.  The coordinator records this prediction for every plan dispatched."""
        planner, live = self._planner()
        return planner.predict(plan, planner.row_of(plan, request.guidance_scale), request, live)

    def candidates(self, request: PlanRequest, floor: QualityFloor | None = None,
                   single_host: bool = False) -> list[Plan]:
        """The quality table's plans that meet `floor`, each stage on every available host that holds
        its model (as `elastic` chooses among); ValueError naming why there are none."""
        planner, _ = self._planner()
        objective = Objective(floor=floor or QualityFloor(), single_host=single_host)
        return [plan for plan, _ in planner.candidates(request.device, objective, self.unavailable,
                                                        request.latent, request.guidance_scale)]

    def transfer_s(self, src: str, dst: str, size_bytes: int = 0) -> float | None:
        """Emulated seconds for a message of `size_bytes` from src to dst, as the live estimates
        have the path; None where the path was never observed."""
        wall = None if self.live is None else self.live.transfer_s(src, dst, int(size_bytes))
        return None if wall is None else self.clock.emulated(wall)

    def rate_mbit(self, src: str, dst: str) -> float | None:
        """The path's estimated rate in Mbit/s of emulated time (what 1 MB takes beyond an empty
        message); None where never observed, or where its messages were too alike in size to tell
        rate from delay."""
        empty, full = self.transfer_s(src, dst, 0), self.transfer_s(src, dst, RATE_PROBE_BYTES)
        if empty is None or full is None or full <= empty:
            return None
        return 8 * RATE_PROBE_BYTES / (full - empty) / 1e6

    def backlog_s(self, host: str, now: float) -> float:
        """Emulated seconds of work queued on `host` at wall time `now` (the stages dispatched there,
        laid end to end as predicted and corrected by its reports); 0 where none is known."""
        return 0.0 if self.live is None else self.clock.emulated(self.live.queues.backlog_s(host, now))

    def _planner(self) -> tuple[Planner, LiveEstimates]:
        if self.planner is None or self.live is None:
            raise ValueError("this view has no planner and no live estimates (only a coordinator's has)")
        return self.planner, self.live


@dataclass(frozen=True)
class Outcome:
    """What happened to a request a strategy planned, as the coordinator learns it: its `observe`
    gets one per request.  Done: the device's report of its result came (`latency_s`, emulated, from
    the device's sending to the result's arrival).  Failed: the coordinator failed it (`reason`, as
    the request's record says: no plan, a host down, a dispatch that could not be sent), or no result
    was reported within the request timeout (a stage that failed at its host, a lost message)."""

    request: PlanRequest
    plan: Plan | None  # what was dispatched; None where it failed before any plan was
    ok: bool
    latency_s: float | None = None
    reason: str | None = None


class Strategy(Protocol):
    """A strategy (the module docstring; docs/planner.md, "Writing a strategy"): `plan_for` gives
    the request's plan from the read-only view, or raises ValueError naming why it cannot; an
    optional `observe(outcome: Outcome) -> None` is told what happened to each request it planned.
    The coordinator waits for both, between its messages: keep them quick."""

    name: str

    def plan_for(self, request: PlanRequest, cluster: Cluster) -> Decision: ...


@dataclass(frozen=True)
class SingleTier:
    """All T steps with one model on one tier: cloud_only, edge_only, device_only."""

    name: str
    tier: Role
    model: str
    placement: tuple[str, str] = ("first", "last")  # a latent plan's (encode, decode): plan.place

    def plan_for(self, request: PlanRequest, cluster: Cluster) -> Decision:
        host = cluster.host_of(self.tier, request)
        plan = Plan((Stage(self.model, 0, cluster.steps, host),))
        return Decision(cluster.check(place(plan, *self.placement, request.device)))


@dataclass(frozen=True)
class FixedSplit:
    """Consecutive stages, each `share` of the T steps (cut points rounded to whole steps; a stage
    that rounds to no steps is left out), e.g. large@cloud, then medium@edge, then small@device."""

    name: str
    split: tuple[tuple[str, Role, float], ...]
    placement: tuple[str, str] = ("first", "last")  # a latent plan's (encode, decode): plan.place

    def plan_for(self, request: PlanRequest, cluster: Cluster) -> Decision:
        stages, start, cumulative = [], 0, 0.0
        for index, (model, tier, share) in enumerate(self.split):
            cumulative += share
            end = cluster.steps if index == len(self.split) - 1 else round(cluster.steps * cumulative)
            if end > start:
                stages.append(Stage(model, start, end, cluster.host_of(tier, request)))
                start = end
        plan = Plan(tuple(_merge_same_host(stages)))
        return Decision(cluster.check(place(plan, *self.placement, request.device)))


@dataclass(frozen=True)
class Planned:
    """`elastic` (any number of stages) or `routing` (one host): the planner's choice per request."""

    name: str
    objective: Objective

    def plan_for(self, request: PlanRequest, cluster: Cluster) -> Decision:
        if cluster.planner is None or cluster.live is None:
            raise ValueError(f"strategy {self.name} needs the quality table, which this coordinator "
                             "has not loaded")
        decision = cluster.planner.decide(request, self.objective, cluster.live, cluster.unavailable,
                                          explore=request.warmup)
        cluster.check(decision.plan)
        return decision


@dataclass(frozen=True)
class Cascade:
    """`cascade`: every image first with the device's model on the device; the images the device's
    gate doubts come back as an escalation request (nodes/runtime/device.py), routed here.  Its
    models may be pixel denoisers or latent pipelines (the gate then checks the digit each prompt
    names, and the escalation carries the doubted images' prompts).

    An escalation is a decision from the live view, as `elastic`'s plans are: it goes to the
    escalation model on the fastest host of `escalate_tier` holding it (the planner's prediction)
    that is not down, suspect or re-planned around; where there is none, on another edge or cloud
    host holding it; where there is none either, to the best of `alternatives` (other escalation
    models the cascade table has a row for at this threshold, best class accuracy first) that an
    edge or cloud host to be used holds.  The coordinator
    re-plans an escalation stuck on a failed path as it does a planned request's
    (nodes/planning/coordination.py), so one sent into an outage is rescued, and the host is
    avoided by the escalations after it.  The device names the cascade by the model its
    escalation used, so its quality is the table's row for that target."""

    name: str
    model: str
    threshold: float
    escalate_model: str
    escalate_tier: Role
    alternatives: tuple[str, ...] = ()

    def plan_for(self, request: PlanRequest, cluster: Cluster) -> Decision:
        if not request.escalation:
            host = cluster.host_of("device", request)
            return Decision(cluster.check(Plan((Stage(self.model, 0, cluster.steps, host),))))
        for rank, hosts in enumerate(self._targets(cluster)):
            if hosts:
                model = hosts[0][0]
                plans = [Plan((Stage(model, 0, cluster.steps, host),)) for _, host in hosts]
                decision = self._fastest(plans, request, cluster)
                note = None if rank == 0 else (f"escalated to {decision.plan}: no {self.escalate_tier} host "
                                               f"holding {self.escalate_model} is available "
                                               f"({self._why_not(cluster)})")
                return Decision(cluster.check(decision.plan), decision.prediction, note)
        models = ", ".join((self.escalate_model, *self.alternatives))
        raise ValueError(f"escalation: no available host holds {models} ({self._why_not(cluster)})")

    def _targets(self, cluster: Cluster) -> list[list[tuple[str, str]]]:
        """(model, host) groups in the order they are tried: the escalation model on the hosts of
        `escalate_tier`, then on any other edge or cloud host, then each alternative model on any
        edge or cloud host; hosts to avoid left out.  A device is never an escalation's host."""
        def holders(model: str, roles: tuple[str, ...]) -> list[tuple[str, str]]:
            return [(model, h) for h in sorted(cluster.roles) if cluster.roles[h] in roles
                    and model in cluster.models.get(h, ()) and h not in cluster.unavailable]

        other = tuple(r for r in ("edge", "cloud") if r != self.escalate_tier)
        groups = [holders(self.escalate_model, (self.escalate_tier,)), holders(self.escalate_model, other)]
        return groups + [holders(model, ("edge", "cloud")) for model in self.alternatives]

    @staticmethod
    def _fastest(plans: list[Plan], request: PlanRequest, cluster: Cluster) -> Decision:
        if cluster.planner is None or cluster.live is None or len(plans) == 1:
            return Decision(plans[0])
        predicted = [(cluster.predict(plan, request), index) for index, plan in enumerate(plans)]
        prediction, index = min(predicted, key=lambda p: (p[0].wall_latency_s, p[1]))
        return Decision(plans[index], prediction)

    @staticmethod
    def _why_not(cluster: Cluster) -> str:
        return "; ".join(f"{h}: {why}" for h, why in sorted(cluster.unavailable.items())) or "none holds it"


@dataclass(frozen=True)
class Plugin:
    """`plugin`: a researcher's own strategy object, run in the coordinator's process, whose faults
    are its own and not the run's.  A fault is an exception from its `plan_for`, a decision slower
    than `budget_ms` (emulated), or a decision that is not a `Decision` whose plan the nodes can
    run (a host not in the cluster, a model the host does not hold, stages that do not tile the
    schedule, a stage on a device other than the requesting one).  A fault fails the request with
    a reason naming the plugin and the fault, or, with a `fallback` strategy, that strategy plans
    it and the decision's note names the fault.  A decision that does not return within CUT_SHORT
    times the budget is cut short (`_decide`), so a plugin that hangs stalls only its own requests.
    The plugin's own prediction, if any, is dropped: the coordinator predicts every plan the same
    way.  `observe` passes every outcome on; what it raises is the coordinator's to catch
    (nodes/planning/coordination.py)."""

    name: str
    ref: str  # as the scenario names the plugin (nodes/planning/plugins.py)
    strategy: Any  # the plugin's object: plan_for(request, view), perhaps observe(outcome)
    budget_ms: float = DEFAULT_DECISION_BUDGET_MS
    fallback: Strategy | None = None
    running: dict[str, Any] = field(default_factory=dict)  # a decision cut short: its thread, since

    def plan_for(self, request: PlanRequest, cluster: Cluster) -> Decision:
        began = time.perf_counter()
        stuck = self.running.get("thread")
        if stuck is not None and stuck.is_alive():
            since_ms = 1000 * cluster.clock.emulated(time.perf_counter() - self.running["since"])
            return self._instead(request, cluster, f"its decision cut short {since_ms:.0f} ms ago is still "
                                                   "running")
        try:
            decision = self._decide(request, cluster)
        except _CutShort as exc:
            return self._instead(request, cluster, str(exc))
        except Exception as exc:  # any exception at all is the plugin's fault
            return self._instead(request, cluster, f"raised {type(exc).__name__}: {plugins.one_line(exc)}")
        took_ms = 1000 * cluster.clock.emulated(time.perf_counter() - began)
        if took_ms > self.budget_ms:
            return self._instead(request, cluster, f"decision took {took_ms:.0f} ms, over its budget of "
                                                   f"{self.budget_ms:g} ms")
        if not isinstance(decision, Decision) or not isinstance(decision.plan, Plan):
            what = type(decision.plan if isinstance(decision, Decision) else decision).__name__
            return self._instead(request, cluster, f"returned a {what}, not a Decision with a Plan")
        try:
            plan = self._runnable(decision.plan, request, cluster)
        except Exception as exc:  # a plan made of anything but what a Plan holds fails here too
            return self._instead(request, cluster, f"invalid plan: {plugins.one_line(exc)}")
        note = decision.note if isinstance(decision.note, str) else None
        return Decision(plan, None, note)

    def _decide(self, request: PlanRequest, cluster: Cluster) -> Any:
        """The plugin's `plan_for`, on a thread of its own, waited for CUT_SHORT times its budget:
        one that takes longer is left running (a thread cannot be stopped) and the coordinator goes
        on; until it returns, this plugin's requests are faults too.  The thread is a daemon, so a
        decision that never returns does not keep the node process from exiting."""
        box: dict[str, Any] = {}

        def decide() -> None:
            try:
                box["decision"] = self.strategy.plan_for(request, cluster)
            except BaseException as exc:  # handed to the coordinator's thread below
                box["error"] = exc

        thread = threading.Thread(target=decide, name=f"plugin-{self.name}", daemon=True)
        began = time.perf_counter()
        thread.start()
        thread.join(cluster.clock.wall(CUT_SHORT * self.budget_ms / 1000))
        if thread.is_alive():
            self.running.update(thread=thread, since=began)
            waited_ms = 1000 * cluster.clock.emulated(time.perf_counter() - began)
            raise _CutShort(f"decision cut short after {waited_ms:.0f} ms, over its budget of "
                            f"{self.budget_ms:g} ms (it is left running)")
        if "error" in box:
            raise box["error"]
        return box.get("decision")

    def observe(self, outcome: Outcome) -> None:
        observe = getattr(self.strategy, "observe", None)
        if callable(observe):
            observe(outcome)

    @staticmethod
    def _runnable(plan: Plan, request: PlanRequest, cluster: Cluster) -> Plan:
        """The plan as the nodes will have it (through its text, so that every field is what the
        plan syntax allows), checked against the cluster."""
        parsed = cluster.check(parse_plan(str(plan), cluster.steps))
        for stage in parsed.stages:
            if cluster.roles.get(stage.host or "") == "device" and stage.host != request.device:
                raise ValueError(f"plan stage {stage}: a device runs stages of its own requests only "
                                 f"(this is {request.device}'s)")
        return parsed

    def _instead(self, request: PlanRequest, cluster: Cluster, fault: str) -> Decision:
        why = f"plugin {self.name} ({plugins.display(self.ref)}): {fault}"
        if self.fallback is None:
            raise ValueError(why)
        try:
            decision = self.fallback.plan_for(request, cluster)
        except ValueError as exc:
            raise ValueError(f"{why}; its fallback {self.fallback.name} cannot serve it either: "
                             f"{exc}") from None
        note = "; ".join(n for n in (f"fallback {self.fallback.name}: {why}", decision.note) if n)
        return Decision(decision.plan, decision.prediction, note)


class _CutShort(Exception):
    """A plugin's decision that did not return within CUT_SHORT times its budget."""


def reroutes(strategy: Strategy, request: PlanRequest) -> bool:
    """Whether the coordinator may re-plan `request` around a path that has failed: a planned
    strategy's choice, or a cascade's escalation, is made from the live view and may be made again;
    a fixed plan, a plugin's and a cascade's first pass on the device stay as they are."""
    return isinstance(strategy, Planned) or (isinstance(strategy, Cascade) and request.escalation)


def _merge_same_host(stages: list[Stage]) -> list[Stage]:
    """Two consecutive stages with the same model on the same host are one stage (no transfer)."""
    merged: list[Stage] = []
    for stage in stages:
        if merged and merged[-1].model == stage.model and merged[-1].host == stage.host:
            merged[-1] = Stage(stage.model, merged[-1].start, stage.end, stage.host)
        else:
            merged.append(stage)
    return merged


_TIER = {"cloud_only": "cloud", "edge_only": "edge", "device_only": "device"}


def objective_of(spec: StrategySpec) -> Objective:
    floor = QualityFloor(spec.min_class_accuracy, spec.max_fid)
    plans = None if spec.plans is None else tuple(parse_plan(p).key for p in spec.plans)
    return Objective(kind=spec.objective or "latency", floor=floor, single_host=spec.kind == "routing",
                     plans=plans)


def build_strategy(name: str, spec: StrategySpec, others: Mapping[str, Strategy] | None = None,
                   table: tuple[str, int] | None = None) -> Strategy:
    """The strategy of a scenario's table; a plugin's `fallback` is found among `others` (the
    scenario's built-in strategies, built); `table` (scheduler, steps) names the cascade table a
    cascade's escalations may route to other models by (none: its escalation model only).
    ValueError, one line, for a plugin that cannot be made."""
    if spec.kind == "plugin":
        assert spec.plugin is not None  # the spec checks it
        fallback = None
        if spec.fallback is not None:
            fallback = (others or {}).get(spec.fallback)
            if fallback is None or isinstance(fallback, Plugin):
                raise ValueError(f"strategy {name}: its fallback {spec.fallback!r} is not a built-in "
                                 "strategy of the scenario")
        strategy = plugins.instantiate(name, spec.plugin, spec.options or {})
        return Plugin(name, spec.plugin, strategy, spec.decision_budget_ms or DEFAULT_DECISION_BUDGET_MS,
                      fallback)
    if spec.kind in ("elastic", "routing"):
        return Planned(name, objective_of(spec))
    if spec.kind == "cascade":
        assert spec.threshold is not None and spec.escalate_model and spec.escalate_tier  # spec-checked
        device_model = spec.model or DEFAULT_MODEL["cascade"]
        alternatives = () if table is None else tuple(
            m for m in escalation_models(device_model, spec.threshold, *table) if m != spec.escalate_model)
        return Cascade(name, device_model, spec.threshold, spec.escalate_model, spec.escalate_tier,
                       alternatives)
    if spec.kind == "fixed_split":
        assert spec.split is not None  # the config validator guarantees it
        return FixedSplit(name, tuple((s.model, s.tier, s.share) for s in spec.split), _placement(spec))
    return SingleTier(name, _TIER[spec.kind], spec.model or DEFAULT_MODEL[spec.kind],  # type: ignore[arg-type]
                      _placement(spec))


def _placement(spec: StrategySpec) -> tuple[str, str]:
    return spec.encode or "first", spec.decode or "last"


def build_strategies(specs: Mapping[str, StrategySpec],
                     table: tuple[str, int] | None = None) -> dict[str, Strategy]:
    """Every strategy of a scenario, in its order: the built-in ones first, so that a plugin's
    fallback is there to be given to it.  `table`: (scheduler, steps), as for `build_strategy`."""
    built = {name: build_strategy(name, spec, table=table) for name, spec in specs.items()
             if spec.kind != "plugin"}
    plugged = {name: build_strategy(name, spec, built)
               for name, spec in specs.items() if spec.kind == "plugin"}
    both = {**built, **plugged}
    return {name: both[name] for name in specs}
