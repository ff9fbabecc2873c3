"""The wire protocol between nodes: ZeroMQ multipart messages over TCP, no pickle anywhere.

A message is
    frame 0:      the envelope, a small JSON object (below), at most MAX_ENVELOPE_BYTES
    frames 1...:  optionally a StateBundle (nodes/diffusion/state.py): its header JSON (tensor names, dtypes,
                  shapes, scheduler state) then one raw buffer per tensor, sent with copy=False.

Envelope kinds and who sends them (every node has one PULL inbox; senders use PUSH sockets):
    request   device -> coordinator        a device asks for `n` images under a strategy; a
                                           cascade's second pass (`escalation_of` its first
                                           request) asks for the images its gate doubted
    accepted  coordinator -> device        the plan chosen (so a timeout can name the stages)
    stage     coordinator/stage host -> stage host
                                           run steps [start, end) of `plan`; stage 0 carries no
                                           state (its host draws the noise from `seed`)
    result    last stage host -> device    the final images
    error     any -> device                the request failed; `reason` says why
    report    stage host/device -> coordinator
                                           after a stage, or when a result arrives: the message that
                                           brought the work (from where, bytes, sent, received) and
                                           when the stage computed; the coordinator's live
                                           estimates are made of these (nodes/planning/estimates.py);
                                           `late`: a device's, for a result that came after its
                                           request had ended (the plan it was re-planned away
                                           from got through: that path is back)

A plan travels as its stages, each {model, start, end, host} (`plan_to_wire`, `plan_from_wire`,
which checks that they tile the schedule); the text form (`large:0-12@cloud,...`) is only for
people and records.

Timestamps travel with the request on the wall clock (`time.time()`; hosts share one clock under
Mininet): the envelope's `timestamps` (request_sent, coordinator_received, dispatched) and one
`hops` entry per finished stage (received, compute_start, compute_end, sent, bytes, pacing
figures, wall seconds too). The requesting device turns them into records
(nodes/runtime/records.py), whose names say the clock (nodes/clock.py).  A request's
`deadline_s` and a plan's predicted `latency_s` are emulated seconds, as the workload and the
records give them.

`decode` checks every field, type, range and size and raises ProtocolError naming the problem.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    StringConstraints,
    ValidationError,
    model_serializer,
)

from nodes.planning.plan import Plan, Stage, check_tiling
from nodes.planning.request import MAX_IMAGES, MAX_PROMPT_CHARS, Request, RequestId, check_prompts
from nodes.schema import validation_message

if TYPE_CHECKING:  # torch: only where a state is decoded, so that reading records needs none
    from nodes.diffusion.state import StateBundle

WIRE_VERSION = 2  # 2: plans as structured stages
MAX_ENVELOPE_BYTES = 64 * 1024
MAX_STAGES = 32
MAX_TENSORS = 16  # sample, labels and a solver history of a few tensors
MAX_FRAMES = 2 + MAX_TENSORS

Host = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.-]{1,32}$")]
Time = Annotated[float, Field(strict=False, gt=0, lt=1e11, allow_inf_nan=False)]
Seconds = Annotated[float, Field(strict=False, ge=0, lt=1e9, allow_inf_nan=False)]
Count = Annotated[int, Field(strict=True, ge=0, lt=2**53)]


class ProtocolError(ValueError):
    """A message that does not follow the protocol; the text says what is wrong."""


Prompts = Annotated[list[Annotated[str, StringConstraints(max_length=MAX_PROMPT_CHARS)]],
                   Field(min_length=1, max_length=MAX_IMAGES)]
Guidance = Annotated[float, Field(strict=False, gt=0, le=1000, allow_inf_nan=False)]


class _Wire(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)
    # fields a message leaves out where they are None (those of latent pipelines' requests), so that
    # a pixel model's messages are byte for byte what they were before those fields existed
    omitted_when_none: ClassVar[tuple[str, ...]] = ()

    @model_serializer(mode="wrap")
    def _omit_none(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data = handler(self)
        for name in self.omitted_when_none:
            if isinstance(data, dict) and data.get(name, 0) is None:
                del data[name]
        return data


class RequestTimes(_Wire):
    request_sent: Time
    coordinator_received: Time | None = None
    dispatched: Time | None = None


class Hop(_Wire):
    """What one stage host adds when it hands its output on."""

    stage: Annotated[int, Field(ge=0, lt=MAX_STAGES)]
    host: Host
    model: Annotated[str, StringConstraints(min_length=1, max_length=512)]
    received: Time
    compute_start: Time
    compute_end: Time
    sent: Time
    payload_bytes: Count  # tensor bytes of the state this stage received
    message_bytes: Count  # all frames of the message this stage received
    real_compute_s: Seconds  # the computation alone, without pacing
    profiled_compute_s: Seconds | None = None  # what the profile says the stage takes
    overrun_steps: Count = 0  # steps that really took longer than their profile
    overrun_s: Seconds = 0.0
    compute_mode: Literal["native", "profiled"] = "native"
    hardware: Annotated[str, StringConstraints(max_length=64)] | None = None
    # a latent pipeline's stage: the wall seconds it spent encoding the prompt (the text encoder)
    # and decoding the latents (the VAE), inside compute_start..compute_end; None: it did not
    encode_s: Seconds | None = None
    decode_s: Seconds | None = None
    omitted_when_none: ClassVar[tuple[str, ...]] = ("encode_s", "decode_s")


class WireStage(_Wire):
    """One stage of a plan: `model` runs steps [start, end) on `host` (a latent pipeline's zero-step
    stage encodes or decodes there).  `encode` on the first stage only: "each", a latent plan whose
    every denoising host encodes the prompts (nodes/planning/plan.py)."""

    model: Annotated[str, StringConstraints(min_length=1, max_length=512)]
    start: Annotated[int, Field(ge=0, lt=100_000)]
    end: Annotated[int, Field(ge=0, le=100_000)]
    host: Host
    encode: Literal["each"] | None = None
    omitted_when_none: ClassVar[tuple[str, ...]] = ("encode",)


WirePlan = Annotated[list[WireStage], Field(min_length=1, max_length=MAX_STAGES)]


def plan_to_wire(plan: Plan) -> list[WireStage]:
    if any(stage.host is None for stage in plan.stages):
        raise ValueError(f"plan {plan}: every stage needs a host to travel between nodes")
    each = "each" if plan.encode_each else None
    return [WireStage(model=s.model, start=s.start, end=s.end, host=s.host, encode=each if i == 0 else None)
            for i, s in enumerate(plan.stages)]


def _plan(stages: Sequence[WireStage]) -> Plan:
    return Plan(tuple(Stage(s.model, s.start, s.end, s.host) for s in stages), stages[0].encode == "each")


def wire_text(stages: Sequence[WireStage] | None) -> str | None:
    """A message's plan as text (`large:0-12@cloud,...`), unchecked: for records and reasons."""
    return str(_plan(stages)) if stages else None


