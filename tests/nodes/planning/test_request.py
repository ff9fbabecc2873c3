"""A request's prompt fields (a latent pipeline's request, issue 19): one prompt per image, negative
prompts only beside prompts, a guidance scale that is a positive number (7.5 by default), and
their bounds; a pixel model's request is what it was."""

from __future__ import annotations

import math

import pytest
from pydantic import ValidationError

from nodes.planning.request import DEFAULT_GUIDANCE_SCALE, MAX_PROMPT_BYTES, Request

BASE = {"request_id": "r1", "device": "d1", "strategy": "s", "n": 2}


def test_a_pixel_request_has_no_prompt_fields():
    request = Request(**BASE)
    assert (request.prompts, request.negative_prompts, request.guidance_scale) == (None, None, None)
    assert not request.latent and request.labels == (0, 1)


def test_a_latent_request_gets_the_default_guidance_and_keeps_its_labels():
    request = Request(**BASE, prompts=["a cat", "a dog"])
    assert request.latent and request.guidance_scale == DEFAULT_GUIDANCE_SCALE
    assert request.labels == (0, 1)
    request = Request(**BASE, prompts=["a", "b"], guidance_scale=1.0, negative_prompts=["", "x"])
    assert request.guidance_scale == 1.0 and request.negative_prompts == ("", "x")


@pytest.mark.parametrize(("change", "message"), [
    ({"prompts": ["one"]}, "'prompts' has 1 entries, n is 2"),
    ({"prompts": ["a", "b"], "negative_prompts": ["x"]}, "'negative_prompts' has 1 entries, n is 2"),
    ({"negative_prompts": ["x", "y"]}, "'negative_prompts' is for prompts"),
    ({"guidance_scale": 3.0}, "'guidance_scale' is for prompts"),
    ({"prompts": ["a", "b"], "guidance_scale": 0.0}, "greater than 0"),
    ({"prompts": ["a", "b"], "guidance_scale": -2.0}, "greater than 0"),
    ({"prompts": ["a", "b"], "guidance_scale": math.nan}, "finite number"),
    ({"prompts": ["a", "b"], "guidance_scale": "high"}, "valid number"),
    ({"prompts": ["a" * 1001, "b"]}, "at most 1000 characters"),
    ({"n": 40, "labels": None, "prompts": ["é" * 500] * 40}, f"at most {MAX_PROMPT_BYTES} per request"),
])
def test_bad_prompt_fields_are_refused_in_one_line(change, message):
    with pytest.raises(ValidationError) as caught:
        Request(**{**BASE, **change})
    assert message in str(caught.value)
