"""A stage host's check of a latent pipeline's stage message (nodes/runtime/worker.py), without
sockets: the worker of a host that holds the tiny `large` pipeline, given constructed messages and
states.  Each refusal is one line naming what is wrong, "plan" or "state" as its part."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from nodes.diffusion.latent_folders import latent_space
from nodes.diffusion.latent_pipeline import EMBEDDINGS, LATENTS, initial_state
from nodes.planning.plan import parse_plan
from nodes.runtime.local_cluster import loopback_configs
from nodes.runtime.protocol import WIRE_VERSION, Hop, RequestTimes, StageMsg, plan_to_wire
from nodes.runtime.worker import Rejected, StageWorker

T0 = 1.7e9
N = 2


@pytest.fixture(scope="module")
def setup(tiny_pipelines, tmp_path_factory):
    large = str(tiny_pipelines["large"])
    hosts = {"edge": {"role": "edge", "models": [large, "small"], "latent_components": ["vae"]},
             "cloud": {"role": "cloud", "models": [large]}, "d1": {"role": "device"}}
    configs = loopback_configs(tmp_path_factory.mktemp("worker"), hosts, steps=8, scheduler="dpm")
    worker = StageWorker(SimpleNamespace(config=configs["edge"]))
    return worker, large


def _message(large: str, stage: int = 1, **change) -> StageMsg:
    plan = parse_plan(f"{large}:0-4@cloud,{large}:4-8@edge")
    hop = Hop(stage=0, host="cloud", model=large, received=T0, compute_start=T0, compute_end=T0, sent=T0,
              payload_bytes=0, message_bytes=1, real_compute_s=0.0)
    fields = {"v": WIRE_VERSION, "kind": "stage", "request_id": "r", "origin": "d1", "strategy": "s",
              "plan": plan_to_wire(plan), "stage": stage, "start": 4 if stage else 0,
              "end": 8 if stage else 4, "n": N, "labels": [0, 1], "seed": 5, "hops": [hop] if stage else [],
              "guidance_scale": 5.0,
              "timestamps": RequestTimes(request_sent=T0, coordinator_received=T0, dispatched=T0)}
    return StageMsg(**{**fields, **change})


def _state(large: str, **tensors) -> object:
    state = initial_state(latent_space(large), N, 5, "dpm", 8, guidance_scale=5.0)
    meta = {**state.meta, "next_step": 4}
    base = {LATENTS: state.tensors[LATENTS], EMBEDDINGS: torch.zeros(2 * N, 16, 32)}
    return type(state)(meta=meta, tensors={k: v for k, v in {**base, **tensors}.items() if v is not None})


def test_a_good_latent_stage_passes(setup):
    worker, large = setup
    plan, stage = worker.check(_message(large), _state(large))
    assert stage.host == "edge" and stage.model == large and len(plan.stages) == 2
    assert worker.status()["models_loaded"] == sorted([large, "small"])
    held = worker.latent[large]
    assert held.decodes and not held.encodes and held.components.text_encoder is None


@pytest.mark.parametrize(("change", "tensors", "part", "reason"), [
    ({"guidance_scale": None}, {}, "plan", "without its guidance scale"),
    ({"guidance_scale": 7.5}, {}, "state", "state guidance_scale is 5.0, expected 7.5"),
    ({"prompts": ["a", "b"]}, {}, "plan", "does not encode, and its message brings prompts"),
    ({}, {EMBEDDINGS: torch.zeros(N, 16, 32)}, "state", "tensor embeddings is torch.float32 (2, 16, 32), "
                                                         "expected float32 (4, 16, 32)"),
    ({}, {EMBEDDINGS: None}, "state", "state lacks embeddings"),
    ({}, {LATENTS: torch.zeros(N, 4, 8, 8, dtype=torch.float16)}, "state", "tensor latents is torch.float16"),
    ({}, {LATENTS: torch.full((N, 4, 8, 8), float("nan"))}, "state", "non-finite"),
    ({}, {"sample": torch.zeros(N, 1, 16, 16)}, "state", "unexpected tensor 'sample'"),
])
def test_a_bad_latent_stage_is_refused_in_one_line(setup, change, tensors, part, reason):
    worker, large = setup
    with pytest.raises(Rejected) as caught:
        worker.check(_message(large, **change), _state(large, **tensors))
    assert caught.value.part == part and reason in str(caught.value), str(caught.value)


def test_a_pixel_plan_with_prompts_and_a_mixed_plan_are_refused(setup):
    worker, large = setup
    pixel = plan_to_wire(parse_plan("small:0-8@edge"))
    with pytest.raises(Rejected, match="prompts or a guidance scale for a plan of pixel models"):
        worker.check(_message(large, stage=0, plan=pixel, end=8), None)
    mixed = plan_to_wire(parse_plan(f"small:0-4@cloud,{large}:4-8@edge"))
    with pytest.raises(Rejected, match="a plan cannot mix pixel and latent models"):
        worker.check(_message(large, plan=mixed, hops=[_message(large).hops[0].model_copy(
            update={"model": "small"})]), _state(large))


def test_placed_encoding_and_decoding_stages_are_checked(setup):
    """A plan that has every host encode (encode=each) needs a text encoder here; a decoding stage
    (zero steps, last) takes the latents alone; the stage after an encoding one the embeddings
    alone (its latents come from the seed)."""
    worker, large = setup
    each = plan_to_wire(parse_plan(f"{large}:0-4@cloud,{large}:4-8@edge;encode=each"))
    with pytest.raises(Rejected, match="edge has no text encoder of"):
        worker.check(_message(large, plan=each, prompts=["a", "b"]), _state(large, **{EMBEDDINGS: None}))
    decoding = plan_to_wire(parse_plan(f"{large}:0-8@cloud,{large}:8-8@edge"))
    hop = _message(large).hops[0]
    message = _message(large, plan=decoding, start=8, end=8, hops=[hop])
    state = _state(large, **{EMBEDDINGS: None})
    state.meta["next_step"] = 8
    plan, stage = worker.check(message, state)
    assert stage.steps == 0 and plan.decodes_at(1)
    with pytest.raises(Rejected, match="unexpected tensor 'embeddings'"):
        embedded = _state(large)
        embedded.meta["next_step"] = 8
        worker.check(message, embedded)
    encoding = plan_to_wire(parse_plan(f"{large}:0-0@cloud,{large}:0-8@edge"))
    first = _message(large, plan=encoding, start=0, end=8, hops=[hop.model_copy(update={"host": "cloud"})])
    fresh = _state(large, **{LATENTS: None})
    fresh.meta["next_step"] = 0
    worker.check(first, fresh)
    with pytest.raises(Rejected, match="state holds latents before step 0"):
        both = _state(large)
        both.meta["next_step"] = 0
        worker.check(first, both)
