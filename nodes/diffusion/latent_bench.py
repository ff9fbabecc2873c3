"""What each stage of a latent pipeline costs on this machine: the median time of a text encoding,
of one denoising step and of a decoding, after a warm-up, in the calling process with torch's
default thread count.  The hardware profiles of the scale models will be written from these."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from nodes.diffusion.latent_folders import latent_space
from nodes.diffusion.latent_pipeline import (
    LATENTS,
    decode,
    denoise,
    encode_prompt,
    initial_state,
    load_components,
)

WARMUP = 1
PROMPT = "a photo of a red house in a forest at sunset, oil painting, detailed"


def _median_s(run: Callable[[], object], repeats: int) -> float:
    times = []
    for i in range(WARMUP + repeats):
        started = time.perf_counter()
        run()
        if i >= WARMUP:
            times.append(time.perf_counter() - started)
    return statistics.median(times)


def stage_times(folder: Path | str, repeats: int = 5, n: int = 1, guidance_scale: float = 7.5,
                scheduler: str = "ddim", steps: int = 30) -> dict[str, float | int]:
    """Median seconds of encoding `n` prompts (with their unconditional ones under guidance), of one
    denoising step of `n` latents (a UNet batch of 2n under guidance) and of decoding `n` latents."""
    parts = load_components(folder)
    space = latent_space(folder)
    embeddings = encode_prompt(parts, [PROMPT] * n, None, guidance_scale)
    state = initial_state(space, n, seed=0, scheduler=scheduler, steps=steps)
    latents = denoise(parts.unet, parts.scheduler, state, embeddings, guidance_scale, 0, 1).tensors[LATENTS]
    return {
        "text_encoder_s": _median_s(lambda: encode_prompt(parts, [PROMPT] * n, None, guidance_scale),
                                    repeats),
        "unet_step_s": _median_s(
            lambda: denoise(parts.unet, parts.scheduler, state, embeddings, guidance_scale, 0, 1), repeats),
        "vae_decode_s": _median_s(lambda: decode(parts.vae, latents), repeats),
        "n": n,
        "guidance_scale": guidance_scale,
        "repeats": repeats,
        "torch_threads": torch.get_num_threads(),
    }
