"""Where models live and how they load: the embedded defaults by name, anyone's by path.

Every model is a diffusers `save_pretrained` directory (config.json + safetensors). A denoiser
directory also carries the `scheduler_config.json` of the noise schedule it was trained on.

`check_denoiser_dir` looks at a denoiser directory without loading it (no torch, no diffusers:
scenario validation calls it for every model of every role), so that a directory that cannot
load is refused before anything starts; `load_denoiser` checks the same first.

A latent text-to-image pipeline folder (diffusers' `model_index.json` layout: docs/latent-pipelines.md)
is a model too, named like a denoiser directory of one's own, by its path, in a host's models and
in plans.  `is_pipeline_folder` tells the two kinds apart, `check_model` checks either, and
`plan_kind` refuses a plan that mixes them or whose pipelines do not share one latent space
(nodes/diffusion/latent_folders.py check_compatible).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from nodes.diffusion import latent_folders
from nodes.planning.plan import Plan

if TYPE_CHECKING:  # torch and diffusers are imported where a model is loaded, not to check one
    from diffusers import DDPMScheduler, UNet2DModel

    from nodes.diffusion.architectures import DigitClassifier

PRETRAINED_DIR = Path(__file__).resolve().parents[1] / "pretrained"  # nodes/pretrained
CLASSIFIER_NAME = "classifier"
GATE_NAME = "gate"  # the cascade's own classifier, on the device (not the judge of quality)
# nodes.diffusion.architectures.DENOISER_NAMES, spelled out so that checking a model needs no torch (a test
# keeps them in step)
DENOISER_NAMES = ("small", "medium", "large")
# what every denoiser of the testbed draws: one grey channel of nodes.diffusion.digits.IMAGE_SIZE pixels,
# conditioned on nodes.diffusion.digits.NUM_CLASSES labels
_DENOISER_SHAPE = {"in_channels": 1, "out_channels": 1, "sample_size": 16, "num_class_embeds": 10}


@dataclass(frozen=True)
class SampleShape:
    """What a denoiser draws, read from its config (diffusers: the config travels with the
    weights): channels x height x width per image, and how many class labels it is conditioned on."""

    channels: int
    height: int
    width: int
    classes: int

    @classmethod
    def of(cls, config: Mapping[str, Any]) -> SampleShape:
        size = config["sample_size"]
        height, width = (size, size) if isinstance(size, int) else tuple(size)
        return cls(int(config["in_channels"]), int(height), int(width), int(config["num_class_embeds"]))

    def batch(self, n: int) -> tuple[int, int, int, int]:
        return (n, self.channels, self.height, self.width)

    def tensor_bytes(self, n: int) -> int:
        """A float32 batch of n samples."""
        return n * self.channels * self.height * self.width * 4


def resolve_model_dir(name_or_path: str) -> Path:
    """A default model's name (small, medium, large, classifier, gate) or a model directory's path."""
    if name_or_path in (*DENOISER_NAMES, CLASSIFIER_NAME, GATE_NAME):
        path = PRETRAINED_DIR / name_or_path
        if not (path / "config.json").is_file():
            raise ValueError(f"default model {name_or_path!r} is missing from {PRETRAINED_DIR} "
                             f"(edgestage train {name_or_path})")
        return path
    path = Path(name_or_path)
    if (path / "config.json").is_file():
        return path.resolve()
    raise ValueError(
        f"unknown model {name_or_path!r}: not one of {', '.join(DENOISER_NAMES)} "
        "nor a diffusers model directory (config.json) or pipeline folder (model_index.json)"
    )


def is_pipeline_folder(name_or_path: str) -> bool:
    """Whether a model names a latent pipeline folder (a directory with model_index.json) rather
    than a pixel denoiser (a default name or a directory with config.json)."""
    if name_or_path in (*DENOISER_NAMES, CLASSIFIER_NAME, GATE_NAME):
        return False
    from nodes.diffusion.latent_scale_model import SCALE_NAMES  # torch-free: the names only

    return (name_or_path in SCALE_NAMES or name_or_path in latent_folders.EMBEDDED_PIPELINES
            or (Path(name_or_path) / "model_index.json").is_file())


def check_model(name_or_path: str) -> Path:
    """A model a host may hold: a denoiser (check_denoiser_dir) or a latent pipeline folder
    (latent_folders.latent_space: every component there and consistent).  No torch; ValueError
    naming the model."""
    if is_pipeline_folder(name_or_path):
        latent_folders.latent_space(name_or_path)
        return Path(name_or_path).resolve()
    return check_denoiser_dir(name_or_path)


ModelKind = Literal["pixel", "latent"]


def plan_kind(models: Sequence[str]) -> ModelKind:
    """What a plan's models are: all pixel denoisers, or all latent pipelines that share one latent
    space and noise schedule.  ValueError with one line where they are mixed or incompatible."""
    return _plan_kind(tuple(models))


def plan_models_kind(plan: Plan) -> ModelKind:
    """plan_kind of a plan's models, and its placement of text encoding and decoding (zero-step
    stages, `encode=each`: nodes/planning/plan.py) checked against them: a latent pipeline's only,
    and `encode=each` only where the plan's pipelines hold the same text encoder and tokenizer
    (every host then computes the embeddings the first would have sent).  ValueError, one line."""
    kind = plan_kind(plan.models())
    placed = plan.encode_each or len(plan.denoising) != len(plan.stages)
    if kind == "pixel" and placed:
        raise ValueError(f"plan {plan}: zero-step stages and encode=each place a latent pipeline's text "
                         "encoding and decoding; pixel models have neither")
    folders = list(dict.fromkeys(plan.models()))
    if plan.encode_each and not all(latent_folders.share_component(folders, c)
                                    for c in ("text_encoder", "tokenizer")):
        raise ValueError(f"plan {plan}: encode=each needs the same text encoder and tokenizer in every "
                         "pipeline of the plan, and these differ")
    return kind


@lru_cache(maxsize=256)
def _plan_kind(models: tuple[str, ...]) -> ModelKind:
    latent = [m for m in models if is_pipeline_folder(m)]
    if not latent:
        return "pixel"
    pixel = [m for m in models if m not in latent]
    if pixel:
        raise ValueError(f"a plan cannot mix pixel and latent models: {pixel[0]!r} is a pixel denoiser, "
                         f"{latent[0]!r} a latent pipeline")
    latent_folders.check_compatible(list(dict.fromkeys(latent)))
    return "latent"


def _json_object(path: Path, name: str) -> dict:
    try:
        data = json.loads(path.read_bytes())
    except OSError as exc:
        raise ValueError(f"model {name!r}: cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ValueError(f"model {name!r}: {path} is not JSON (not UTF-8 text)") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"model {name!r}: {path} is not JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(data, dict):
        raise ValueError(f"model {name!r}: {path} is not a JSON object")
    return data


def check_denoiser_dir(name_or_path: str) -> Path:
    """The directory of a denoiser that looks loadable: config.json a UNet2DModel of the testbed's
    shape, safetensors weights, scheduler_config.json.  ValueError naming the model otherwise."""
    path = resolve_model_dir(name_or_path)
    denoiser_config(name_or_path)
    if not any(path.glob("*.safetensors")):
        raise ValueError(f"model {name_or_path!r}: no weights (*.safetensors) in {path}")
    _json_object(path / "scheduler_config.json", name_or_path)
    return path


def denoiser_config(name_or_path: str) -> dict:
    """A denoiser's config.json, checked to be a UNet2DModel of the testbed's shape (no torch:
    nodes.diffusion.executor.SampleShape.of reads the shape from it).  ValueError naming the model."""
    path = resolve_model_dir(name_or_path)
    config = _json_object(path / "config.json", name_or_path)
    if config.get("_class_name") != "UNet2DModel":
        raise ValueError(f"model {name_or_path!r}: {path / 'config.json'} describes "
                         f"{config.get('_class_name')!r}, not a UNet2DModel denoiser")
    for key, expected in _DENOISER_SHAPE.items():
        if config.get(key) != expected or isinstance(config.get(key), bool):
            raise ValueError(f"model {name_or_path!r}: {path / 'config.json'} has {key} = "
                             f"{config.get(key)!r}; the testbed's denoisers have {expected}")
    return config


@lru_cache(maxsize=8)
def load_denoiser(name_or_path: str) -> UNet2DModel:
    from diffusers import UNet2DModel

    path = check_denoiser_dir(name_or_path)
    try:
        model = UNet2DModel.from_pretrained(path, use_safetensors=True)
    except (OSError, TypeError, KeyError, ValueError, RuntimeError) as exc:
        raise ValueError(f"model {name_or_path!r} at {path} does not load as a UNet2DModel: "
                         f"{_first_sentence(exc)}") from exc
    return model.eval().requires_grad_(False)


def load_noise_schedule(name_or_path: str) -> DDPMScheduler:
    from diffusers import DDPMScheduler

    path = resolve_model_dir(name_or_path)
    if not (path / "scheduler_config.json").is_file():
        raise ValueError(f"model {name_or_path!r} has no scheduler_config.json at {path}")
    try:
        return DDPMScheduler.from_pretrained(path)
    except (OSError, TypeError, KeyError, ValueError) as exc:
        raise ValueError(f"model {name_or_path!r}: its scheduler_config.json does not load: "
                         f"{_first_sentence(exc)}") from exc


def _first_sentence(exc: BaseException) -> str:
    """The gist of a library's error: its first line, cut after the first sentence."""
    text = str(exc).strip()
    first = text.splitlines()[0] if text else type(exc).__name__
    cut = first.find(". ")
    return first[: cut + 1] if cut > 0 else first


@lru_cache(maxsize=2)
def load_classifier(name_or_path: str = CLASSIFIER_NAME) -> DigitClassifier:
    from nodes.diffusion.architectures import DigitClassifier

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
    for name in (*DENOISER_NAMES, CLASSIFIER_NAME, GATE_NAME):
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
