"""Latent text-to-image pipeline folders, looked at without loading them (no torch, no diffusers):
is a directory a pipeline folder, the latent space it works in, whether several pipelines can
share one plan, and how many bytes cross a link at each kind of boundary.

A pipeline folder is diffusers' layout (StableDiffusionPipeline.save_pretrained): model_index.json
naming each component, and a folder per component with its config (and weights).  Scenario
validation will call these for every model of every role, before anything starts, so they read
JSON only and raise ValueError with one line naming the folder and what is wrong.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

# component -> (the classes model_index.json may name for it, its config file, whether it has weights)
COMPONENTS: dict[str, tuple[tuple[str, ...] | None, str, bool]] = {
    "unet": (("UNet2DConditionModel",), "config.json", True),
    "vae": (("AutoencoderKL",), "config.json", True),
    "text_encoder": (("CLIPTextModel",), "config.json", True),
    "tokenizer": (("CLIPTokenizer", "CLIPTokenizerFast"), "tokenizer_config.json", False),
    # any diffusers scheduler: what counts is its config, the noise schedule
    "scheduler": (None, "scheduler_config.json", False),
}

# The scheduler config fields that make the noise schedule and its timestep grid: every stage builds
# its sampler from its own folder's config, so these must agree (diffusers' defaults where a config
# is silent).  Any other field two configs both state must agree too (check_compatible).
SCHEDULE_DEFAULTS: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "beta_start": 0.0001,
    "beta_end": 0.02,
    "beta_schedule": "linear",
    "trained_betas": None,
    "prediction_type": "epsilon",
    "timestep_spacing": "leading",
    "steps_offset": 0,
    "rescale_betas_zero_snr": False,
}
# fields of scheduler configs that say nothing about the schedule (PNDM's own switch, bookkeeping)
_NOT_SCHEDULE = ("skip_prk_steps",)

DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "uint8": 1}
TOKEN_ID_BYTES = 8  # tokenizers return int64 ids


def _json_object(path: Path, folder: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_bytes())
    except FileNotFoundError:
        raise ValueError(f"pipeline folder {folder}: no {path.relative_to(folder)}") from None
    except OSError as exc:
        raise ValueError(f"pipeline folder {folder}: cannot read {path.relative_to(folder)}: "
                         f"{exc.strerror or exc}") from None
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ValueError(f"pipeline folder {folder}: {path.relative_to(folder)} is not JSON "
                         f"({exc.__class__.__name__})") from None
    if not isinstance(data, dict):
        raise ValueError(f"pipeline folder {folder}: {path.relative_to(folder)} is not a JSON object")
    return data


# the embedded latent default's pipelines, by name (nodes/pretrained/<name>, trained here)
EMBEDDED_PIPELINES = ("latent-large", "latent-small")
PRETRAINED_DIR = Path(__file__).resolve().parents[1] / "pretrained"


def pipeline_path(name_or_path: Path | str) -> Path:
    """A pipeline folder's path: the embedded default's name (`latent-large`, `latent-small`) is its
    folder in nodes/pretrained; a scale model's name (`sd15-scale-large`, ...:
    nodes/diffusion/latent_scale_model.py SCALE_NAMES) is its folder, built on first use; any other
    name is a path."""
    from nodes.diffusion.latent_scale_model import SCALE_NAMES, materialize

    name = str(name_or_path)
    if name in EMBEDDED_PIPELINES:
        return PRETRAINED_DIR / name
    return materialize(name) if name in SCALE_NAMES else Path(name_or_path)


def check_folder(path: Path | str, components: Iterable[str] = COMPONENTS) -> Path:
    """The resolved folder, where it is a pipeline folder with each of `components` (default: all)
    named in model_index.json as the expected class, with a readable config and its weights.
    ValueError with one line naming the folder and the first problem otherwise."""
    folder = pipeline_path(path)
    if not folder.is_dir():
        raise ValueError(f"pipeline folder {folder}: not a directory")
    folder = folder.resolve()
    if not (folder / "model_index.json").is_file():
        raise ValueError(f"pipeline folder {folder}: no model_index.json (not a diffusers pipeline folder)")
    index = _json_object(folder / "model_index.json", folder)
    for name in components:
        if name not in COMPONENTS:
            raise ValueError(f"unknown pipeline component {name!r}: one of {', '.join(COMPONENTS)}")
        classes, config_file, has_weights = COMPONENTS[name]
        entry = index.get(name)
        if not (isinstance(entry, list) and len(entry) == 2 and all(isinstance(e, str) for e in entry)):
            raise ValueError(f"pipeline folder {folder}: model_index.json has no {name} component")
        if classes and entry[1] not in classes:
            raise ValueError(f"pipeline folder {folder}: its {name} is a {entry[1]}, not a {classes[0]}")
        if not (folder / name).is_dir():
            raise ValueError(f"pipeline folder {folder}: component folder {name}/ is missing")
        _json_object(folder / name / config_file, folder)
        if has_weights and not any((folder / name).glob("*.safetensors")):
            raise ValueError(f"pipeline folder {folder}: no weights (*.safetensors) in {name}/")
        if name == "tokenizer" and not (
            (folder / name / "tokenizer.json").is_file()
            or all((folder / name / f).is_file() for f in ("vocab.json", "merges.txt"))
        ):
            raise ValueError(f"pipeline folder {folder}: tokenizer/ has neither tokenizer.json nor "
                             "vocab.json + merges.txt")
    return folder


@dataclass(frozen=True)
class LatentSpace:
    """What a pipeline's stages exchange, read from its configs: the latents (channels x height x
    width, the VAE's factor and scaling), the images the VAE decodes them to, the prompt embeddings
    (tokens x dims) and the noise schedule."""

    latent_channels: int
    latent_height: int
    latent_width: int
    vae_factor: int
    scaling_factor: float
    image_channels: int
    text_tokens: int
    text_dim: int
    schedule: tuple[tuple[str, Any], ...]

    @property
    def image_height(self) -> int:
        return self.latent_height * self.vae_factor

    @property
    def image_width(self) -> int:
        return self.latent_width * self.vae_factor

    def latents_shape(self, n: int) -> tuple[int, int, int, int]:
        return (n, self.latent_channels, self.latent_height, self.latent_width)

    def latents_bytes(self, n: int = 1, dtype: str = "float32") -> int:
        return n * self.latent_channels * self.latent_height * self.latent_width * DTYPE_BYTES[dtype]

    def embeddings_bytes(self, n: int = 1, dtype: str = "float32", guidance: bool = True) -> int:
        """With classifier-free guidance, the unconditional embeddings travel too (2 per image)."""
        return n * (2 if guidance else 1) * self.text_tokens * self.text_dim * DTYPE_BYTES[dtype]

    def token_bytes(self, n: int = 1) -> int:
        """The prompts as token ids (padded to the tokenizer's length; a negative prompt doubles
        it); the UTF-8 text itself is smaller still."""
        return n * self.text_tokens * TOKEN_ID_BYTES

    def image_bytes(self, n: int = 1, dtype: str = "float32") -> int:
        return n * self.image_channels * self.image_height * self.image_width * DTYPE_BYTES[dtype]


def _size(value: Any, what: str, folder: Path) -> tuple[int, int]:
    if isinstance(value, int) and not isinstance(value, bool):
        return value, value
    if isinstance(value, list) and len(value) == 2 and all(isinstance(v, int) for v in value):
        return value[0], value[1]
    raise ValueError(f"pipeline folder {folder}: {what} {value!r} is not a size")


def latent_space(path: Path | str) -> LatentSpace:
    """A checked pipeline folder's latent space; ValueError where its own components disagree
    (UNet channels vs the VAE's latent channels, UNet cross-attention vs the text encoder's width,
    UNet sample size vs the VAE's image size and factor, tokenizer length vs position embeddings)."""
    folder = check_folder(path)
    unet = _json_object(folder / "unet" / "config.json", folder)
    vae = _json_object(folder / "vae" / "config.json", folder)
    text = _json_object(folder / "text_encoder" / "config.json", folder)
    tokenizer = _json_object(folder / "tokenizer" / "tokenizer_config.json", folder)
    schedule = _json_object(folder / "scheduler" / "scheduler_config.json", folder)
    try:
        channels = int(vae["latent_channels"])
        factor = 2 ** (len(vae["block_out_channels"]) - 1)  # what StableDiffusionPipeline uses
        height, width = _size(unet["sample_size"], "unet sample_size", folder)
        space = LatentSpace(
            latent_channels=channels, latent_height=height, latent_width=width, vae_factor=factor,
            scaling_factor=float(vae.get("scaling_factor", 0.18215)),
            image_channels=int(vae.get("out_channels", 3)),
            text_tokens=int(tokenizer["model_max_length"]), text_dim=int(text["hidden_size"]),
            schedule=tuple(sorted(_schedule(schedule).items())),
        )
        pairs = [
            ("unet in_channels", unet["in_channels"], "vae latent_channels", channels),
            ("unet out_channels", unet["out_channels"], "vae latent_channels", channels),
            ("unet cross_attention_dim", unet["cross_attention_dim"], "text_encoder hidden_size",
             space.text_dim),
            ("unet sample_size x vae factor", [height * factor, width * factor], "vae sample_size",
             list(_size(vae["sample_size"], "vae sample_size", folder))),
        ]
        positions = int(text["max_position_embeddings"])
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, ValueError) and str(exc).startswith("pipeline folder"):
            raise
        raise ValueError(f"pipeline folder {folder}: a config lacks or mangles {exc}") from None
    for left, a, right, b in pairs:
        if a != b:
            raise ValueError(f"pipeline folder {folder}: {left} {a} != {right} {b}")
    if space.text_tokens > positions:
        raise ValueError(f"pipeline folder {folder}: tokenizer model_max_length {space.text_tokens} > "
                         f"text_encoder max_position_embeddings {positions}")
    return space