def plan_from_wire(stages: Sequence[WireStage], steps: int) -> Plan:
    """The plan of a message's stages; ValueError unless they tile [0, steps)."""
    if any(s.encode is not None for s in stages[1:]):
        raise ValueError("a plan's encode placement travels on its first stage only")
    return check_tiling(_plan(stages), steps)


class _Common(_Wire):
    v: Literal[2]
    request_id: RequestId
    origin: Host  # the requesting device: results and errors go there


class RequestMsg(_Common):
    kind: Literal["request"]
    strategy: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]
    n: Annotated[int, Field(ge=1, le=MAX_IMAGES)]
    labels: Annotated[list[Annotated[int, Field(ge=0, le=9)]], Field(min_length=1, max_length=MAX_IMAGES)]
    seed: Annotated[int, Field(ge=0, lt=2**63)]
    deadline_s: Annotated[float, Field(strict=False, gt=0, lt=1e9)] | None = None  # emulated
    timestamps: RequestTimes
    warmup: bool = False  # unmeasured: the planner may use it to observe paths it has not seen
    escalation_of: RequestId | None = None  # a cascade's second pass for the images of this request
    # a latent pipeline's request (nodes/planning/request.py): one prompt per image, optional negative
    # prompts, the classifier-free guidance scale
    prompts: Prompts | None = None
    negative_prompts: Prompts | None = None
    guidance_scale: Guidance | None = None
    omitted_when_none: ClassVar[tuple[str, ...]] = ("prompts", "negative_prompts", "guidance_scale")

    @classmethod
    def of(cls, request: Request, wall_sent: float) -> RequestMsg:
        """A request's wire form (nodes/planning/request.py), sent at wall time `wall_sent`."""
        return cls(v=WIRE_VERSION, kind="request", request_id=request.request_id, origin=request.device,
                   strategy=request.strategy, n=request.n, labels=list(request.labels), seed=request.seed,
                   deadline_s=request.deadline_s, timestamps=RequestTimes(request_sent=wall_sent),
                   warmup=request.warmup, escalation_of=request.escalation_of, **prompt_fields(request))

    def request_fields(self) -> dict[str, Any]:
        """The `Request` fields it carries (not when it was planned to go, nor its repetition)."""
        return {"request_id": self.request_id, "device": self.origin, "strategy": self.strategy, "n": self.n,
                "labels": self.labels, "seed": self.seed, "deadline_s": self.deadline_s,
                "warmup": self.warmup, "escalation_of": self.escalation_of, **prompt_fields(self)}


