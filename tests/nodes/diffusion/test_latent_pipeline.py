"""The latent pipeline's stages (nodes/diffusion/latent_pipeline.py) on the tiny scale model:
run one after the other they equal diffusers' own StableDiffusionPipeline; split anywhere with the
same UNet on both sides they equal the unsplit run, the state crossing each boundary as bytes in
the project's state format (StateBundle.to_bytes / from_bytes), embeddings included; split between
two UNets of one latent space they run."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, StableDiffusionPipeline

from nodes.diffusion.latent_folders import check_compatible, latent_space
from nodes.diffusion.latent_pipeline import (
    LATENTS,
    Components,
    decode,
    denoise,
    encode_prompt,
    initial_state,
    load_components,
)
from nodes.diffusion.state import StateBundle

STEPS = 8
SEED = 5
PROMPTS = ["a photo of a cat", "red house at sunset, oil painting"]
NEGATIVES = ["blurry", "ugly low quality"]
GUIDANCE = 5.0
TOLERANCE = 1e-4
EMBEDDINGS = "embeddings"


@pytest.fixture(scope="module")
def large(tiny_pipelines: dict[str, Path]) -> Components:
    return load_components(tiny_pipelines["large"])


@pytest.fixture(scope="module")
def small(tiny_pipelines: dict[str, Path]) -> Components:
    return load_components(tiny_pipelines["small"], ["unet", "scheduler"])


@pytest.fixture(scope="module")
def reference(tiny_pipelines: dict[str, Path]) -> StableDiffusionPipeline:
    pipeline = StableDiffusionPipeline.from_pretrained(tiny_pipelines["large"])
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def _wire(bundle: StateBundle) -> StateBundle:
    """What the next host receives: the bundle as bytes and back."""
    return StateBundle.from_bytes(bundle.to_bytes())


def _staged(encoder: Components, stages: list[Components], scheduler: str, cuts: list[int],
            guidance: float = GUIDANCE,
            negatives: list[str] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """encode -> denoise [0, c1), [c1, c2), ... (stage i on stages[i % len(stages)]) -> decode, with
    every boundary crossed as bytes; the final latents and the images in [-1, 1]."""
    space = latent_space(encoder.folder)
    embeddings = _wire(StateBundle({}, {EMBEDDINGS: encode_prompt(encoder, PROMPTS, negatives, guidance)}))
    state = initial_state(space, len(PROMPTS), SEED, scheduler, STEPS)
    bounds = [0, *cuts, STEPS]
    for i, (start, end) in enumerate(zip(bounds, bounds[1:], strict=False)):
        stage = stages[i % len(stages)]
        state = denoise(stage.unet, stage.scheduler, _wire(state), embeddings.tensors[EMBEDDINGS], guidance,
                        start, end)
    latents = _wire(state).tensors[LATENTS]
    return latents, decode(encoder.vae, latents)


def _diffusers(pipeline: StableDiffusionPipeline, scheduler: str, guidance: float,
               negatives: list[str] | None, output_type: str) -> torch.Tensor:
    if scheduler == "ddim":
        pipeline.scheduler = DDIMScheduler.from_config(pipeline.scheduler.config)
    else:
        pipeline.scheduler = DPMSolverMultistepScheduler.from_config(pipeline.scheduler.config,
                                                                     algorithm_type="dpmsolver++")
    return pipeline(PROMPTS, negative_prompt=negatives, num_inference_steps=STEPS, guidance_scale=guidance,
                    generator=torch.Generator().manual_seed(SEED), output_type=output_type).images


@pytest.mark.parametrize(("scheduler", "guidance", "negatives"), [
    ("ddim", GUIDANCE, None), ("dpm", GUIDANCE, None), ("dpm", GUIDANCE, NEGATIVES), ("ddim", 1.0, None),
])
def test_unsplit_run_equals_diffusers_pipeline(large, reference, scheduler, guidance, negatives):
    latents, images = _staged(large, [large], scheduler, [], guidance, negatives)
    expected_latents = _diffusers(reference, scheduler, guidance, negatives, "latent")
    expected_images = _diffusers(reference, scheduler, guidance, negatives, "pt")  # in [0, 1]
    assert images.shape == expected_images.shape == (2, 3, 32, 32)
    assert (latents - expected_latents).abs().max().item() <= TOLERANCE
    assert (images / 2 + 0.5 - expected_images).abs().max().item() <= TOLERANCE
    # the comparison has teeth: the images are not saturated, and they differ per prompt
    assert (images.abs() < 1).float().mean() > 0.9
    assert (images[0] - images[1]).abs().max() > 0.1


@pytest.fixture(scope="module")
def unsplit(large: Components) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    return {scheduler: _staged(large, [large], scheduler, [], negatives=NEGATIVES)
            for scheduler in ("ddim", "dpm", "ddpm")}


@pytest.mark.parametrize("scheduler", ["ddim", "dpm", "ddpm"])
@pytest.mark.parametrize("cuts", [[1], [4], [STEPS - 1], [2, 3, 6]])
def test_split_equals_unsplit(large, unsplit, scheduler, cuts):
    latents, images = _staged(large, [large], scheduler, cuts, negatives=NEGATIVES)
    unsplit_latents, unsplit_images = unsplit[scheduler]
    assert (latents - unsplit_latents).abs().max().item() <= TOLERANCE
    assert (images - unsplit_images).abs().max().item() <= TOLERANCE


def test_dpm_history_crosses_the_boundary_so_the_split_test_has_teeth(large):
    space = latent_space(large.folder)
    embeddings = encode_prompt(large, PROMPTS, None, GUIDANCE)
    state = denoise(large.unet, large.scheduler, initial_state(space, 2, SEED, "dpm", STEPS), embeddings,
                    GUIDANCE, 0, 4)
    assert sorted(state.tensors) == ["history_0", "history_1", LATENTS]
    assert state.meta["lower_order_nums"] == 2
    restarted = _wire(state)
    restarted.tensors = {LATENTS: restarted.tensors[LATENTS]}
    restarted.meta["lower_order_nums"] = 0
    naive = denoise(large.unet, large.scheduler, restarted, embeddings, GUIDANCE, 4, STEPS).tensors[LATENTS]
    whole = denoise(large.unet, large.scheduler, initial_state(space, 2, SEED, "dpm", STEPS), embeddings,
                    GUIDANCE, 0, STEPS).tensors[LATENTS]
    assert (naive - whole).abs().max().item() > 1e-3
    state.tensors.pop("history_1")
    with pytest.raises(ValueError, match="lacks its history: history_1"):
        denoise(large.unet, large.scheduler, state, embeddings, GUIDANCE, 4, STEPS)


@pytest.mark.parametrize("scheduler", ["ddim", "dpm"])
def test_a_split_between_two_unets_of_one_latent_space_runs(large, small, tiny_pipelines, scheduler):
    check_compatible([tiny_pipelines["large"], tiny_pipelines["small"]])
    latents, images = _staged(large, [large, small], scheduler, [3])
    alone, _ = _staged(large, [large], scheduler, [3])
    assert images.shape == (2, 3, 32, 32) and torch.isfinite(images).all() and torch.isfinite(latents).all()
    assert (latents - alone).abs().max().item() > 1e-3  # the small UNet did take the last steps


def test_a_host_loads_only_the_components_it_runs(tiny_pipelines):
    denoiser = load_components(tiny_pipelines["small"], ["unet", "scheduler"])
    assert denoiser.vae is None and denoiser.text_encoder is None and denoiser.tokenizer is None
    with pytest.raises(ValueError, match=r"tokenizer, text_encoder not loaded"):
        encode_prompt(denoiser, PROMPTS)


def test_denoise_refuses_state_that_does_not_fit(large):
    space = latent_space(large.folder)
    embeddings = encode_prompt(large, PROMPTS, None, GUIDANCE)
    state = initial_state(space, 2, SEED, "ddim", STEPS)
    with pytest.raises(ValueError, match="state is at step 0"):
        denoise(large.unet, large.scheduler, state, embeddings, GUIDANCE, 2, 4)
    with pytest.raises(ValueError, match="outside"):
        denoise(large.unet, large.scheduler, state, embeddings, GUIDANCE, 0, STEPS + 1)
    with pytest.raises(ValueError, match="4 embeddings for 2 latents without guidance"):
        denoise(large.unet, large.scheduler, state, embeddings, 1.0, 0, 1)
    with pytest.raises(ValueError, match="2 negative prompts for 1 prompts"):
        encode_prompt(large, PROMPTS[:1], NEGATIVES, GUIDANCE)
