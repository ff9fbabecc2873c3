"""One request, the same from the workload to the coordinator: which device asks, for how many
images with which labels (pixel models) or prompts and guidance scale (latent pipelines) and seed,
under which strategy, when it goes (`at_s`, on the run's clock, nodes/clock.py)
and by when it must be done (`deadline_s`, emulated seconds after it was sent).

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
MAX_PROMPT_CHARS = 1000
# the UTF-8 bytes of a request's prompts and negative prompts together: they travel in the request's
# and the first stage's envelopes, which are bounded by nodes/runtime/protocol.py MAX_ENVELOPE_BYTES
MAX_PROMPT_BYTES = 32 * 1024
DEFAULT_GUIDANCE_SCALE = 7.5  # diffusers' StableDiffusionPipeline default
RequestId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]
Label = Annotated[int, Field(ge=0, le=9)]
Prompt = Annotated[str, StringConstraints(max_length=MAX_PROMPT_CHARS)]
GuidanceScale = Annotated[float, Field(gt=0, le=1000, allow_inf_nan=False)]


def check_prompts(prompts: tuple[str, ...] | None, negative_prompts: tuple[str, ...] | None,
                  guidance_scale: float | None, n: int) -> None:
    """A latent request's prompt fields: one prompt per image, negatives only beside prompts and
    one per prompt, guidance only with prompts, all of them within MAX_PROMPT_BYTES.  ValueError."""
    if prompts is None:
        given = [f for f, v in (("negative_prompts", negative_prompts), ("guidance_scale", guidance_scale))
                 if v is not None]
        if given:
            raise ValueError(f"{given[0]!r} is for prompts (a latent pipeline's request), and there are none")
        return
    if len(prompts) != n:
        raise ValueError(f"'prompts' has {len(prompts)} entries, n is {n}")
    if negative_prompts is not None and len(negative_prompts) != n:
        raise ValueError(f"'negative_prompts' has {len(negative_prompts)} entries, n is {n}")
    size = sum(len(p.encode()) for p in (*prompts, *(negative_prompts or ())))
    if size > MAX_PROMPT_BYTES:
        raise ValueError(f"the prompts take {size} bytes of UTF-8, at most {MAX_PROMPT_BYTES} per request")


class Request(StrictModel):
    """`labels` absent: 0-9 cycling (balanced classes, as nodes.diffusion.generation draws them).
    A request for a latent pipeline's plan also carries `prompts` (one per image), optionally
    `negative_prompts`, and `guidance_scale` (classifier-free guidance, > 0; on above 1; default
    7.5); its labels are kept (the wire and the records have them) but mean nothing to its models."""

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
    prompts: tuple[Prompt, ...] | None = None
    negative_prompts: tuple[Prompt, ...] | None = None
    guidance_scale: GuidanceScale | None = None

    @model_validator(mode="before")
    @classmethod
    def _balanced_labels(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("labels") is None and isinstance(data.get("n"), int):
            data = {**data, "labels": [i % 10 for i in range(data["n"])]}
        if isinstance(data, dict) and data.get("prompts") is not None and data.get("guidance_scale") is None:
            data = {**data, "guidance_scale": DEFAULT_GUIDANCE_SCALE}
        return data

    @model_validator(mode="after")
    def _one_label_per_image(self) -> Request:
        if len(self.labels) != self.n:
            raise ValueError(f"'labels' has {len(self.labels)} entries, n is {self.n}")
        check_prompts(self.prompts, self.negative_prompts, self.guidance_scale, self.n)
        return self

    @property
    def latent(self) -> bool:
        """Whether it asks a latent pipeline (it has prompts)."""
        return self.prompts is not None

    @property
    def escalation(self) -> bool:
        return self.escalation_of is not None


class PlanRequest(Request):
    """A request as the coordinator has it, for strategies and the planner to look at."""

    wall_sent: float = 0.0  # wall epoch seconds: when the device sent it
    wall_received: float = 0.0  # when the coordinator had it
    request_bytes: int = Field(0, ge=0)  # its message's size on the wire