def prompt_fields(request: Any) -> dict[str, Any]:
    """A request's (or a message's) prompt fields, as a message's keyword arguments."""
    return {"prompts": None if request.prompts is None else list(request.prompts),
            "negative_prompts": None if request.negative_prompts is None else list(request.negative_prompts),
            "guidance_scale": request.guidance_scale}


class WirePrediction(_Wire):
    """What the coordinator predicted for the plan it chose (nodes/planning/planner.py), emulated."""

    latency_s: Seconds
    fid: Annotated[float, Field(strict=False, ge=0, lt=1e6)] | None = None
    class_accuracy: Annotated[float, Field(strict=False, ge=0, le=1)] | None = None
    device_energy_j: Annotated[float, Field(strict=False, ge=0, lt=1e9)] | None = None
    note: Annotated[str, StringConstraints(max_length=500)] | None = None


class AcceptedMsg(_Common):
    kind: Literal["accepted"]
    strategy: Annotated[str, StringConstraints(max_length=64)]
    plan: WirePlan
    prediction: WirePrediction | None = None


class StageMsg(_Common):
    kind: Literal["stage"]
    strategy: Annotated[str, StringConstraints(max_length=64)]
    plan: WirePlan
    stage: Annotated[int, Field(ge=0, lt=MAX_STAGES)]
    start: Annotated[int, Field(ge=0, lt=100_000)]
    end: Annotated[int, Field(ge=0, le=100_000)]
    n: Annotated[int, Field(ge=1, le=MAX_IMAGES)]
    labels: Annotated[list[Annotated[int, Field(ge=0, le=9)]], Field(min_length=1, max_length=MAX_IMAGES)]
    seed: Annotated[int, Field(ge=0, lt=2**63)]
    timestamps: RequestTimes
    hops: Annotated[list[Hop], Field(max_length=MAX_STAGES)]
    prediction: WirePrediction | None = None  # travels with the request to its result
    # a latent pipeline's stage: the guidance scale (every stage: its state's header must agree),
    # and the prompt text where this stage's host encodes it (stage 0 in this version)
    prompts: Prompts | None = None
    negative_prompts: Prompts | None = None
    guidance_scale: Guidance | None = None
    omitted_when_none: ClassVar[tuple[str, ...]] = ("prompts", "negative_prompts", "guidance_scale")


class ResultMsg(_Common):
    kind: Literal["result"]
    strategy: Annotated[str, StringConstraints(max_length=64)]
    plan: WirePlan
    n: Annotated[int, Field(ge=1, le=MAX_IMAGES)]
    timestamps: RequestTimes
    hops: Annotated[list[Hop], Field(min_length=1, max_length=MAX_STAGES)]
    # the coordinator's prediction, also here: the result can overtake the `accepted` message
    prediction: WirePrediction | None = None


class ErrorMsg(_Common):
    kind: Literal["error"]
    host: Host  # where it failed
    reason: Annotated[str, StringConstraints(min_length=1, max_length=2000)]
    plan: WirePlan | None = None
    stage: Annotated[int, Field(ge=0, lt=MAX_STAGES)] | None = None


class WireTransfer(_Wire):
    """The message that brought work to the reporting host: where from, when, how big."""

    source: Host
    kind: Literal["dispatch", "state", "result"]
    sent: Time
    received: Time
    message_bytes: Count


class ReportMsg(_Common):
    kind: Literal["report"]
    host: Host  # who reports
    n: Annotated[int, Field(ge=1, le=MAX_IMAGES)]
    transfer: WireTransfer | None = None
    stage: Annotated[int, Field(ge=0, lt=MAX_STAGES)] | None = None  # None: a device's result
    model: Annotated[str, StringConstraints(min_length=1, max_length=512)] | None = None
    steps: Annotated[int, Field(ge=0, le=100_000)] = 0
    compute_start: Time | None = None
    compute_end: Time | None = None
    late: bool = False  # a device's: a result of a request that had already ended (re-planned)


Envelope = RequestMsg | AcceptedMsg | StageMsg | ResultMsg | ErrorMsg | ReportMsg
_KINDS: dict[str, type[BaseModel]] = {
    "request": RequestMsg, "accepted": AcceptedMsg, "stage": StageMsg, "result": ResultMsg, "error": ErrorMsg,
    "report": ReportMsg,
}
_CARRIES_STATE = {"request": False, "accepted": False, "error": False, "result": True, "report": False}
_SAFE_KIND = re.compile(r"^[a-z]{1,16}$")


