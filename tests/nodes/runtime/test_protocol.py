"""The wire protocol decoder: what it accepts round-trips exactly; everything else is a
ProtocolError with a reason, never another exception (the node's receiver relies on that)."""

import contextlib
import json

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nodes.diffusion.executor import initial_state
from nodes.diffusion.model_zoo import SampleShape, denoiser_config
from nodes.diffusion.state import DenoisingMeta
from nodes.planning.plan import parse_plan
from nodes.runtime.protocol import (
    MAX_ENVELOPE_BYTES,
    MAX_FRAMES,
    WIRE_VERSION,
    Hop,
    ProtocolError,
    RequestMsg,
    RequestTimes,
    ResultMsg,
    StageMsg,
    decode,
    encode,
    plan_from_wire,
    plan_to_wire,
)

SHAPE = SampleShape.of(denoiser_config("small"))  # every shipped denoiser draws this


def wire(text: str) -> list:
    """A plan as it crosses the wire."""
    return plan_to_wire(parse_plan(text))

T0 = 1.7e9
LABELS = [0, 3, 7, 9]


def _times() -> RequestTimes:
    return RequestTimes(request_sent=T0, coordinator_received=T0 + 0.001, dispatched=T0 + 0.002)


def _hop(stage: int = 0, host: str = "cloud") -> Hop:
    return Hop(stage=stage, host=host, model="small", received=T0 + 0.01, compute_start=T0 + 0.02,
               compute_end=T0 + 0.5, sent=T0 + 0.51, payload_bytes=0, message_bytes=300, real_compute_s=0.48)


def _stage(stage: int = 1) -> StageMsg:
    return StageMsg(v=WIRE_VERSION, kind="stage", request_id="d1-0001", origin="d1", strategy="fixed_split",
                    plan=wire("small:0-4@cloud,small:4-10@edge"), stage=stage, start=4 if stage else 0,
                    end=10 if stage else 4, n=4, labels=LABELS, seed=3, timestamps=_times(),
                    hops=[_hop()] if stage else [])


def _state():
    return initial_state(torch.tensor(LABELS), 3, "dpm", 10, SHAPE)


def test_stage_message_round_trips_with_its_tensors():
    state = _state()
    frames = encode(_stage(), state)
    message = decode(frames)
    assert message.envelope == _stage()
    assert torch.equal(message.state.tensors["sample"], state.tensors["sample"])
    assert message.payload_bytes == state.payload_bytes() == 4 * 256 * 4 + 4 * 8
    assert message.message_bytes == sum(memoryview(f).nbytes for f in frames)


def test_tensor_frames_are_views_of_the_tensors_not_copies():
    state = _state()
    frames = encode(_stage(), state)
    sample_frame = frames[2]
    assert isinstance(sample_frame, memoryview)
    state.tensors["sample"][0, 0, 0, 0] = 42.0  # the frame sees the change: it shares the memory
    assert torch.frombuffer(bytearray(sample_frame), dtype=torch.float32)[0].item() == 42.0


def _raw(message) -> dict:
    return json.loads(encode(message)[0])


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"v": 1}, "v:"),
        ({"kind": "bogus"}, "unknown message kind"),
        ({"n": True}, "n: Input should be a valid integer"),
        ({"n": 5}, "labels for n=5"),
        ({"labels": [0, 1, 2, 10]}, "labels.3"),
        ({"request_id": "a/b"}, "request_id"),
        ({"origin": "x" * 40}, "origin"),
        ({"stage": 99}, "stage"),
        ({"start": 30}, "is reversed"),
        ({"hops": []}, "arrives with 0 hops"),
        ({"extra": 1}, "extra"),
        ({"timestamps": {"request_sent": -1}}, "request_sent"),
    ],
)
def test_bad_envelope_fields_are_named(change, fragment):
    raw = {**_raw(_stage()), **change}
    frames = [json.dumps(raw).encode(), *_state().to_frames()]
    with pytest.raises(ProtocolError, match=fragment):
        decode(frames)


def test_nan_in_a_timestamp_is_refused():
    raw = _raw(_stage())
    text = json.dumps(raw).replace(str(T0 + 0.01), "NaN")
    with pytest.raises(ProtocolError, match="finite"):
        decode([text.encode(), *_state().to_frames()])


def test_structural_rules():
    state_frames = _state().to_frames()
    with pytest.raises(ProtocolError, match="stage 0 carries no state"):
        decode(encode(_stage(0), _state()))
    with pytest.raises(ProtocolError, match="every later stage must"):
        decode(encode(_stage(1)))
    result = ResultMsg(v=WIRE_VERSION, kind="result", request_id="r", origin="d1", strategy="s",
                       plan=wire("small:0-10@edge"),
                       n=4, timestamps=_times(), hops=[_hop()])
    with pytest.raises(ProtocolError, match="without its state"):
        decode(encode(result))
    request = RequestMsg(v=WIRE_VERSION, kind="request", request_id="r", origin="d1", strategy="s", n=1,
                         labels=[1], seed=0, timestamps=RequestTimes(request_sent=T0))
    with pytest.raises(ProtocolError, match="carries no state"):
        decode([encode(request)[0], *state_frames])
    with pytest.raises(ProtocolError, match="frames"):
        decode([encode(_stage())[0]] + [b""] * MAX_FRAMES)
    with pytest.raises(ProtocolError, match="exceeds"):
        decode([b" " * (MAX_ENVELOPE_BYTES + 1)])
    with pytest.raises(ProtocolError, match="empty"):
        decode([])


