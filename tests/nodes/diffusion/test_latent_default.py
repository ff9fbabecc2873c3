"""The embedded latent pipelines, nodes/pretrained/latent-large and latent-small
(nodes/diffusion/latent_training.py, docs/latent-default.md): complete diffusers pipeline folders
that share one latent space and, byte for byte, the VAE, text encoder, tokenizer and scheduler; run
through nodes/diffusion/latent_pipeline's functions they equal diffusers' StableDiffusionPipeline;
and the digit attributes their prompts name (nodes/diffusion/digit_attributes.py) bin constructed
images as expected."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from nodes.diffusion import digit_attributes
from nodes.diffusion.latent_folders import check_compatible, check_folder
from nodes.diffusion.latent_training import NAMES, SHARED, TOKENS, WORDS, build_tokenizer, prompt_table
from nodes.diffusion.model_zoo import PRETRAINED_DIR

FOLDERS = [PRETRAINED_DIR / name for name in NAMES]
PROMPTS = ["a bold right-slanted digit 7", "a thin digit 0"]
STEPS = 4
SEED = 3
GUIDANCE = 4.0
TOLERANCE = 1e-4


def _files(folder: Path) -> dict[str, bytes]:
    return {str(path.relative_to(folder)): path.read_bytes()
            for part in SHARED for path in sorted((folder / part).rglob("*")) if path.is_file()}


def test_folders_are_complete_compatible_and_small():
    for folder in FOLDERS:
        check_folder(folder)
        assert (folder / "README.md").is_file() and (folder / "training.json").is_file()
    space = check_compatible(FOLDERS)
    assert (space.latent_channels, space.latent_height, space.latent_width) == (4, 4, 4)
    assert (space.image_channels, space.image_height, space.image_width) == (3, 16, 16)
    assert (space.text_tokens, space.text_dim) == (TOKENS, 64)
    total = sum(path.stat().st_size for folder in FOLDERS for path in folder.rglob("*") if path.is_file())
    assert total < 21 * 2 ** 20


def test_shared_components_are_byte_identical():
    large, small = (_files(folder) for folder in FOLDERS)
    assert large == small
    assert any(name.endswith(".safetensors") for name in large)
    unets = [(folder / "unet" / "diffusion_pytorch_model.safetensors").read_bytes() for folder in FOLDERS]
    assert unets[0] != unets[1]


def test_every_prompt_fits_and_each_word_is_one_token():
    tokenizer = build_tokenizer()
    for word in WORDS:
        assert tokenizer.tokenize(word) == [f"{word}</w>"]
    longest = max(len(tokenizer(p).input_ids) for p in prompt_table())
    assert longest <= TOKENS
    shipped = type(tokenizer).from_pretrained(FOLDERS[0] / "tokenizer")
    assert shipped(PROMPTS[0]).input_ids == tokenizer(PROMPTS[0]).input_ids


@pytest.mark.parametrize("name", NAMES)
def test_stages_equal_diffusers_pipeline(name):
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    from nodes.diffusion.latent_pipeline import decode, denoise, encode_prompt, initial_state, load_components

    folder = PRETRAINED_DIR / name
    components = load_components(folder)
    space = check_compatible([folder])
    embeddings = encode_prompt(components, PROMPTS, guidance_scale=GUIDANCE)
    state = initial_state(space, len(PROMPTS), SEED, "ddim", STEPS)
    state = denoise(components.unet, components.scheduler, state, embeddings, GUIDANCE, 0, STEPS)
    images = decode(components.vae, state.tensors["latents"])

    pipeline = StableDiffusionPipeline.from_pretrained(folder)
    pipeline.set_progress_bar_config(disable=True)
    pipeline.scheduler = DDIMScheduler.from_config(pipeline.scheduler.config)
    expected = pipeline(PROMPTS, num_inference_steps=STEPS, guidance_scale=GUIDANCE,
                        generator=torch.Generator().manual_seed(SEED), output_type="pt").images
    assert images.shape == expected.shape == (2, 3, 16, 16)
    assert (images / 2 + 0.5 - expected).abs().max().item() <= TOLERANCE
    assert (images[0] - images[1]).abs().max() > 0.1  # the prompts make different images


def _bar(width: int, shear: float = 0.0) -> torch.Tensor:
    """A 1 x 1 x 16 x 16 image in [-1, 1]: a vertical bar `width` pixels wide, rows 1-14, its
    column shifted by `shear` pixels per row going up (positive: the top leans right)."""
    image = -torch.ones(1, 1, 16, 16)
    for row in range(1, 15):
        left = round(7.5 - width / 2 + shear * (7.5 - row))
        image[0, 0, row, max(0, left): left + width] = 1.0
    return image


def test_attributes_thick_and_thin_strokes():
    images = torch.cat([_bar(2), _bar(7)])  # the train split's 1s are 4-5 pixels wide, blurred
    digits = torch.tensor([1, 1])
    weight = digit_attributes.stroke_weight(images)
    assert weight[1] > 3 * weight[0]
    bins, _ = digit_attributes.bins(images, digits)
    assert bins.tolist() == [0, 2]  # thin, bold
    assert digit_attributes.describe(images, digits)[1].startswith("a bold")


def test_attributes_slant_of_a_sheared_digit():
    images = torch.cat([_bar(2, -0.4), _bar(2), _bar(2, 0.4)])
    lean = digit_attributes.slant(images)
    assert lean[0] < -0.3 and abs(lean[1]) < 0.05 and lean[2] > 0.3
    _, bins = digit_attributes.bins(images, torch.tensor([1, 1, 1]))
    assert bins.tolist() == [0, 1, 2]  # left-slanted, upright, right-slanted
    # three channels are judged as their grey mean; a blank image does not divide by zero
    assert torch.allclose(digit_attributes.slant(images.expand(-1, 3, -1, -1)), lean)
    assert torch.isfinite(digit_attributes.slant(-torch.ones(1, 1, 16, 16))).all()


def test_train_split_bins_are_tertiles_per_digit():
    from nodes.diffusion.digits import load_split

    train = load_split("train")
    weight, lean = digit_attributes.bins(train.images, train.labels)
    for bins in (weight, lean):
        for digit in range(10):
            counts = torch.bincount(bins[train.labels == digit], minlength=3).float()
            assert (counts / counts.sum() - 1 / 3).abs().max() < 0.05


@pytest.mark.slow
def test_training_is_deterministic_and_writes_both_folders(tmp_path):
    """A few steps of each phase, twice: the same bytes; the folders are compatible pipelines and
    their cards render (a minute on 2 cores: most of it the start of each phase)."""
    from nodes.diffusion.latent_training import LatentRecipe, render_card, train_latent

    recipe = LatentRecipe(vae_steps=3, large_steps=3, small_steps=3)
    weights = []
    for run in ("a", "b"):
        train_latent(tmp_path / run, recipe)
        folders = [tmp_path / run / name for name in NAMES]
        check_compatible(folders)
        assert _files(folders[0]) == _files(folders[1])
        assert "## Weights" in render_card(folders[0])
        weights.append({str(p.relative_to(tmp_path / run)): p.read_bytes()
                        for p in sorted((tmp_path / run).rglob("*.safetensors"))})
    assert weights[0] == weights[1]
    assert len(weights[0]) == 6  # vae, text encoder, unet in each folder
