"""The scale models built here (nodes/diffusion/latent_scale_model.py): the SD 1.5 scale model has
SD 1.5's interfaces and sizes on the wire, its two UNets share its latent space, and the
tokenizer written here is CLIP's byte-level BPE."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import CLIPTokenizer

from nodes.diffusion.latent_folders import check_compatible, crossing_bytes, latent_space
from nodes.diffusion.latent_pipeline import (
    LATENTS,
    decode,
    denoise,
    encode_prompt,
    initial_state,
    load_components,
)
from nodes.diffusion.latent_scale_model import (
    BOS,
    EOS,
    SD15,
    SD15_SCHEDULER,
    WORDS,
    bpe_vocabulary,
    write_pipeline,
)


@pytest.fixture(scope="module")
def sd15(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("latent-sd15")
    return {unet: write_pipeline(root / f"sd15-{unet}", "sd15", unet) for unet in SD15.unets}


def test_the_sd15_scale_model_has_sd15s_interfaces(sd15):
    space = check_compatible([sd15["large"], sd15["small"]])
    assert space.latents_shape(1) == (1, 4, 64, 64) and space.vae_factor == 8
    assert (space.image_channels, space.image_height, space.image_width) == (3, 512, 512)
    assert (space.text_tokens, space.text_dim, space.scaling_factor) == (77, 768, 0.18215)
    schedule = dict(space.schedule)
    for key in ("beta_start", "beta_end", "beta_schedule", "num_train_timesteps", "prediction_type",
                "steps_offset", "set_alpha_to_one"):
        assert schedule[key] == SD15_SCHEDULER[key]
    config = json.loads((sd15["large"] / "unet" / "config.json").read_text())
    assert config["cross_attention_dim"] == 768 and config["sample_size"] == 64


def test_the_sd15_scale_model_runs_at_sd15s_shapes(sd15):
    encoder = load_components(sd15["large"], ["tokenizer", "text_encoder", "vae"])
    embeddings = encode_prompt(encoder, ["a photo of a cat"], None, guidance_scale=7.5)
    assert embeddings.shape == (2, 77, 768)
    state = initial_state(latent_space(sd15["large"]), 1, seed=0, scheduler="dpm", steps=30)
    for unet, (start, end) in zip(("large", "small"), ((0, 1), (1, 2)), strict=True):
        parts = load_components(sd15[unet], ["unet", "scheduler"])
        state = denoise(parts.unet, parts.scheduler, state, embeddings, 7.5, start, end)
        assert state.tensors[LATENTS].shape == (1, 4, 64, 64)
    images = decode(encoder.vae, state.tensors[LATENTS])
    assert images.shape == (1, 3, 512, 512) and torch.isfinite(images).all()


def test_the_bytes_that_cross_a_link_are_sd15s(sd15):
    sizes = crossing_bytes(sd15["small"], n=1, dtype="float16", guidance=False)
    assert sizes["latents"] == 4 * 64 * 64 * 2 == 32 * 1024
    assert sizes["embeddings"] == 77 * 768 * 2
    assert sizes["pixels"] == 3 * 512 * 512 * 2 and sizes["pixels_uint8"] == 3 * 512 * 512
    guided = crossing_bytes(sd15["small"], dtype="float16", guidance=True, solver_history=2)
    assert guided["embeddings"] == 2 * 77 * 768 * 2 and guided["handoff"] == 3 * 32 * 1024 + 2 * 77 * 768 * 2
    assert crossing_bytes(sd15["small"], dtype="float32")["latents"] == 64 * 1024


def test_the_model_card_says_the_images_are_meaningless(sd15):
    card = (sd15["large"] / "README.md").read_text()
    assert "seeded random weights" in card and "meaningless" in card and "4x64x64" in card


def test_the_pipelines_of_different_scale_models_do_not_mix(sd15, tiny_pipelines):
    with pytest.raises(ValueError, match="latent_height 8 vs 64"):
        check_compatible([tiny_pipelines["large"], sd15["large"]])


def test_the_tokenizer_is_clips_byte_level_bpe_and_loads_from_sd15s_files(tiny_pipelines, tmp_path):
    vocab, merges = bpe_vocabulary()
    saved = CLIPTokenizer.from_pretrained(tiny_pipelines["large"] / "tokenizer")
    # SD 1.5's tokenizer folder has vocab.json and merges.txt and no tokenizer.json: the same tokens
    for name in ("vocab.json", "merges.txt", "tokenizer_config.json"):
        (tmp_path / name).write_bytes((tiny_pipelines["large"] / "tokenizer" / name).read_bytes())
    from_files = CLIPTokenizer.from_pretrained(tmp_path)
    text = "A photo of a cat, Oil painting! élan"
    ids = saved(text, padding="max_length", max_length=16, truncation=True).input_ids
    assert ids == from_files(text, padding="max_length", max_length=16, truncation=True).input_ids
    words = [vocab[w] for w in ("a</w>", "photo</w>", "of</w>", "a</w>", "cat</w>")]
    assert ids[:6] == [vocab[BOS], *words] and ids[-1] == vocab[EOS]  # padded with the end token
    assert len(saved) == len(vocab) == 512 + len(merges) + 2
    for word in WORDS:  # each a whole token, as in CLIP's own vocabulary
        assert saved(word).input_ids == [vocab[BOS], vocab[f"{word}</w>"], vocab[EOS]]
