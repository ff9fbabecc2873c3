"""Training of the embedded models, deterministic for a given seed on a given machine.

`edgestage train NAME` reproduces a shipped model: same seed, same thread count, same code ->
the same weights. Each run writes `training.json` beside the weights; the model card is rendered
from it (see nodes/diffusion/model_cards.py).
"""

from __future__ import annotations

import contextlib
import json
import platform
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers.training_utils import EMAModel

from nodes.diffusion.architectures import (
    DENOISER_NAMES,
    DigitClassifier,
    build_denoiser,
    count_parameters,
    training_noise_schedule,
)
from nodes.diffusion.digits import SPLIT_SEED, TEST_FRACTION, load_split
from nodes.progress import progress_bar

TRAIN_THREADS = 2  # fixed so that the reduction order, and so the weights, do not vary


@dataclass(frozen=True)
class TrainingRecipe:
    steps: int
    batch_size: int
    learning_rate: float
    seed: int = 0
    ema_decay: float = 0.999


RECIPES: dict[str, TrainingRecipe] = {
    "small": TrainingRecipe(steps=2500, batch_size=128, learning_rate=2e-3),
    "medium": TrainingRecipe(steps=1500, batch_size=96, learning_rate=1.5e-3),
    "large": TrainingRecipe(steps=1200, batch_size=64, learning_rate=1.5e-3),
    "classifier": TrainingRecipe(steps=1500, batch_size=128, learning_rate=2e-3, ema_decay=0.0),
    # the cascade's gate on the device: narrower, fewer steps, another seed, so that it is not the
    # judge of class accuracy under another name (a gate that is the judge passes exactly the
    # images the judge will count as right)
    "gate": TrainingRecipe(steps=600, batch_size=128, learning_rate=2e-3, seed=1, ema_decay=0.0),
}
CLASSIFIER_WIDTH = {"classifier": 64, "gate": 16}  # DigitClassifier.feature_dim


@contextlib.contextmanager
def _deterministic(seed: int) -> Iterator[torch.Generator]:
    """Seeded, deterministic kernels, fixed threads; the caller's settings come back after."""
    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(TRAIN_THREADS)
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(seed)
    try:
        yield torch.Generator().manual_seed(seed)
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)


def _lr_schedule(optimizer: torch.optim.Optimizer, steps: int) -> torch.optim.lr_scheduler.LRScheduler:
    warmup = max(1, steps // 20)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, steps - warmup)
        return 0.5 * (1.0 + torch.cos(torch.tensor(progress * torch.pi)).item())

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _shift(images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random +-1 pixel translation: cheap augmentation for a 1,437-image train split."""
    dx, dy = (int(v) for v in torch.randint(-1, 2, (2,), generator=gen))
    return torch.roll(images, shifts=(dy, dx), dims=(2, 3))


def train_denoiser(name: str, out_dir: Path, recipe: TrainingRecipe | None = None) -> dict:
    if name not in DENOISER_NAMES:
        raise ValueError(f"unknown denoiser {name!r}: expected one of {', '.join(DENOISER_NAMES)}")
    recipe = recipe or RECIPES[name]
    with _deterministic(recipe.seed) as gen:
        return _train_denoiser(name, out_dir, recipe, gen)


def _train_denoiser(name: str, out_dir: Path, recipe: TrainingRecipe, gen: torch.Generator) -> dict:
    data = load_split("train")
    model = build_denoiser(name)
    schedule = training_noise_schedule()
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.learning_rate, weight_decay=1e-4)
    lr_sched = _lr_schedule(optimizer, recipe.steps)
    ema = EMAModel(model.parameters(), decay=recipe.ema_decay, use_ema_warmup=True, power=2 / 3)
    started = time.perf_counter()
    losses = []
    model.train()
    for _ in progress_bar(range(recipe.steps), desc=f"train {name}", unit="step"):
        idx = torch.randint(0, len(data.labels), (recipe.batch_size,), generator=gen)
        clean, labels = data.images[idx], data.labels[idx]
        noise = torch.randn(clean.shape, generator=gen)
        t = torch.randint(0, schedule.config.num_train_timesteps, (len(idx),), generator=gen)
        noisy = schedule.add_noise(clean, noise, t)
        loss = F.mse_loss(model(noisy, t, class_labels=labels).sample, noise)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        lr_sched.step()
        ema.step(model.parameters())
        losses.append(loss.item())
    wall = time.perf_counter() - started
    ema.copy_to(model.parameters())
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    schedule.save_pretrained(out_dir)
    tail = losses[-100:]
    return _write_facts(out_dir, name, model, recipe, wall, {"final_loss": sum(tail) / len(tail)})


def train_classifier(out_dir: Path, recipe: TrainingRecipe | None = None, name: str = "classifier") -> dict:
    """`classifier` (the judge of quality) or `gate` (the cascade's, on the device)."""
    recipe = recipe or RECIPES[name]
    with _deterministic(recipe.seed) as gen:
        return _train_classifier(out_dir, recipe, gen, name)


def _train_classifier(out_dir: Path, recipe: TrainingRecipe, gen: torch.Generator, name: str) -> dict:
    data = load_split("train")
    model = DigitClassifier(feature_dim=CLASSIFIER_WIDTH[name])
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.learning_rate, weight_decay=1e-4)
    lr_sched = _lr_schedule(optimizer, recipe.steps)
    started = time.perf_counter()
    model.train()
    for _ in progress_bar(range(recipe.steps), desc=f"train {name}", unit="step"):
        idx = torch.randint(0, len(data.labels), (recipe.batch_size,), generator=gen)
        images = _shift(data.images[idx], gen)
        # light noise so that the judge is not thrown by the grain of generated samples
        images = images + 0.1 * torch.randn(images.shape, generator=gen)
        loss = F.cross_entropy(model(images), data.labels[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        lr_sched.step()
    wall = time.perf_counter() - started
    model.eval()
    test = load_split("test")
    with torch.no_grad():
        accuracy = (model(test.images).argmax(1) == test.labels).float().mean().item()
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    return _write_facts(out_dir, name, model, recipe, wall, {"test_accuracy": accuracy})


def _write_facts(
    out_dir: Path, name: str, model: torch.nn.Module, recipe: TrainingRecipe, wall: float, extra: dict
) -> dict:
    facts = {
        "name": name,
        "parameters": count_parameters(model),
        "recipe": asdict(recipe),
        "wall_time_s": round(wall, 1),
        "threads": TRAIN_THREADS,
        "data": {
            "source": "sklearn.datasets.load_digits, 8x8 upsampled bilinearly to 16x16, [-1, 1]",
            "split": f"stratified train/test, test_fraction={TEST_FRACTION}, seed={SPLIT_SEED}",
            "train_images": len(load_split("train").labels),
            "test_images": len(load_split("test").labels),
        },
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "torch": torch.__version__,
        },
        "command": f"edgestage train {name}",
        **extra,
    }
    (out_dir / "training.json").write_text(json.dumps(facts, indent=2) + "\n")
    return facts
