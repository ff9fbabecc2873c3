"""The stages of a latent text-to-image pipeline (Stable Diffusion family), each a function on
explicit state, so that each can run on a different host:

    encode_prompt (tokenizer + text encoder)  -> embeddings
    initial_state (the request's seed)        -> latents at step 0
    denoise       (UNet, steps [start, end))  -> the hand-off state: latents + sampler state
    decode        (VAE)                       -> images in [-1, 1]

Run one after the other on one pipeline folder, they compute what diffusers'
StableDiffusionPipeline computes (same tokenisation, classifier-free guidance, latents, timesteps
and decoding; tests/nodes/diffusion/test_latent_pipeline.py holds them to it).  The sampler's state
crosses a denoising boundary through the project's scheduler hand-off adapters
(nodes/diffusion/schedulers.py) inside a StateBundle (nodes/diffusion/state.py), exactly as a pixel
stage's does (nodes/diffusion/executor.py); the embeddings travel beside it, as their own tensor.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from diffusers.schedulers.scheduling_utils import SchedulerMixin

from nodes.diffusion import schedulers
from nodes.diffusion.latent_folders import COMPONENTS, LatentSpace, check_folder
from nodes.diffusion.state import DenoisingMeta, StateBundle
from nodes.schema import check_scheduler_name

if TYPE_CHECKING:  # transformers (seconds to import) is imported where a text encoder is loaded
    from transformers import CLIPTextModel, CLIPTokenizer

LATENTS = "latents"
# the prompt embeddings, as a tensor of their own beside the latents in a hand-off state (2n x tokens x
# dims with guidance): a stage that did not encode the prompt conditions on what it received
EMBEDDINGS = "embeddings"


@dataclass
class Components:
    """The components of one pipeline folder that a host loaded; the others stay None (a host that
    only denoises loads no VAE and no text encoder).  `scheduler` is the one the folder ships: the
    samplers are built from its config (its noise schedule), whatever class it is."""

    folder: Path
    unet: UNet2DConditionModel | None = None
    vae: AutoencoderKL | None = None
    text_encoder: CLIPTextModel | None = None
    tokenizer: CLIPTokenizer | None = None
    scheduler: SchedulerMixin | None = None

    def need(self, *names: str) -> None:
        missing = [name for name in names if getattr(self, name) is None]
        if missing:
            raise ValueError(f"pipeline {self.folder}: {', '.join(missing)} not loaded")


def _gist(exc: BaseException) -> str:
    """A library error's first line, cut after its first sentence."""
    text = str(exc).strip()
    first = text.splitlines()[0] if text else type(exc).__name__
    cut = first.find(". ")
    return first[: cut + 1] if cut > 0 else first


def _load(folder: Path, name: str, dtype: torch.dtype) -> Any:
    import diffusers
    from transformers import CLIPTextModel, CLIPTokenizer

    if name == "unet":
        return UNet2DConditionModel.from_pretrained(folder, subfolder="unet", torch_dtype=dtype,
                                                    use_safetensors=True)
    if name == "vae":
        return AutoencoderKL.from_pretrained(folder, subfolder="vae", torch_dtype=dtype, use_safetensors=True)
    if name == "text_encoder":
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()  # a bar per load, on every node's log: not progress
        return CLIPTextModel.from_pretrained(folder / "text_encoder", dtype=dtype, use_safetensors=True)
    if name == "tokenizer":
        return CLIPTokenizer.from_pretrained(folder / "tokenizer")
    class_name = json.loads((folder / "model_index.json").read_text())["scheduler"][1]
    scheduler_class = getattr(diffusers, class_name, None)
    if not (isinstance(scheduler_class, type) and issubclass(scheduler_class, SchedulerMixin)):
        raise ValueError(f"pipeline folder {folder}: its scheduler {class_name!r} is not a diffusers "
                         "scheduler")
    return scheduler_class.from_pretrained(folder, subfolder="scheduler")


def load_components(folder: Path | str, components: Iterable[str] = COMPONENTS,
                    dtype: torch.dtype = torch.float32) -> Components:
    """The `components` of a pipeline folder, in eval mode without gradients; the folder is checked
    first (latent_folders.check_folder).  ValueError naming the folder and component."""
    names = list(components)
    path = check_folder(folder, names)
    loaded = Components(folder=path)
    for name in names:
        try:
            part = _load(path, name, dtype)
        except ValueError as exc:
            if str(exc).startswith("pipeline folder"):
                raise
            raise ValueError(f"pipeline folder {path}: {name} does not load: {_gist(exc)}") from exc
        except (OSError, TypeError, KeyError, RuntimeError) as exc:
            raise ValueError(f"pipeline folder {path}: {name} does not load: {_gist(exc)}") from exc
        if isinstance(part, torch.nn.Module):
            part = part.eval().requires_grad_(False)
        setattr(loaded, name, part)
    return loaded


def guided(guidance_scale: float) -> bool:
    """Classifier-free guidance is on above 1 (diffusers' rule): it doubles the UNet's batch."""
    return guidance_scale > 1.0


def _embed(components: Components, texts: list[str], length: int) -> torch.Tensor:
    tokens = components.tokenizer(texts, padding="max_length", max_length=length, truncation=True,
                                  return_tensors="pt")
    encoder = components.text_encoder
    # diffusers passes the padding mask only to text encoders whose config asks for it (SD 1.x's
    # CLIP does not: its padding positions are part of the embeddings the UNet was trained on)
    mask = tokens.attention_mask if getattr(encoder.config, "use_attention_mask", False) else None
    if mask is not None:
        mask = mask.to(encoder.device)
    return encoder(tokens.input_ids.to(encoder.device), attention_mask=mask)[0].to(encoder.dtype)


