"""A learning strategy, as a plugin: an epsilon-greedy bandit that learns per device which plan is fastest.

In the manner of bandit-based offloading for diffusion at the edge: each device has its own bandit
over a small set of candidate plans (the arms).  Per request it takes an arm it has never tried,
else with probability `epsilon` a random arm (exploring), else the arm of least estimated cost
(exploiting).  The cost of an arm is what the coordinator tells `observe`: the request's latency
(emulated seconds, from the device's sending to its result), or `failure_cost_s` for a request that
failed; its estimate is a recency-weighted mean (`step_size`), so that when a link or a host changes,
the bandit follows.  Quality enters as a floor: with `min_class_accuracy`, an arm whose plan's row of
the quality table is under it (or that has no row) is never taken.  The random draws come from one
generator seeded with `seed`, so a run's choices repeat for the same sequence of outcomes.

    [strategies.bandit]
    kind = "plugin"
    plugin = "bandit.py:EpsilonGreedy"     # beside the scenario file
    options = { epsilon = 0.1, seed = 0, plans = ["large:0-10@cloud", "medium:0-10@edge"] }

`plans`: plan strings (`MODEL:START-END@HOST,...`, docs/command-line.md "Plans") whose hosts may be
roles, `cloud`, `edge` or `device` (the requesting device), or host names; default: each model every
tier holds, alone, all steps.  An arm whose host is unavailable now (down, suspect) is left out of
that decision, unless every arm's is.
"""

from __future__ import annotations

import random
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from nodes.planning.plan import Plan, Stage, parse_plan
from nodes.planning.planner import Decision
from nodes.planning.request import PlanRequest
from nodes.planning.strategies import Cluster, Outcome

OPTIONS = ("plans", "epsilon", "seed", "step_size", "failure_cost_s", "min_class_accuracy")
TIERS = ("cloud", "edge", "device")
MAX_PENDING = 10_000  # decisions awaiting their outcome; the oldest are forgotten first


class EpsilonGreedy:
    def __init__(self, name: str, options: Mapping[str, Any]) -> None:
        unknown = sorted(set(options) - set(OPTIONS))
        if unknown:
            raise ValueError(f"unknown option {unknown[0]!r} (it takes {', '.join(OPTIONS)})")
        self.name = name
        plans = options.get("plans", [])
        if not isinstance(plans, list) or not all(isinstance(p, str) for p in plans):
            raise ValueError("plans must be a list of plan strings, e.g. ['large:0-10@cloud']")
        self.plans = [(text, parse_plan(text)) for text in plans]  # ValueError naming a malformed one
        self.epsilon = _number(options, "epsilon", 0.1, 0.0, 1.0)
        self.step_size = _number(options, "step_size", 0.2, 1e-6, 1.0)
        self.failure_cost_s = _number(options, "failure_cost_s", 10.0, 0.0, 1e6)
        floor = options.get("min_class_accuracy")
        self.min_class_accuracy = None if floor is None else _number(options, "min_class_accuracy", 0, 0, 1)
        seed = options.get("seed", 0)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"seed must be an integer (got {seed!r})")
        self.rng = random.Random(seed)
        self.chosen: dict[tuple[str, str], int] = {}  # (device, arm) -> times taken
        self.cost: dict[tuple[str, str], float] = {}  # (device, arm) -> estimated cost, emulated s
        self.pending: OrderedDict[str, tuple[str, str]] = OrderedDict()  # request id -> (device, arm)

    def plan_for(self, request: PlanRequest, view: Cluster) -> Decision:
        arms = self.arms(request, view)
        device = request.device
        untried = [arm for arm in arms if self.chosen.get((device, arm[0]), 0) == 0]
        if untried:
            (label, plan), why = untried[0], "first try"
        elif self.rng.random() < self.epsilon:
            (label, plan), why = self.rng.choice(arms), "exploring"
        else:
            known = [arm for arm in arms if (device, arm[0]) in self.cost]
            if known:
                label, plan = min(known, key=lambda arm: self.cost[(device, arm[0])])
                why = f"least cost {self.cost[(device, label)]:.3g} s"
            else:  # tried, no outcome yet: the one tried least
                (label, plan), why = min(arms, key=lambda arm: self.chosen[(device, arm[0])]), "awaiting"
        self.chosen[(device, label)] = self.chosen.get((device, label), 0) + 1
        self.pending[request.request_id] = (device, label)
        while len(self.pending) > MAX_PENDING:
            self.pending.popitem(last=False)
        return Decision(plan, note=f"bandit: {label} ({why})")

    def observe(self, outcome: Outcome) -> None:
        key = self.pending.pop(outcome.request.request_id, None)
        if key is None:  # not one of ours (a fallback's), or forgotten
            return
        cost = outcome.latency_s if outcome.ok and outcome.latency_s is not None else self.failure_cost_s
        old = self.cost.get(key)
        self.cost[key] = cost if old is None else old + self.step_size * (cost - old)

    def arms(self, request: PlanRequest, view: Cluster) -> list[tuple[str, Plan]]:
        """The candidate plans for this request, hosts filled in: those over the quality floor, and
        of those the ones on hosts available now (all of them if none is)."""
        if self.plans:
            arms = [(text, Plan(tuple(Stage(s.model, s.start, s.end, _host(s.host, request, view))
                                      for s in plan.stages))) for text, plan in self.plans]
        else:
            arms = []
            for tier in TIERS:
                host = _host(tier, request, view)
                arms += [(f"{model}@{tier}", Plan((Stage(model, 0, view.steps, host),)))
                         for model in view.models.get(host, ())]
        if self.min_class_accuracy is not None:
            floor = self.min_class_accuracy
            arms = [(label, plan) for label, plan in arms
                    if (row := view.quality(plan)) is not None and row["class_accuracy"] >= floor]
        if not arms:
            raise ValueError("no candidate plan (none given, or none over the quality floor)")
        up = [(label, plan) for label, plan in arms
              if not any(stage.host in view.unavailable for stage in plan.stages)]
        return up or arms


def _host(name: str | None, request: PlanRequest, view: Cluster) -> str | None:
    """A stage's host as the plans give it: a role's host (device: the requesting one) or a name."""
    if name in TIERS and name not in view.roles:
        try:
            return view.host_of(name, request)  # type: ignore[arg-type]  # a tier, checked above
        except ValueError:  # no cloud: the plan is invalid, and the coordinator says so
            return name
    return name


def _number(options: Mapping[str, Any], key: str, default: float, low: float, high: float) -> float:
    value = options.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise ValueError(f"{key} must be a number in [{low:g}, {high:g}] (got {value!r})")
    return float(value)
