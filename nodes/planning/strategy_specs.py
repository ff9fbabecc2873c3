"""What a scenario says of a strategy (its table): the kind, and the fields each kind takes.

nodes/planning/strategies.py builds the strategies from these; the scenario and each node's config
carry them.  A `plugin` is a researcher's own strategy class (nodes/planning/plugins.py): the spec
says only where it is and what it is given; whether it loads is checked when the scenario is read.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, StrictFloat, field_validator, model_validator

from nodes.planning.plan import parse_plan
from nodes.planning.plugins import anchored, check_ref
from nodes.schema import Role, StrictModel

StrategyKind = Literal["cloud_only", "edge_only", "device_only", "fixed_split", "elastic", "routing",
                       "cascade", "plugin"]
PLANNED_KINDS = ("elastic", "routing")  # chosen per request by nodes/planning/planner.py
FIXED_KINDS = ("cloud_only", "edge_only", "device_only", "fixed_split")
CASCADE_FIELDS = ("threshold", "escalate_model", "escalate_tier")
PLUGIN_FIELDS = ("plugin", "options", "decision_budget_ms", "fallback")
DEFAULT_DECISION_BUDGET_MS = 50.0  # emulated: a plugin's decision slower than this is its fault


class SplitStage(StrictModel):
    """One stage of a fixed split: `model` on the host of `tier` for `share` of the T steps."""

    model: str
    tier: Role  # where the stage runs: the host of that role (a device: the requesting one)
    share: StrictFloat = Field(gt=0, le=1)


class StrategySpec(StrictModel):
    kind: StrategyKind
    model: str | None = None  # for the single-tier kinds; defaults: large, medium, small
    split: list[SplitStage] | None = None  # for fixed_split
    # elastic and routing (nodes/planning/planner.py): what to minimise, under which quality floor (the
    # quality table's figures of the plan); routing minimises latency on one host
    objective: Literal["latency", "quality", "energy"] | None = None
    # the plans it may choose among, without hosts (e.g. ["large:0-20,small:20-30"]): it then places
    # their stages (and a latent plan's encoding and decoding); absent, the quality table's grid
    plans: list[str] | None = Field(None, min_length=1, max_length=100)
    min_class_accuracy: float | None = Field(None, ge=0, le=1)
    max_fid: float | None = Field(None, gt=0)
    # cascade: `model` (default small) on the device; the images whose requested label the device's
    # gate classifier gives less than `threshold` are regenerated with `escalate_model` on the host
    # of `escalate_tier`
    threshold: float | None = Field(None, gt=0, lt=1)
    escalate_model: str | None = None
    escalate_tier: Literal["edge", "cloud"] | None = None
    # plugin: `plugin` names the class (nodes/planning/plugins.py), built as Class(name, options);
    # a decision slower than `decision_budget_ms` (emulated) is a fault, as is an exception or an
    # invalid plan: the request fails, or where `fallback` names another (built-in) strategy of the
    # scenario, that strategy plans it and the plan's note names the fault
    # a latent pipeline's plans (docs/latent-pipelines.md): where the prompts are encoded and the
    # latents decoded, for the fixed kinds (the planned ones choose it per request); default first, last
    encode: Literal["first", "device", "each"] | None = None
    decode: Literal["last", "device"] | None = None
    plugin: str | None = None
    options: dict[str, Any] | None = None
    decision_budget_ms: float | None = Field(None, gt=0, le=60_000)
    fallback: str | None = None

    @field_validator("plugin")
    @classmethod
    def _plugin_ref(cls, v: str | None) -> str | None:
        # a file named relative to the working directory: made absolute here, since the node
        # processes run in another one (a scenario file's are made relative to it on reading)
        return None if v is None else anchored(check_ref(v), Path.cwd())

    @field_validator("plans")
    @classmethod
    def _plans(cls, v: list[str] | None) -> list[str] | None:
        for text in v or []:
            plan = parse_plan(text)  # ValueError naming what is wrong with it
            if any(s.host for s in plan.stages) or len(plan.denoising) != len(plan.stages):
                raise ValueError(f"plan {text!r}: give its denoising stages without hosts; the strategy "
                                 "places them")
        return v

    @model_validator(mode="after")
    def _fields_of_kind(self) -> StrategySpec:
        plugged = [f for f in PLUGIN_FIELDS if getattr(self, f) is not None]
        if self.kind == "plugin":
            if self.plugin is None:
                raise ValueError("plugin needs 'plugin': 'package.module:Class', 'file.py:Class' or an "
                                 "entry point's name")
        elif plugged:
            raise ValueError(f"{self.kind} takes no {plugged[0]!r} (only plugin does)")
        planned = self.kind in PLANNED_KINDS
        placing = [f for f in ("encode", "decode") if getattr(self, f) is not None]
        if placing and self.kind not in FIXED_KINDS:
            raise ValueError(f"{self.kind} takes no {placing[0]!r} (only {', '.join(FIXED_KINDS)} do; "
                             "elastic and routing choose it)")
        given = [f for f in ("objective", "plans", "min_class_accuracy", "max_fid")
                 if getattr(self, f) is not None]
        if not planned and given:
            raise ValueError(f"{self.kind} takes no {given[0]!r} (only elastic and routing do)")
        cascading = [f for f in CASCADE_FIELDS if getattr(self, f) is not None]
        if self.kind == "cascade":
            missing = [f for f in CASCADE_FIELDS if getattr(self, f) is None]
            if missing:
                raise ValueError(f"cascade needs {missing[0]!r} ({', '.join(CASCADE_FIELDS)})")
            if self.split is not None:
                raise ValueError("cascade takes 'model' (the device's), not 'split'")
        elif cascading:
            raise ValueError(f"{self.kind} takes no {cascading[0]!r} (only cascade does)")
        if planned:
            if self.model is not None or self.split is not None:
                raise ValueError(f"{self.kind} chooses its plans: it takes no 'model' or 'split'")
            if self.kind == "routing" and self.objective not in (None, "latency"):
                raise ValueError("routing minimises latency: its objective can only be 'latency'")
        elif self.kind == "fixed_split":
            if not self.split:
                raise ValueError("fixed_split needs 'split': a list of {model, tier, share}")
            if self.model is not None:
                raise ValueError("fixed_split takes 'split', not 'model'")
            if not math.isclose(sum(s.share for s in self.split), 1.0, abs_tol=1e-6):
                raise ValueError("fixed_split shares must add up to 1")
        elif self.kind == "plugin":
            if self.model is not None or self.split is not None:
                raise ValueError("plugin takes what it needs in 'options', not 'model' or 'split'")
        elif self.split is not None:
            raise ValueError(f"{self.kind} takes 'model', not 'split'")
        return self


def default_strategies() -> dict[str, StrategySpec]:
    return {
        "cloud_only": StrategySpec(kind="cloud_only"),
        "edge_only": StrategySpec(kind="edge_only"),
        "device_only": StrategySpec(kind="device_only"),
        "fixed_split": StrategySpec(
            kind="fixed_split",
            split=[
                SplitStage(model="large", tier="cloud", share=0.4),
                SplitStage(model="medium", tier="edge", share=0.3),
                SplitStage(model="small", tier="device", share=0.3),
            ],
        ),
    }