@torch.no_grad()
def encode_prompt(components: Components, prompts: Sequence[str],
                  negative_prompts: Sequence[str] | None = None, guidance_scale: float = 7.5) -> torch.Tensor:
    """The prompts' embeddings (n x tokens x dims) as the UNet takes them; with guidance, the
    unconditional ones (of the negative prompts, or of "") first, then the conditional ones
    (2n x tokens x dims), as StableDiffusionPipeline concatenates them."""
    components.need("tokenizer", "text_encoder")
    prompts = list(prompts)
    if not prompts or not all(isinstance(p, str) for p in prompts):
        raise ValueError("prompts must be a non-empty list of strings")
    cond = _embed(components, prompts, components.tokenizer.model_max_length)
    if not guided(guidance_scale):
        return cond
    negatives = [""] * len(prompts) if negative_prompts is None else list(negative_prompts)
    if len(negatives) != len(prompts):
        raise ValueError(f"{len(negatives)} negative prompts for {len(prompts)} prompts")
    return torch.cat([_embed(components, negatives, cond.shape[1]), cond])


def initial_latents(space: LatentSpace, n: int, seed: int,
                    dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Pure noise of the pipeline's latent shape, drawn from the request's seed as
    StableDiffusionPipeline draws it from `torch.Generator().manual_seed(seed)`.  It is not scaled:
    every sampler the project has (DDIM, DPM-Solver++, DDPM) starts at init_noise_sigma 1."""
    if n <= 0:
        raise ValueError(f"n must be positive, got {n}")
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(space.latents_shape(n), generator=generator, dtype=dtype)


def initial_state(space: LatentSpace, n: int, seed: int, scheduler: str, steps: int,
                  dtype: torch.dtype = torch.float32, guidance_scale: float | None = None) -> StateBundle:
    """The state the first denoising stage starts from: the initial latents at step 0 of `steps`
    (the header states `guidance_scale` where given: the node processes' hand-off carries it)."""
    meta = DenoisingMeta(scheduler=check_scheduler_name(scheduler), steps=steps, next_step=0, seed=seed,
                         guidance_scale=guidance_scale)
    return StateBundle(meta=meta.header(), tensors={LATENTS: initial_latents(space, n, seed, dtype)})


@torch.no_grad()
def denoise(unet: UNet2DConditionModel, noise_schedule: SchedulerMixin, state: StateBundle,
            embeddings: torch.Tensor, guidance_scale: float, start: int, end: int,
            on_step: Callable[[int], None] | None = None) -> StateBundle:
    """Steps [start, end) of the state's T-step schedule with `unet`; the state that the next stage
    (or decode) continues from.  `noise_schedule` is the folder's scheduler (Components.scheduler):
    the sampler named in the state is built from its config, and resumed from what the previous
    stage carried (DPM-Solver++: its model-output history and order counter)."""
    meta = DenoisingMeta.of(state)
    if meta.next_step != start:
        raise ValueError(f"stage starts at step {start} but the state is at step {meta.next_step}")
    if not 0 <= start < end <= meta.steps:
        raise ValueError(f"stage step range [{start}, {end}) is outside [0, {meta.steps})")
    if unet.config.get("time_cond_proj_dim") is not None:
        raise ValueError("a UNet conditioned on the guidance scale (time_cond_proj_dim) is not supported")
    latents = state.tensors.get(LATENTS)
    if latents is None:
        raise ValueError(f"state at step {start} has no {LATENTS!r} tensor")
    cfg = guided(guidance_scale)
    if embeddings.shape[0] != len(latents) * (2 if cfg else 1):
        raise ValueError(f"{embeddings.shape[0]} embeddings for {len(latents)} latents "
                         f"{'with' if cfg else 'without'} guidance (scale {guidance_scale})")
    handoff = schedulers.adapter(meta.scheduler)
    scheduler = handoff.build(noise_schedule, meta.steps)
    handoff.resume(scheduler, start, meta, state.tensors)
    for index in range(start, end):
        timestep = scheduler.timesteps[index]
        model_input = torch.cat([latents] * 2) if cfg else latents
        model_input = scheduler.scale_model_input(model_input, timestep)
        prediction = unet(model_input, timestep, encoder_hidden_states=embeddings, return_dict=False)[0]
        if cfg:
            uncond, cond = prediction.chunk(2)
            prediction = uncond + guidance_scale * (cond - uncond)
        latents = handoff.step(scheduler, prediction, timestep, latents, index, meta.seed)
        if on_step:
            on_step(index)
    carried_meta, carried = handoff.export(scheduler)
    new_meta = meta.model_copy(update={"lower_order_nums": None, **carried_meta, "next_step": end})
    return StateBundle(meta=new_meta.header(), tensors={LATENTS: latents, **carried})


@torch.no_grad()
def decode(vae: AutoencoderKL, latents: torch.Tensor) -> torch.Tensor:
    """Images (n x 3 x H x W float32) in [-1, 1], the project's samples range: the VAE's output
    clamped.  diffusers' output_type="pt" is these mapped to [0, 1] (x / 2 + 0.5)."""
    images = vae.decode(latents / vae.config.scaling_factor, return_dict=False)[0]
    return images.float().clamp(-1.0, 1.0)
