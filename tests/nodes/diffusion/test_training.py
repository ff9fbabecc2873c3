"""Training is deterministic: the same recipe twice gives the same weights (a short recipe here;
the full runs are `edgestage train NAME`, not part of the tests)."""

import json

import torch
from safetensors.torch import load_file

from nodes.diffusion.training import TrainingRecipe, train_classifier, train_denoiser


def _weights(path):
    return load_file(next(path.glob("*.safetensors")))


def test_same_recipe_same_weights(tmp_path):
    recipe = TrainingRecipe(steps=4, batch_size=16, learning_rate=1e-3, seed=3)
    train_denoiser("small", tmp_path / "a", recipe)
    train_denoiser("small", tmp_path / "b", recipe)
    a, b = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    facts = json.loads((tmp_path / "a" / "training.json").read_text())
    assert facts["recipe"]["steps"] == 4 and facts["command"] == "edgestage train small"


def test_other_seed_other_weights(tmp_path):
    train_classifier(tmp_path / "a", TrainingRecipe(steps=3, batch_size=16, learning_rate=1e-3, seed=1))
    train_classifier(tmp_path / "b", TrainingRecipe(steps=3, batch_size=16, learning_rate=1e-3, seed=2))
    a, b = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    assert any(not torch.equal(a[k], b[k]) for k in a)
