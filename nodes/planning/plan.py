"""Generation plans: which model runs which denoising steps, on which host.

Syntax: `MODEL:START-END[@HOST],...` in step indices of one T-step schedule, e.g.
`large:0-30,small:30-50`. Stages must tile [0, T) in order.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

ENCODE_EACH = "encode=each"
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
    encode_each: bool = False  # a latent plan's every denoising host encodes the prompts itself

    @property
    def total_steps(self) -> int:
        return self.stages[-1].end

    def models(self) -> list[str]:
        return [stage.model for stage in self.stages]

    @property
    def denoising(self) -> tuple[Stage, ...]:
        """The stages that run denoising steps (not a zero-step encoding or decoding stage)."""
        return tuple(s for s in self.stages if s.steps)

    def encodes_at(self, index: int) -> bool:
        """Whether stage `index` encodes the prompts (of a latent plan)."""
        return index == 0 or (self.encode_each and self.stages[index].steps > 0)

    def decodes_at(self, index: int) -> bool:
        """Whether stage `index` decodes the latents (of a latent plan): the last one."""
        return index == len(self.stages) - 1

    def without_hosts(self) -> Plan:
        """The plan as generation sees it: where a stage ran does not change what it computes."""
        return Plan(tuple(Stage(s.model, s.start, s.end) for s in self.stages), self.encode_each)

    @property
    def key(self) -> str:
        """What its quality is looked up by: the denoising stages without their hosts.  Where the
        prompts are encoded and the latents decoded does not change the images (a zero-step stage
        uses its neighbour's pipeline; `encode=each` is refused unless the text encoders agree)."""
        return ",".join(str(Stage(s.model, s.start, s.end)) for s in self.denoising)

    def __str__(self) -> str:
        text = ",".join(str(stage) for stage in self.stages)
        return f"{text};{ENCODE_EACH}" if self.encode_each else text


def parse_plan(text: str, steps: int | None = None) -> Plan:
    """Parse and check a plan; with `steps`, the stages must end exactly at T = steps."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError("empty plan: expected MODEL:START-END[@HOST],...")
    text, _, options = text.strip().partition(";")
    if options and options.strip() != ENCODE_EACH:
        raise ValueError(f"malformed plan option {options.strip()!r} after ';': the only one is "
                         f"{ENCODE_EACH!r} (stages are separated by ',')")
    stages = []
    for part in text.split(","):
        match = _STAGE.match(part.strip())
        if not match:
            raise ValueError(f"malformed plan stage {part.strip()!r}: expected MODEL:START-END[@HOST]")
        stages.append(
            Stage(match["model"], int(match["start"]), int(match["end"]), match["host"])
        )
    return check_tiling(Plan(tuple(stages), bool(options)), steps)


def single_model_plan(model: str, steps: int) -> Plan:
    return Plan((Stage(model, 0, steps),))


def check_tiling(plan: Plan, steps: int | None = None) -> Plan:
    """The stages tile [0, T) in order; a zero-step stage only first (at 0) or last (at T), beside a
    denoising stage of the same model (docs/latent-pipelines.md: it encodes or decodes)."""
    expected = 0
    last = len(plan.stages) - 1
    if not plan.denoising:
        raise ValueError(f"plan {plan} runs no denoising step")
    for index, stage in enumerate(plan.stages):
        if stage.end == stage.start and index in (0, last):
            neighbour = plan.stages[1 if index == 0 else last - 1]
            if stage.model != neighbour.model or (index == 0) != (stage.start == 0) or neighbour.steps == 0:
                raise ValueError(f"zero-step stage {stage} must {'begin' if index == 0 else 'end'} the plan, "
                                 f"beside a denoising stage of {stage.model}")
            if index == 0 and plan.encode_each:
                raise ValueError(f"plan {plan}: encode=each and an encoding stage {stage} contradict")
        elif stage.end <= stage.start:
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


ENCODE_PLACES = ("first", "device", "each")
DECODE_PLACES = ("last", "device")


def place(plan: Plan, encode: str = "first", decode: str = "last", device: str | None = None) -> Plan:
    """A latent plan with its text encoding and decoding placed: `encode` on the first stage's host,
    on the requesting `device` (a zero-step stage there; nothing to add where the first stage is
    already there) or on every denoising host; `decode` on the last stage's host or on the device."""
    if encode not in ENCODE_PLACES or decode not in DECODE_PLACES:
        raise ValueError(f"encode is one of {', '.join(ENCODE_PLACES)} and decode one of "
                         f"{', '.join(DECODE_PLACES)}, not {encode!r} and {decode!r}")
    stages = list(plan.denoising)
    first, last = stages[0], stages[-1]
    if encode == "device" and first.host != device:
        stages.insert(0, Stage(first.model, 0, 0, device))
    if decode == "device" and last.host != device:
        stages.append(Stage(last.model, last.end, last.end, device))
    return Plan(tuple(stages), encode == "each" and len({s.host for s in plan.denoising}) > 1)
