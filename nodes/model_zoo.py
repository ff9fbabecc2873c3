"""Where models live and how they load: the embedded defaults by name, anyone's by path.

Every model is a diffusers `save_pretrained` directory (config.json + safetensors). A denoiser
directory also carries the `scheduler_config.json` of the noise schedule it was trained on.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path

from diffusers import DDPMScheduler, UNet2DModel

from nodes.architectures import DENOISER_NAMES, DigitClassifier

PRETRAINED_DIR = Path(__file__).resolve().parent / "pretrained"
CLASSIFIER_NAME = "classifier"


def resolve_model_dir(name_or_path: str) -> Path:
    """A default model's name (small, medium, large, classifier) or a model directory's path."""
    if name_or_path in (*DENOISER_NAMES, CLASSIFIER_NAME):
        path = PRETRAINED_DIR / name_or_path
        if not (path / "config.json").is_file():
            raise ValueError(f"default model {name_or_path!r} is missing from {PRETRAINED_DIR}")
        return path
    path = Path(name_or_path)
    if (path / "config.json").is_file():
        return path.resolve()
    raise ValueError(
        f"unknown model {name_or_path!r}: not one of {', '.join(DENOISER_NAMES)} "
        "nor a diffusers model directory (with config.json)"
    )


@lru_cache(maxsize=8)
def load_denoiser(name_or_path: str) -> UNet2DModel:
    path = resolve_model_dir(name_or_path)
    try:
        model = UNet2DModel.from_pretrained(path)
    except (OSError, TypeError, KeyError) as exc:
        raise ValueError(f"model {name_or_path!r} at {path} does not load as a UNet2DModel: {exc}") from exc
    return model.eval().requires_grad_(False)


def load_noise_schedule(name_or_path: str) -> DDPMScheduler:
    path = resolve_model_dir(name_or_path)
    if not (path / "scheduler_config.json").is_file():
        raise ValueError(f"model {name_or_path!r} has no scheduler_config.json at {path}")
    return DDPMScheduler.from_pretrained(path)


@lru_cache(maxsize=1)
def load_classifier(name_or_path: str = CLASSIFIER_NAME) -> DigitClassifier:
    path = resolve_model_dir(name_or_path)
    return DigitClassifier.from_pretrained(path).eval().requires_grad_(False)


def weights_file(model_dir: Path) -> Path:
    return next(model_dir.glob("*.safetensors"))


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def default_models() -> list[dict]:
    """Name, directory, parameter count, weight size and checksum of each embedded model found."""
    found = []
    for name in (*DENOISER_NAMES, CLASSIFIER_NAME):
        path = PRETRAINED_DIR / name
        if not (path / "config.json").is_file():
            continue
        weights = weights_file(path)
        found.append(
            {
                "name": name,
                "path": str(path),
                "weights_bytes": weights.stat().st_size,
                "sha256": sha256_of(weights),
            }
        )
    return found
