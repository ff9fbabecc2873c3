"""Latent text-to-image pipelines built here, from configs, with seeded random weights.

No hub is reachable, so the testbed builds its own Stable Diffusion family pipelines:
- `TINY`: 32x32 pixels, latents 4x8x8, 16 tokens x 32 dims; a whole run takes well under a second
  on a CPU (the tests' pipeline).
- `SD15`: the scale model of Stable Diffusion 1.5: SD 1.5's interfaces (512x512 pixels, latents
  4x64x64 through a VAE of factor 8 and scaling factor 0.18215, 77 tokens x 768 dims, its noise
  schedule and scheduler config) with narrow insides, so that a step costs little on a CPU.  What
  crosses a link is then exactly as large as with SD 1.5; the compute is not, and the images are
  meaningless.
Each has a `large` and a `small` UNet over one latent space; the other components come from the
same seeds in both, so the two folders of one model are compatible (latent_folders.check_compatible).
`write_pipeline` saves one as a diffusers pipeline folder (StableDiffusionPipeline.save_pretrained)
with a model card saying what it is.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# SD 1.5's scheduler_config.json (the PNDM scheduler it ships), which the samplers are built from
SD15_SCHEDULER = {
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "num_train_timesteps": 1000,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "trained_betas": None,
    "clip_sample": False,
    "prediction_type": "epsilon",
}

# The words the tokenizer has whole tokens for (merges built here); any other text still encodes,
# byte by byte, as CLIP's byte-level BPE does with rare words.
WORDS = (
    "a", "an", "the", "of", "in", "on", "at", "with", "and", "photo", "picture", "painting",
    "drawing", "portrait", "cat", "dog", "bird", "horse", "car", "house", "tree", "flower",
    "mountain", "river", "sea", "sky", "city", "street", "forest", "red", "green", "blue", "yellow",
    "black", "white", "small", "large", "old", "young", "beautiful", "dark", "bright", "sunset",
    "night", "morning", "snow", "rain", "style", "oil", "digital", "art", "detailed", "high",
    "quality", "blurry", "low", "ugly",
)
BOS, EOS = "<|startoftext|>", "<|endoftext|>"


@dataclass(frozen=True)
class ScaleModel:
    """One family of pipelines: the configs of its shared components and of its UNets."""

    name: str
    image_size: int
    tokens: int
    vae: dict[str, Any]
    text_encoder: dict[str, Any]
    unets: dict[str, dict[str, Any]]
    scheduler: dict[str, Any] = field(default_factory=lambda: dict(SD15_SCHEDULER))
    seed: int = 0


def _unet(size: int, text_dim: int, channels: tuple[int, ...], blocks: tuple[str, ...], heads: int,
          groups: int) -> dict[str, Any]:
    """A UNet2DConditionModel config over 4-channel latents of `size`, conditioned on `text_dim`
    embeddings; `blocks` are the down blocks, mirrored on the way up."""
    up = {"DownBlock2D": "UpBlock2D", "CrossAttnDownBlock2D": "CrossAttnUpBlock2D"}
    return {
        "sample_size": size, "in_channels": 4, "out_channels": 4, "cross_attention_dim": text_dim,
        "block_out_channels": channels, "down_block_types": blocks,
        "up_block_types": tuple(up[b] for b in reversed(blocks)), "layers_per_block": 1,
        "attention_head_dim": heads, "norm_num_groups": groups,
    }


def _vae(size: int, channels: tuple[int, ...], groups: int) -> dict[str, Any]:
    """An AutoencoderKL config: factor 2 ** (len(channels) - 1), 4 latent channels, SD's scaling."""
    return {
        "sample_size": size, "in_channels": 3, "out_channels": 3, "latent_channels": 4,
        "block_out_channels": channels, "down_block_types": ("DownEncoderBlock2D",) * len(channels),
        "up_block_types": ("UpDecoderBlock2D",) * len(channels), "layers_per_block": 1,
        "norm_num_groups": groups, "scaling_factor": 0.18215,
    }


def _text(dim: int, tokens: int, layers: int, heads: int, inner: int) -> dict[str, Any]:
    """A CLIPTextConfig; its vocabulary size and special ids are the tokenizer's (filled in later)."""
    return {"hidden_size": dim, "intermediate_size": inner, "num_hidden_layers": layers,
            "num_attention_heads": heads, "max_position_embeddings": tokens, "hidden_act": "quick_gelu"}