def test_wrong_tensor_sizes_are_refused():
    frames = encode(_stage(), _state())
    with pytest.raises(ProtocolError, match="needs 4096 bytes, frame has 4092"):
        decode([*frames[:2], bytes(frames[2])[:-4], *frames[3:]])
    with pytest.raises(ProtocolError, match="frames follow"):
        decode(frames[:-1])


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.binary(max_size=300), min_size=0, max_size=6))
def test_junk_frames_only_ever_raise_protocol_errors(frames):
    with contextlib.suppress(ProtocolError):
        decode(frames)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(sorted(_raw(_stage()))), _json_values, st.integers(0, 3), st.binary(max_size=64))
def test_plausible_envelopes_with_one_field_replaced_only_raise_protocol_errors(key, value, cut, junk):
    raw = {**_raw(_stage()), key: value}
    frames = [json.dumps(raw).encode(), *_state().to_frames()]
    if cut:  # also damage a state frame: wrong size, junk header
        frames[cut] = junk
    with contextlib.suppress(ProtocolError):
        decode(frames)


def test_a_plan_travels_as_its_stages_and_text_is_refused():
    frames = encode(_stage(1), _state())
    envelope = json.loads(frames[0])
    assert envelope["plan"][0] == {"model": "small", "start": 0, "end": 4, "host": "cloud"}
    assert str(plan_from_wire(decode(frames).envelope.plan, 10)) == "small:0-4@cloud,small:4-10@edge"
    envelope["plan"] = "small:0-4@cloud,small:4-10@edge"  # the text form of wire version 1
    with pytest.raises(ProtocolError, match="plan"):
        decode([json.dumps(envelope).encode(), *frames[1:]])
    with pytest.raises(ValueError, match="do not tile"):
        plan_from_wire(wire("small:0-4@cloud"), 10)


# ---- a latent pipeline's fields (issue 19): absent from a pixel model's messages ------------------

PIXEL_STAGE_KEYS = ["v", "request_id", "origin", "kind", "strategy", "plan", "stage", "start", "end", "n",
                    "labels", "seed", "timestamps", "hops", "prediction"]
PIXEL_HOP_KEYS = ["stage", "host", "model", "received", "compute_start", "compute_end", "sent",
                  "payload_bytes", "message_bytes", "real_compute_s", "profiled_compute_s", "overrun_steps",
                  "overrun_s", "compute_mode", "hardware"]


def test_a_pixel_model_s_messages_are_what_they_were_before_the_latent_fields():
    stage = json.loads(encode(_stage())[0])
    assert list(stage) == PIXEL_STAGE_KEYS and list(stage["hops"][0]) == PIXEL_HOP_KEYS
    request = json.loads(encode(RequestMsg(v=WIRE_VERSION, kind="request", request_id="r", origin="d1",
                                           strategy="s", n=1, labels=[0], seed=0, timestamps=_times()))[0])
    assert "prompts" not in request and "guidance_scale" not in request
    assert DenoisingMeta.of(_state()).header() == {"scheduler": "dpm", "steps": 10, "next_step": 0, "seed": 3}


def test_a_latent_stage_round_trips_with_its_prompts_guidance_and_encode_time():
    hop = _hop().model_copy(update={"encode_s": 0.01})
    message = _stage().model_copy(update={"hops": [hop], "guidance_scale": 7.5})
    first = _stage(0).model_copy(update={"prompts": ["a cat"] * 4, "negative_prompts": [""] * 4,
                                         "guidance_scale": 7.5})
    for envelope in (message, first):
        state = None if envelope.stage == 0 else _state()
        decoded = decode(encode(envelope, state))
        assert decoded.envelope == envelope
    assert json.loads(encode(message, _state())[0])["hops"][0]["encode_s"] == 0.01


@pytest.mark.parametrize(("change", "reason"), [
    ({"prompts": ["a"] * 4}, "has 'prompts' without 'guidance_scale'"),
    ({"prompts": ["a"] * 3, "guidance_scale": 2.0}, "'prompts' has 3 entries, n is 4"),
    ({"negative_prompts": ["a"] * 4, "guidance_scale": 2.0}, "has 'negative_prompts' without 'prompts'"),
])
def test_a_stage_s_prompt_fields_that_disagree_are_refused(change, reason):
    frames = encode(_stage(0).model_copy(update=change))
    with pytest.raises(ProtocolError, match=reason):
        decode(frames)


def test_a_request_s_guidance_must_be_positive():
    good = RequestMsg(v=WIRE_VERSION, kind="request", request_id="r", origin="d1", strategy="s", n=1,
                      labels=[0], seed=0, timestamps=_times(), prompts=["x"], guidance_scale=1.5)
    raw = json.loads(encode(good)[0])
    assert decode([json.dumps(raw).encode()]).envelope == good
    with pytest.raises(ProtocolError, match="guidance_scale"):
        decode([json.dumps({**raw, "guidance_scale": 0}).encode()])
    with pytest.raises(ProtocolError, match="'guidance_scale' is for prompts"):
        decode([json.dumps({k: v for k, v in raw.items() if k != "prompts"}).encode()])
