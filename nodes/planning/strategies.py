"""Strategies: how the coordinator turns a request into a plan with every stage's host filled in.

One interface, `Strategy.plan_for(request, cluster) -> Decision` (the plan, and for a planned
strategy what it predicted and any note on the choice).  The fixed strategies (`cloud_only`,
`edge_only`, `device_only`, `fixed_split`) give the same plan whatever happens; `elastic` and
`routing` choose per request with nodes/planning/planner.py from the cluster's live estimates; `cascade`
runs the device's model on the device and plans the escalation of the images its gate doubts.  A strategy
raises ValueError naming the reason when it cannot serve a request; the coordinator turns that
into a failed request.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from nodes.planning.estimates import LiveEstimates
from nodes.planning.plan import Plan, Stage, check_tiling
from nodes.planning.planner import Decision, Objective, Planner, QualityFloor
from nodes.planning.request import PlanRequest
from nodes.planning.strategy_specs import StrategySpec
from nodes.schema import Role

DEFAULT_MODEL = {"cloud_only": "large", "edge_only": "medium", "device_only": "small", "cascade": "small"}


@dataclass(frozen=True)
class Cluster:
    """The coordinator's view: hosts by role and the models each one holds; for the planned
    strategies also the planner and what is known now (live estimates, hosts to avoid and why)."""

    edge: str  # the coordinator's own edge host
    roles: Mapping[str, str]
    models: Mapping[str, tuple[str, ...]]
    steps: int
    planner: Planner | None = None
    live: LiveEstimates | None = None
    unavailable: Mapping[str, str] = field(default_factory=dict)

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
        """Every stage has a host that exists and holds the stage's model; stages tile [0, T)."""
        check_tiling(plan, self.steps)
        for stage in plan.stages:
            if stage.host not in self.roles:
                raise ValueError(f"plan stage {stage}: host {stage.host!r} is not in the cluster")
            if stage.model not in self.models.get(stage.host, ()):
                raise ValueError(f"plan stage {stage}: host {stage.host} does not hold model {stage.model!r}")
        return plan


class Strategy(Protocol):
    name: str

    def plan_for(self, request: PlanRequest, cluster: Cluster) -> Decision: ...


@dataclass(frozen=True)
class SingleTier:
    """All T steps with one model on one tier: cloud_only, edge_only, device_only."""

    name: str
    tier: Role
    model: str

    def plan_for(self, request: PlanRequest, cluster: Cluster) -> Decision:
        host = cluster.host_of(self.tier, request)
        return Decision(cluster.check(Plan((Stage(self.model, 0, cluster.steps, host),))))


@dataclass(frozen=True)
class FixedSplit:
    """Consecutive stages, each `share` of the T steps (cut points rounded to whole steps; a stage
    that rounds to no steps is left out), e.g. large@cloud, then medium@edge, then small@device."""

    name: str
    split: tuple[tuple[str, Role, float], ...]

    def plan_for(self, request: PlanRequest, cluster: Cluster) -> Decision:
        stages, start, cumulative = [], 0, 0.0
        for index, (model, tier, share) in enumerate(self.split):
            cumulative += share
            end = cluster.steps if index == len(self.split) - 1 else round(cluster.steps * cumulative)
            if end > start:
                stages.append(Stage(model, start, end, cluster.host_of(tier, request)))
                start = end
        return Decision(cluster.check(Plan(tuple(_merge_same_host(stages)))))


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
    gate doubts come back as an escalation request (nodes/runtime/device.py), planned here on the
    escalation tier with the escalation model, all steps."""

    name: str
    model: str
    threshold: float
    escalate_model: str
    escalate_tier: Role

    def plan_for(self, request: PlanRequest, cluster: Cluster) -> Decision:
        escalate = request.escalation
        model, tier = (self.escalate_model, self.escalate_tier) if escalate else (self.model, "device")
        host = cluster.host_of(tier, request)
        return Decision(cluster.check(Plan((Stage(model, 0, cluster.steps, host),))))


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
    return Objective(kind=spec.objective or "latency", floor=floor, single_host=spec.kind == "routing")


def build_strategy(name: str, spec: StrategySpec) -> Strategy:
    if spec.kind in ("elastic", "routing"):
        return Planned(name, objective_of(spec))
    if spec.kind == "cascade":
        assert spec.threshold is not None and spec.escalate_model and spec.escalate_tier  # spec-checked
        return Cascade(name, spec.model or DEFAULT_MODEL["cascade"], spec.threshold, spec.escalate_model,
                       spec.escalate_tier)
    if spec.kind == "fixed_split":
        assert spec.split is not None  # the config validator guarantees it
        return FixedSplit(name, tuple((s.model, s.tier, s.share) for s in spec.split))
    return SingleTier(name, _TIER[spec.kind], spec.model or DEFAULT_MODEL[spec.kind])  # type: ignore[arg-type]


def build_strategies(specs: Mapping[str, StrategySpec]) -> dict[str, Strategy]:
    return {name: build_strategy(name, spec) for name, spec in specs.items()}