_CROSS = "CrossAttnDownBlock2D"
TINY = ScaleModel(
    name="tiny", image_size=32, tokens=16,
    vae=_vae(32, (8, 16, 16), groups=4),
    text_encoder=_text(32, 16, layers=2, heads=4, inner=64),
    unets={
        "large": _unet(8, 32, (32, 64), (_CROSS, "DownBlock2D"), heads=4, groups=8),
        "small": _unet(8, 32, (16, 32), ("DownBlock2D", _CROSS), heads=2, groups=8),
    },
)
# SD 1.5's UNet: block_out_channels (320, 640, 1280, 1280), 2 layers per block, cross-attention in
# the first three levels; its VAE (128, 256, 512, 512); its text encoder 12 layers of 768.
SD15 = ScaleModel(
    name="sd15", image_size=512, tokens=77,
    vae=_vae(512, (8, 16, 32, 32), groups=8),
    text_encoder=_text(768, 77, layers=1, heads=12, inner=768),
    unets={
        # SD 1.5's structure, narrow: self-attention over all 64 x 64 positions is most of a step
        "large": _unet(64, 768, (16, 32, 64, 64), (_CROSS, _CROSS, _CROSS, "DownBlock2D"), heads=2,
                       groups=8),
        "small": _unet(64, 768, (16, 32, 32, 32), ("DownBlock2D", _CROSS, _CROSS, "DownBlock2D"),
                       heads=2, groups=8),
    },
)
SCALE_MODELS = {model.name: model for model in (TINY, SD15)}