def _schedule(config: dict[str, Any]) -> dict[str, Any]:
    """The scheduler config's fields that describe the schedule, defaults filled in."""
    stated = {k: v for k, v in config.items() if not k.startswith("_") and k not in _NOT_SCHEDULE}
    return {**SCHEDULE_DEFAULTS, **stated}


def check_compatible(folders: Sequence[Path | str]) -> LatentSpace:
    """The one latent space that `folders` (the pipelines of one plan) share: the same latents
    (channels, size, VAE factor and scaling factor), images, prompt embeddings (tokens and width)
    and noise schedule (SCHEDULE_DEFAULTS' fields, and every other field two scheduler configs
    both state).  ValueError with one line naming the two folders, the field and both values."""
    if not folders:
        raise ValueError("no pipeline folders to compare")
    spaces = [latent_space(folder) for folder in folders]
    first, reference = folders[0], spaces[0]
    for folder, space in zip(folders[1:], spaces[1:], strict=True):
        for name in ("latent_channels", "latent_height", "latent_width", "vae_factor", "scaling_factor",
                     "image_channels", "text_tokens", "text_dim"):
            a, b = getattr(reference, name), getattr(space, name)
            if a != b:
                raise ValueError(f"pipelines {first} and {folder} do not share a latent space: "
                                 f"{name} {a} vs {b}")
        ours, theirs = dict(reference.schedule), dict(space.schedule)
        for key in sorted(ours.keys() & theirs.keys()):
            if ours[key] != theirs[key]:
                raise ValueError(f"pipelines {first} and {folder} have different noise schedules: "
                                 f"scheduler {key} {ours[key]!r} vs {theirs[key]!r}")
    return reference


