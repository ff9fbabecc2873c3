"""The embedded models are shipped, load by name or path, and have the sizes they claim."""

import json

import pytest
import torch

from nodes.diffusion.architectures import build_denoiser, count_parameters
from nodes.diffusion.model_zoo import PRETRAINED_DIR, load_denoiser, resolve_model_dir


@pytest.mark.parametrize(
    ("name", "low", "high"),
    [("small", 30_000, 150_000), ("medium", 250_000, 800_000), ("large", 2_000_000, 4_000_000)],
)
def test_denoisers_ship_with_their_cards_and_sizes(name, low, high):
    model_dir = PRETRAINED_DIR / name
    assert (model_dir / "diffusion_pytorch_model.safetensors").is_file()
    assert (model_dir / "scheduler_config.json").is_file()
    card = (model_dir / "README.md").read_text()
    assert "edgestage train " + name in card and "sha256" in card
    facts = json.loads((model_dir / "training.json").read_text())
    assert low <= facts["parameters"] <= high
    assert count_parameters(load_denoiser(name)) == facts["parameters"]


def test_classifier_ships_with_card():
    assert (PRETRAINED_DIR / "classifier" / "README.md").is_file()
    assert json.loads((PRETRAINED_DIR / "classifier" / "training.json").read_text())[
        "test_accuracy"] >= 0.95


def test_shipped_weights_are_trained_not_initial():
    trained = load_denoiser("small").state_dict()
    fresh = build_denoiser("small").state_dict()
    differs = [k for k in trained if not torch.equal(trained[k], fresh[k])]
    assert len(differs) > len(trained) // 2


@pytest.mark.parametrize("bad", ["huge", "/nonexistent/model", ""])
def test_unknown_model_is_a_value_error(bad):
    with pytest.raises(ValueError, match="unknown model"):
        resolve_model_dir(bad)
