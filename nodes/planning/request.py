"""One request, the same from the workload to the coordinator: which device asks, for how many
images with which labels and seed, under which strategy, when it goes (`at_s`, on the run's clock,
nodes/clock.py) and by when it must be done (`deadline_s`, emulated seconds after it was sent).

The workload plans `Request`s (emulation/workload.py), a device's config lists its own
(nodes/runtime/node_config.py), the device sends one (its wire form, `RequestMsg`, exists only in
nodes/runtime/protocol.py), and the coordinator hands strategies and the planner the request as it
arrived: a `PlanRequest`, the same request with when it was sent and received and its size.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, StringConstraints, model_validator

from nodes.schema import MAX_SEED, StrictModel

MAX_IMAGES = 256  # per request: bounds what a receiver accepts and what one stage may cost
RequestId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]
Label = Annotated[int, Field(ge=0, le=9)]


class Request(StrictModel):
    """`labels` absent: 0-9 cycling (balanced classes, as nodes.diffusion.generation draws them)."""

    request_id: RequestId
    device: str  # the requesting device's host: results and errors go there
    strategy: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]
    n: int = Field(ge=1, le=MAX_IMAGES)
    labels: tuple[Label, ...]
    seed: int = Field(0, ge=0, lt=MAX_SEED)
    at_s: float = Field(0.0, ge=-1e6, le=1e6)  # emulated: 0 the first measured request, < 0 a warm-up
    deadline_s: float | None = Field(None, gt=0, lt=1e9)
    warmup: bool = False  # unmeasured: a planned strategy explores paths it has not seen with it
    repetition: int = Field(0, ge=-1)  # of the workload; -1 a warm-up
    escalation_of: RequestId | None = None  # a cascade's second pass for the images of this request

    @model_validator(mode="before")
    @classmethod
    def _balanced_labels(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("labels") is None and isinstance(data.get("n"), int):
            data = {**data, "labels": [i % 10 for i in range(data["n"])]}
        return data

    @model_validator(mode="after")
    def _one_label_per_image(self) -> Request:
        if len(self.labels) != self.n:
            raise ValueError(f"'labels' has {len(self.labels)} entries, n is {self.n}")
        return self

    @property
    def escalation(self) -> bool:
        return self.escalation_of is not None


class PlanRequest(Request):
    """A request as the coordinator has it, for strategies and the planner to look at."""

    wall_sent: float = 0.0  # wall epoch seconds: when the device sent it
    wall_received: float = 0.0  # when the coordinator had it
    request_bytes: int = Field(0, ge=0)  # its message's size on the wire
