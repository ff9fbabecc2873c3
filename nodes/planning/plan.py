"""Generation plans: which model runs which denoising steps, on which host.

Syntax: `MODEL:START-END[@HOST],...` in step indices of one T-step schedule, e.g.
`large:0-30,small:30-50`. Stages must tile [0, T) in order.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_STAGE = re.compile(r"^(?P<model>[^:@,]+):(?P<start>\d+)-(?P<end>\d+)(?:@(?P<host>[A-Za-z0-9_.-]+))?$")


@dataclass(frozen=True)
class Stage:
    model: str
    start: int
    end: int
    host: str | None = None

    @property
    def steps(self) -> int:
        return self.end - self.start

    def __str__(self) -> str:
        host = f"@{self.host}" if self.host else ""
        return f"{self.model}:{self.start}-{self.end}{host}"


@dataclass(frozen=True)
class Plan:
    stages: tuple[Stage, ...]

    @property
    def total_steps(self) -> int:
        return self.stages[-1].end

    def models(self) -> list[str]:
        return [stage.model for stage in self.stages]

    def without_hosts(self) -> Plan:
        """The plan as generation sees it: where a stage ran does not change what it computes."""
        return Plan(tuple(Stage(s.model, s.start, s.end) for s in self.stages))

    @property
    def key(self) -> str:
        """The plan's text without its hosts: what its quality is looked up by."""
        return str(self.without_hosts())

    def __str__(self) -> str:
        return ",".join(str(stage) for stage in self.stages)


def parse_plan(text: str, steps: int | None = None) -> Plan:
    """Parse and check a plan; with `steps`, the stages must end exactly at T = steps."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError("empty plan: expected MODEL:START-END[@HOST],...")
    stages = []
    for part in text.strip().split(","):
        match = _STAGE.match(part.strip())
        if not match:
            raise ValueError(f"malformed plan stage {part.strip()!r}: expected MODEL:START-END[@HOST]")
        stages.append(
            Stage(match["model"], int(match["start"]), int(match["end"]), match["host"])
        )
    return check_tiling(Plan(tuple(stages)), steps)


def single_model_plan(model: str, steps: int) -> Plan:
    return Plan((Stage(model, 0, steps),))


def check_tiling(plan: Plan, steps: int | None = None) -> Plan:
    expected = 0
    for stage in plan.stages:
        if stage.end <= stage.start:
            raise ValueError(f"plan stage {stage} is empty or reversed: END must exceed START")
        if stage.start != expected:
            raise ValueError(
                f"plan stages do not tile [0, T): stage {stage} starts at {stage.start}, "
                f"expected {expected}"
            )
        expected = stage.end
    if steps is not None and expected != steps:
        raise ValueError(f"plan stages do not tile [0, {steps}): they end at {expected}")
    return plan