@dataclass(frozen=True)
class Message:
    envelope: Envelope
    state: StateBundle | None
    message_bytes: int  # every frame, envelope included
    payload_bytes: int  # the tensors' raw bytes


def encode(envelope: Envelope, state: StateBundle | None = None) -> list[bytes | memoryview]:
    """Frames for `send_multipart(frames, copy=False)`: tensor buffers are views, not copies."""
    frames: list[bytes | memoryview] = [envelope.model_dump_json().encode()]
    if state is not None:
        frames.extend(state.to_frames())
    return frames


def frame_size(frame: object) -> int:
    return memoryview(frame).nbytes  # type: ignore[arg-type]


def decode(frames: Sequence[object]) -> Message:
    """Check a received multipart message completely; ProtocolError names the first problem."""
    if not frames:
        raise ProtocolError("empty message")
    if len(frames) > MAX_FRAMES:
        raise ProtocolError(f"{len(frames)} frames, at most {MAX_FRAMES} allowed")
    views = [memoryview(f) for f in frames]  # type: ignore[arg-type]
    if views[0].nbytes > MAX_ENVELOPE_BYTES:
        raise ProtocolError(f"envelope of {views[0].nbytes} bytes exceeds {MAX_ENVELOPE_BYTES}")
    raw = views[0].tobytes()
    try:
        kind = json.loads(raw).get("kind")
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError, AttributeError):
        raise ProtocolError("envelope is not a JSON object") from None
    if not isinstance(kind, str) or kind not in _KINDS:
        shown = kind if isinstance(kind, str) and _SAFE_KIND.match(kind) else "?"
        raise ProtocolError(f"unknown message kind {shown!r}")
    try:
        envelope = _KINDS[kind].model_validate_json(raw)
    except ValidationError as exc:
        raise ProtocolError(f"{kind} envelope: {validation_message(exc, more=True)}") from None
    state = None
    if len(views) > 1:
        if not _CARRIES_STATE.get(kind, True):
            raise ProtocolError(f"a {kind} message carries no state, yet {len(views) - 1} frames follow")
        from nodes.diffusion.state import StateBundle

        try:
            state = StateBundle.from_frames(views[1:])
        except (ValueError, TypeError) as exc:
            raise ProtocolError(str(exc)) from None
    elif kind == "result":
        raise ProtocolError("a result message without its state")
    _check_consistent(envelope, state)  # type: ignore[arg-type]
    return Message(
        envelope=envelope,  # type: ignore[arg-type]
        state=state,
        message_bytes=sum(v.nbytes for v in views),
        payload_bytes=state.payload_bytes() if state is not None else 0,
    )


def _check_consistent(envelope: Envelope, state: StateBundle | None) -> None:
    if isinstance(envelope, RequestMsg) and len(envelope.labels) != envelope.n:
        raise ProtocolError(f"request has {len(envelope.labels)} labels for n={envelope.n}")
    if isinstance(envelope, RequestMsg | StageMsg):
        try:
            if envelope.prompts is not None and envelope.guidance_scale is None:
                raise ValueError("has 'prompts' without 'guidance_scale'")
            if isinstance(envelope, StageMsg) and envelope.prompts is None:
                # a stage whose host does not encode: the guidance alone (the prompts are embeddings)
                if envelope.negative_prompts is not None:
                    raise ValueError("has 'negative_prompts' without 'prompts'")
            else:
                check_prompts(envelope.prompts, envelope.negative_prompts, envelope.guidance_scale,
                              envelope.n)
        except ValueError as exc:
            raise ProtocolError(f"{envelope.kind} message: {exc}") from None
    if isinstance(envelope, StageMsg):
        if len(envelope.labels) != envelope.n:
            raise ProtocolError(f"stage message has {len(envelope.labels)} labels for n={envelope.n}")
        if envelope.end < envelope.start:  # equal: a latent plan's zero-step stage (encode or decode)
            raise ProtocolError(f"stage step range [{envelope.start}, {envelope.end}) is reversed")
        if (state is None) != (envelope.stage == 0):
            raise ProtocolError("stage 0 carries no state and every later stage must")
        if len(envelope.hops) != envelope.stage:
            raise ProtocolError(f"stage {envelope.stage} arrives with {len(envelope.hops)} hops recorded")
    if isinstance(envelope, ResultMsg) and state is not None:
        sample = state.tensors.get("sample")
        if sample is None or tuple(sample.shape[:1]) != (envelope.n,):
            raise ProtocolError(f"result state does not hold {envelope.n} samples")
