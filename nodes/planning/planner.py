"""The planner behind the `elastic` and `routing` strategies: candidate plans, what each would cost
now, and the choice an objective makes among them.

Candidates: the plans of the quality table's grid (nodes/planning/quality_table.py: each model
alone, the model pairs with a boundary every 10 % of the steps, a coarse large->medium->small
grid), each stage on every host that holds its model; a device runs stages of its own requests
only.  The planner chooses among measured plans only: a plan off the grid has no measured quality,
so it is never a candidate.

A candidate's predicted latency follows the request's path with the coordinator's live estimates
(nodes/planning/estimates.py), never the configured links:

    arrive_0 = now + transfer(coordinator -> host_0, dispatch bytes)
    start_i  = max(arrive_i, when host_i is done with the stages whose inputs arrive before)
    end_i    = start_i + steps_i * step_s(host_i, model_i, n)
    arrive_i+1 = end_i + transfer(host_i -> host_i+1, state bytes)
    done     = end_last + transfer(host_last -> device, result bytes)     (0 if it is the device)
    latency  = done - request_sent

Times here are the wall clock's, as the estimates are (nodes/clock.py); deadlines and quality
are emulated, compared through the clock.  step_s is the host's profile (x K under time dilation)
for a profiled host, its reported steps for a native one.  A path not yet observed is composed
through the coordinator (a -> coordinator -> b); one still unknown counts 0 s and the
prediction says so (`assumed`).  Quality is the plan's row of the table.  Device energy (joules,
emulated time) is the device's busy power times its compute time plus its radio's joules for the
request's own transfers (topologies.radio.request_radio_energy).

Objectives (a strategy's `objective`), each under the strategy's quality floor:
    latency  least predicted latency plus what the plan costs the requests after it: its compute
             seconds on each server (cloud, edge) times the stages queued there now (a proxy for
             how many will queue behind it; 0 on an idle server).  Under load a plan that spends a
             device's own compute to spare a busy server is worth its few extra milliseconds
             (greedy least latency put a burst's every request whole on the edge or the cloud,
             and took longer in the mean than the fixed three-tier split)
    quality  best quality (least FID) among plans predicted to meet the deadline
    energy   least device energy among plans predicted to meet the deadline
Where no plan is predicted to meet the deadline, `quality` and `energy` take the fastest plan and
say so in the decision's `note`; where no candidate meets the floor (a host down or suspect), the
request is refused with the reason: never a silent fallback.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from nodes.clock import Clock
from nodes.planning import latent_plans
from nodes.planning.estimates import LiveEstimates
from nodes.planning.hardware import HardwarePower, StepProfile
from nodes.planning.plan import Plan, Stage, parse_plan
from nodes.planning.quality_table import latent_key
from nodes.planning.request import PlanRequest
from topologies.radio import Transfer, radio_model, request_radio_energy

ObjectiveKind = Literal["latency", "quality", "energy"]


@dataclass(frozen=True)
class HostFacts:
    """What the coordinator knows of a host in advance (its config, not its links)."""

    role: str
    models: tuple[str, ...]
    profiles: Mapping[str, StepProfile] | None = None  # model -> profile, when profiled
    power: HardwarePower | None = None
    radio: str | None = None
    # of its latent pipelines, what it loads besides the UNet (None: every component)
    latent_components: tuple[str, ...] | None = None


@dataclass(frozen=True)
class QualityFloor:
    min_class_accuracy: float | None = None
    max_fid: float | None = None

    def admits(self, row: Mapping[str, Any]) -> bool:
        return ((self.min_class_accuracy is None or row["class_accuracy"] >= self.min_class_accuracy)
                and (self.max_fid is None or row["fid"] <= self.max_fid))

    def __str__(self) -> str:
        parts = []
        if self.min_class_accuracy is not None:
            parts.append(f"class accuracy >= {self.min_class_accuracy:g}")
        if self.max_fid is not None:
            parts.append(f"FID <= {self.max_fid:g}")
        return " and ".join(parts) or "none"


@dataclass(frozen=True)
class Objective:
    kind: ObjectiveKind = "latency"
    floor: QualityFloor = QualityFloor()
    single_host: bool = False  # routing: the whole request on one host
    # the plans (by their denoising stages without hosts, `Plan.key`) it may choose among; None: the grid
    plans: tuple[str, ...] | None = None

    def allows(self, plan: Plan) -> bool:
        one_host = not self.single_host or len(plan.denoising) == 1
        return one_host and (self.plans is None or plan.key in self.plans)


@dataclass(frozen=True)
class Prediction:
    wall_latency_s: float  # wall seconds from the request's sending to its result's arrival
    fid: float | None
    class_accuracy: float | None
    device_energy_j: float | None
    stages: tuple[tuple[float, float, float], ...]  # (arrive, start, end) per stage, wall epoch s
    assumed: tuple[str, ...] = ()  # paths with no estimate, counted as 0 s


@dataclass(frozen=True)
class Decision:
    plan: Plan
    prediction: Prediction | None = None
    note: str | None = None  # e.g. why the objective could not be met


@dataclass
class Sizes:
    """Message sizes learnt from reports: bytes of a dispatch, per image of a state and a result."""

    dispatch: float = 0.0
    state_per_image: float = 0.0
    result_per_image: float = 0.0
    seen: dict[str, int] = field(default_factory=dict)

    def observe(self, kind: str, size: int, n: int) -> None:
        value = size if kind == "dispatch" else size / max(1, n)
        attr = {"dispatch": "dispatch", "state": "state_per_image", "result": "result_per_image"}[kind]
        count = self.seen.get(kind, 0)
        old = getattr(self, attr)
        setattr(self, attr, value if count == 0 else 0.8 * old + 0.2 * value)
        self.seen[kind] = count + 1


class Planner:
    def __init__(self, rows: Sequence[Mapping[str, Any]], hosts: Mapping[str, HostFacts], coordinator: str,
                 steps: int, clock: Clock | None = None, scheduler: str = "dpm",
                 latent_rows: Mapping[str, Mapping[str, Any]] | None = None) -> None:
        self.rows = list(rows)
        self.hosts = dict(hosts)
        self.coordinator = coordinator
        self.steps = steps
        self.clock = clock or Clock()  # its K: a profiled step takes K x its profile in wall time
        self.sizes = Sizes()
        self.plans = [(parse_plan(r["plan"], steps), r) for r in self.rows]
        # latent pipelines' plans (nodes/planning/latent_plans.py), with the latent quality table's
        # rows where it has them (quality_table.read_latent_table: (plan key, guidance) -> figures)
        self.latent_rows = dict(latent_rows or {})
        held = latent_plans.pipelines(m for f in self.hosts.values() for m in f.models)
        self.latent_plans = latent_plans.grid(held, steps) if held else []
        self.history = latent_plans.solver_history(scheduler)
        self.can_encode, self.can_decode = latent_plans.component_checks(
            {h: f.latent_components for h, f in self.hosts.items()},
            {h: f.models for h, f in self.hosts.items()})

    # --- candidates ----------------------------------------------------------------------------
    def holders(self, model: str, origin: str) -> list[str]:
        return [h for h, f in sorted(self.hosts.items())
                if model in f.models and (f.role != "device" or h == origin)]

    def candidates(self, origin: str, objective: Objective, unavailable: Mapping[str, str] | None = None,
                   latent: bool = False,
                   guidance_scale: float | None = None) -> list[tuple[Plan, Mapping[str, Any] | None]]:
        """Grid plans that meet the floor, with hosts; ValueError naming why there are none.
        `latent`: a latent pipeline's request (its plans, with each placement of its encoding and
        decoding the hosts allow; their quality the table's at the request's `guidance_scale`)."""
        unavailable = unavailable or {}
        if latent:
            return self._latent_candidates(origin, objective, unavailable, guidance_scale)
        floor_ok = [(p, r) for p, r in self.plans if objective.floor.admits(r) and objective.allows(p)]
        if not floor_ok:
            raise ValueError(f"infeasible: no plan of the quality table meets the floor ({objective.floor})")
        out = []
        for plan, row in floor_ok:
            options = [[h for h in self.holders(s.model, origin) if h not in unavailable]
                       for s in plan.stages]
            for hosts in itertools.product(*options):
                out.append((Plan(tuple(Stage(s.model, s.start, s.end, h)
                                       for s, h in zip(plan.stages, hosts, strict=True))), row))
        if not out:
            why = "; ".join(f"{h}: {why}" for h, why in sorted(unavailable.items())) or "no host holds them"
            raise ValueError(f"infeasible: no host can run a plan that meets the floor "
                             f"({objective.floor}): {why}")
        return out

    def _latent_candidates(self, origin: str, objective: Objective, unavailable: Mapping[str, str],
                           guidance_scale: float | None) -> list[tuple[Plan, Mapping[str, Any] | None]]:
        if not self.latent_plans:
            raise ValueError("infeasible: no host holds a latent pipeline")
        floor = objective.floor != QualityFloor()
        out: list[tuple[Plan, Mapping[str, Any] | None]] = []
        for plan in self.latent_plans:
            row = self.latent_rows.get(latent_key(plan.key, guidance_scale))
            if not objective.allows(plan) or (floor and (row is None or not objective.floor.admits(row))):
                continue
            options = [[h for h in self.holders(s.model, origin) if h not in unavailable]
                       for s in plan.stages]
            for hosts in itertools.product(*options):
                hosted = Plan(tuple(Stage(s.model, s.start, s.end, h)
                                    for s, h in zip(plan.stages, hosts, strict=True)))
                placed = latent_plans.placements(hosted, origin, self.can_encode, self.can_decode)
                out += [(p, row) for p in placed if not any(s.host in unavailable for s in p.stages)]
        if not out and floor:
            guidance = latent_key("", guidance_scale)[1]
            raise ValueError(f"infeasible: no latent pipeline's plan the hosts can run has a quality "
                             f"measured at guidance {guidance:g} that meets the floor ({objective.floor})")
        if not out:
            why = "; ".join(f"{h}: {why}" for h, why in sorted(unavailable.items())) or "no host holds them"
            raise ValueError(f"infeasible: no host can run a latent pipeline's plan: {why}")
        return out

    # --- prediction ----------------------------------------------------------------------------
    def step_s(self, host: str, model: str, n: int, live: LiveEstimates) -> float:
        facts = self.hosts[host]
        if facts.profiles is not None and model in facts.profiles:
            return self.clock.wall(facts.profiles[model].step_s(n))
        measured = live.step_s(host, model, n)
        return 0.0 if measured is None else measured

    def stage_s(self, plan: Plan, index: int, request: PlanRequest, live: LiveEstimates) -> float:
        """Wall seconds of stage `index`'s compute: its steps, and (a latent plan's) its encoding and
        decoding, from the host's profile (not profiled: 0, unknown)."""
        stage, n = plan.stages[index], request.n
        host = stage.host or ""
        seconds = stage.steps * self.step_s(host, stage.model, n, live) if stage.steps else 0.0
        if not request.latent:
            return seconds
        profile = (self.hosts[host].profiles or {}).get(stage.model)
        if profile is not None:
            if plan.encodes_at(index):
                seconds += self.clock.wall(profile.encode_s(n) or 0.0)
            if plan.decodes_at(index):
                seconds += self.clock.wall(profile.decode_s(n) or 0.0)
        return seconds

    def transfer_s(self, src: str, dst: str, size: float, live: LiveEstimates,
                   assumed: list[str], now: float | None = None) -> float:
        direct = live.transfer_s(src, dst, int(size), now)
        if direct is not None:
            return direct
        via = self.coordinator
        if via not in (src, dst):
            first = live.transfer_s(src, via, int(size), now)
            second = live.transfer_s(via, dst, int(size), now)
            if first is not None and second is not None:
                return first + second
        assumed.append(f"{src}->{dst}")
        return 0.0

    def predict(self, plan: Plan, row: Mapping[str, Any] | None, request: PlanRequest,
                live: LiveEstimates) -> Prediction:
        sent = request.wall_sent or request.wall_received  # no sending time: from its planning
        assumed: list[str] = []
        sizes = self.sizes
        device = request.device
        radio: list[Transfer] = []
        compute_s = 0.0

        def hop(src: str, dst: str, size: float, at: float) -> float:
            seconds = self.transfer_s(src, dst, size, live, assumed, request.wall_received)
            if device in (src, dst) and src != dst:
                radio.append((at, seconds, int(size), "up" if src == device else "down"))
            return at + seconds

        if request.request_bytes:
            radio.append((sent, max(0.0, request.wall_received - sent), request.request_bytes, "up"))
        arrive = hop(self.coordinator, plan.stages[0].host or "", sizes.dispatch, request.wall_received)
        times = []
        for index, stage in enumerate(plan.stages):
            host = stage.host or ""
            start = max(arrive, live.queues.free_at(host, request.wall_received, arrive))
            end = start + self.stage_s(plan, index, request, live)
            times.append((arrive, start, end))
            if host == device:
                compute_s += end - start
            last = index == len(plan.stages) - 1
            target = device if last else plan.stages[index + 1].host or ""
            if request.latent:
                size: float = latent_plans.boundary_bytes(plan, index, request.n, _guided(request),
                                                          self.history)
            else:
                size = (sizes.result_per_image if last else sizes.state_per_image) * request.n
            arrive = hop(host, target, size, end)
        return Prediction(wall_latency_s=arrive - sent, fid=row["fid"] if row else None,
                          class_accuracy=row["class_accuracy"] if row else None,
                          device_energy_j=self._device_energy(device, compute_s, radio),
                          stages=tuple(times), assumed=tuple(dict.fromkeys(assumed)))

    def _device_energy(self, device: str, compute_s: float, radio: list[Transfer]) -> float | None:
        facts = self.hosts.get(device)
        if facts is None or facts.power is None:
            return None
        emulated_s = self.clock.emulated  # joules are power times emulated seconds
        joules = facts.power.busy_w * emulated_s(compute_s)
        if facts.radio:
            emulated = sorted((emulated_s(s), emulated_s(d), b, direction) for s, d, b, direction in radio)
            joules += request_radio_energy(radio_model(facts.radio), emulated).total_j
        return joules

    def unobserved(self, plan: Plan, origin: str, live: LiveEstimates) -> int:
        """How many of the plan's paths (dispatch, hand-offs, result) have no estimate yet."""
        hosts = [self.coordinator, *(s.host or "" for s in plan.stages), origin]
        return sum(1 for a, b in zip(hosts, hosts[1:], strict=False) if a != b and (a, b) not in live.paths)

    def row_of(self, plan: Plan, guidance_scale: float | None = None) -> Mapping[str, Any] | None:
        """The quality table's row of a plan, hosts aside; a latent plan's at `guidance_scale` (a
        request's; None: diffusers' default).  None where the table has none."""
        latent = self.latent_rows.get(latent_key(plan.key, guidance_scale))
        if latent is not None:
            return latent
        return next((r for p, r in self.plans if p.key == plan.key), None)

    # --- the choice ----------------------------------------------------------------------------
    def decide(self, request: PlanRequest, objective: Objective, live: LiveEstimates,
               unavailable: Mapping[str, str] | None = None, explore: bool = False) -> Decision:
        scored = [(plan, self.predict(plan, row, request, live))
                  for plan, row in self.candidates(request.device, objective, unavailable, request.latent,
                                                   request.guidance_scale)]
        if explore:  # an unmeasured request: the plan over the most paths not yet observed
            plan, prediction = min(scored, key=lambda s: (-self.unobserved(s[0], request.device, live),
                                                          s[1].wall_latency_s))
            return Decision(plan, prediction, "warm-up: explores the paths it had not observed")
        # routing is the least expected completion alone, as the paper's routing inference
        busy = {} if objective.single_host else {
            h: len(live.queues.schedule(h, request.wall_received))
            for h, f in self.hosts.items() if f.role != "device"}

        def fastest(item: tuple[Plan, Prediction]) -> tuple[float, float]:
            return item[1].wall_latency_s, item[1].fid or 0.0

        def fastest_for_all(item: tuple[Plan, Prediction]) -> tuple[float, float]:
            return item[1].wall_latency_s + _taken_from_others(item, busy), item[1].fid or 0.0

        if objective.kind == "latency":
            plan, prediction = min(scored, key=fastest_for_all)
            return Decision(plan, prediction)
        wall_deadline_s = None if request.deadline_s is None else self.clock.wall(request.deadline_s)
        in_time = [s for s in scored if wall_deadline_s is None or s[1].wall_latency_s <= wall_deadline_s]
        if not in_time:
            plan, prediction = min(scored, key=fastest)
            return Decision(plan, prediction, f"no plan is predicted to meet the deadline of "
                                              f"{request.deadline_s:.3g} s: the fastest instead")
        if objective.kind == "quality":
            plan, prediction = min(in_time, key=lambda s: (s[1].fid or 0.0, s[1].wall_latency_s))
        else:
            plan, prediction = min(in_time, key=lambda s: (_energy(s[1]), s[1].wall_latency_s))
        return Decision(plan, prediction)


def _taken_from_others(item: tuple[Plan, Prediction], queued: Mapping[str, int]) -> float:
    """What the plan's server time costs the requests after it: each compute second on a server
    delays every request that will queue there behind it; the stages queued there now stand for
    how many will (none queued: no cost, the plan is judged on its own latency)."""
    plan, prediction = item
    return sum((end - start) * queued.get(stage.host or "", 0)
               for stage, (_, start, end) in zip(plan.stages, prediction.stages, strict=True))


def _guided(request: PlanRequest) -> bool:
    return request.guidance_scale is not None and request.guidance_scale > 1


def _energy(prediction: Prediction) -> float:
    return float("inf") if prediction.device_energy_j is None else prediction.device_energy_j