def _byte_alphabet() -> list[str]:
    """GPT-2 / CLIP's printable stand-ins for the 256 bytes, in byte order (byte-level BPE)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
                 *range(ord("®"), ord("ÿ") + 1)]
    shifted, extra = {}, 0
    for byte in range(256):
        if byte not in printable:
            shifted[byte] = 256 + extra
            extra += 1
    return [chr(byte) if byte in printable else chr(shifted[byte]) for byte in range(256)]


def _apply_merges(pieces: list[str], ranks: dict[tuple[str, str], int]) -> list[str]:
    """BPE: merge the best-ranked adjacent pair until none is known (what the tokenizer will do)."""
    while True:
        pairs = zip(pieces, pieces[1:], strict=False)
        known = [(ranks[pair], i) for i, pair in enumerate(pairs) if pair in ranks]
        if not known:
            return pieces
        _, i = min(known)
        pieces = [*pieces[:i], pieces[i] + pieces[i + 1], *pieces[i + 2:]]


def bpe_vocabulary(words: tuple[str, ...] = WORDS) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """CLIP's vocabulary layout (the 256 bytes, the same ending a word, merged tokens, then the
    start and end tokens) with merges that make each of `words` one token: a word is first split
    by the merges so far, then its pieces are joined left to right by new, later-ranked merges
    (which leave the words before it as they were)."""
    alphabet = _byte_alphabet()
    tokens = [*alphabet, *(f"{c}</w>" for c in alphabet)]
    ranks: dict[tuple[str, str], int] = {}
    for word in words:
        pieces = _apply_merges([*word[:-1], f"{word[-1]}</w>"], ranks)
        while len(pieces) > 1:
            ranks[(pieces[0], pieces[1])] = len(ranks)
            tokens.append(pieces[0] + pieces[1])
            pieces = [pieces[0] + pieces[1], *pieces[2:]]
    tokens += [BOS, EOS]
    return {token: index for index, token in enumerate(tokens)}, list(ranks)


def build_pipeline(model: ScaleModel, unet: str):  # -> StableDiffusionPipeline (torch at call time)
    """The pipeline with `model`'s `unet`; each component's weights drawn from its own seed, so the
    shared components are the same in every pipeline of `model`."""
    import torch
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    vocab, merges = bpe_vocabulary()
    tokenizer = CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=model.tokens)
    text_config = CLIPTextConfig(vocab_size=len(vocab), bos_token_id=vocab[BOS], eos_token_id=vocab[EOS],
                                 pad_token_id=vocab[EOS], **model.text_encoder)
    seeds = {"vae": model.seed + 1, "text_encoder": model.seed + 2,
             **{name: model.seed + 10 + i for i, name in enumerate(sorted(model.unets))}}
    torch.manual_seed(seeds["vae"])
    vae = AutoencoderKL(**model.vae)
    torch.manual_seed(seeds["text_encoder"])
    text_encoder = CLIPTextModel(text_config)
    torch.manual_seed(seeds[unet])
    denoiser = UNet2DConditionModel(**model.unets[unet])
    return StableDiffusionPipeline(
        vae=vae.eval(), text_encoder=text_encoder.eval(), tokenizer=tokenizer, unet=denoiser.eval(),
        scheduler=PNDMScheduler.from_config(model.scheduler), safety_checker=None, feature_extractor=None,
        requires_safety_checker=False,
    )


def write_pipeline(folder: Path | str, model: ScaleModel | str = "tiny", unet: str = "large") -> Path:
    """Save `model`'s pipeline with `unet` as a diffusers pipeline folder at `folder`, with its
    model card.  The tokenizer folder also gets SD 1.5's vocab.json and merges.txt."""
    model = SCALE_MODELS[model] if isinstance(model, str) else model
    folder = Path(folder)
    pipeline = build_pipeline(model, unet)
    pipeline.save_pretrained(folder, safe_serialization=True)
    vocab, merges = bpe_vocabulary()
    (folder / "tokenizer" / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    merges_text = "".join(f"{a} {b}\n" for a, b in merges)
    (folder / "tokenizer" / "merges.txt").write_text(f"#version: 0.2\n{merges_text}")
    (folder / "README.md").write_text(model_card(model, unet))
    return folder


def model_card(model: ScaleModel, unet: str) -> str:
    channels = model.unets[unet]["block_out_channels"]
    return "\n".join([
        f"# edgestage scale model `{model.name}-{unet}`",
        "",
        "**A scale model with seeded random weights: its images are meaningless.** It is built by "
        "`nodes/diffusion/latent_scale_model.py` from configs, untrained, so that the testbed can run "
        "latent text-to-image plans without downloading a real model.",
        "",
        f"- Interfaces: {model.image_size}x{model.image_size} RGB images, latents "
        f"4x{model.image_size // 2 ** (len(model.vae['block_out_channels']) - 1)}x"
        f"{model.image_size // 2 ** (len(model.vae['block_out_channels']) - 1)} (VAE scaling factor "
        f"{model.vae['scaling_factor']}), prompts of {model.tokens} tokens embedded in "
        f"{model.text_encoder['hidden_size']} dimensions; noise schedule: {model.scheduler['beta_schedule']} "
        f"betas {model.scheduler['beta_start']}-{model.scheduler['beta_end']}, "
        f"{model.scheduler['num_train_timesteps']} training steps, "
        f"{model.scheduler['prediction_type']} prediction.",
        f"- UNet `{unet}`: block channels {list(channels)}, "
        f"{model.unets[unet]['layers_per_block']} layer per "
        f"block, cross-attention in {list(model.unets[unet]['down_block_types']).count(_CROSS)} of "
        f"{len(channels)} levels.",
        f"- Tokenizer: CLIP's byte-level BPE with a small vocabulary written here ({len(WORDS)} whole words; "
        "other text is encoded byte by byte).",
        f"- Seeds: VAE {model.seed + 1}, text encoder {model.seed + 2}; the VAE, text encoder, tokenizer and "
        f"scheduler are the same in every `{model.name}` pipeline, so its UNets can share one plan.",
        "- What crosses a link (prompt, embeddings, latents, pixels) has the sizes of the real model; "
        "what a step costs does not.",
        "",
    ])


# the scale models by name, as a scenario's `models` may give them: built here on first use
SCALE_NAMES = {f"{model}-scale-{unet}": (model, unet)
               for model in SCALE_MODELS for unet in ("large", "small")}


def scale_models_dir() -> Path:
    """Where the scale models are built: $EDGESTAGE_SCALE_MODELS, else ~/.cache/edgestage/scale-models."""
    env = os.environ.get("EDGESTAGE_SCALE_MODELS")
    return Path(env) if env else Path.home() / ".cache" / "edgestage" / "scale-models"


def materialize(name: str) -> Path:
    """The folder of scale model `name` (`sd15-scale-large`, ...), built (seconds, deterministic)
    where it is not yet: written beside its place, then renamed into it, so that a folder there is
    whole, whoever else builds it at the same time."""
    model, unet = SCALE_NAMES[name]
    folder = scale_models_dir() / name
    if (folder / "model_index.json").is_file():
        return folder.resolve()
    folder.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=folder.parent))
    try:
        write_pipeline(scratch / name, model, unet)
        try:
            os.rename(scratch / name, folder)
        except OSError:  # built meanwhile by another process: theirs is as good
            if not (folder / "model_index.json").is_file():
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return folder.resolve()