def crossing_bytes(path: Path | str, n: int = 1, dtype: str = "float16", guidance: bool = True,
                   solver_history: int = 0) -> dict[str, int]:
    """Bytes of the tensors that cross each kind of boundary for `n` images, at `dtype`:
    - prompt: its token ids (the text itself is smaller still; a negative prompt doubles it);
    - embeddings: text encoder -> first denoiser (conditional and, with guidance, unconditional);
    - latents: the latents alone;
    - handoff: denoiser -> denoiser: the latents, the embeddings the next stage conditions on, and
      `solver_history` latents-sized tensors of the sampler's state (DPM-Solver++ 2M: up to 2);
    - pixels: the decoded images, at `dtype`; pixels_uint8: the same as 8-bit images."""
    space = latent_space(path)
    latents = space.latents_bytes(n, dtype)
    embeddings = space.embeddings_bytes(n, dtype, guidance)
    return {
        "prompt": space.token_bytes(n),
        "embeddings": embeddings,
        "latents": latents,
        "handoff": latents * (1 + solver_history) + embeddings,
        "pixels": space.image_bytes(n, dtype),
        "pixels_uint8": space.image_bytes(n, "uint8"),
    }


def share_component(folders: Sequence[Path | str], component: str) -> bool:
    """Whether the pipelines hold byte-identical `component` folders (every file, by content): a
    plan may then run that component on any of their hosts and compute the same."""
    return len({_component_digest(str(pipeline_path(f).resolve()), component) for f in folders}) <= 1


@lru_cache(maxsize=64)
def _component_digest(folder: str, component: str) -> str:
    digest = hashlib.sha256()
    root = Path(folder) / component
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(root)).encode())
        with path.open("rb") as stream:
            for block in iter(lambda: stream.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()
