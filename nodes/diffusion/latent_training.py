"""Training of the embedded latent text-to-image pipelines, `latent-large` and `latent-small`
(docs/latent-default.md), deterministic for a given seed on a given machine, in Stable Diffusion's
manner and its distilled sibling's:

1. the VAE (AutoencoderKL): an autoencoder of the digits, 16x16 images (the grey digit in all three
   channels, [-1, 1]) to 4x4x4 latents, reconstruction MSE plus a small KL term; its scaling factor
   is then set, as SD's was, to 1 / the standard deviation of the training latents;
2. the text encoder (CLIPTextModel, a tokenizer whose vocabulary is written here) jointly with the
   `large` UNet (UNet2DConditionModel, cross-attending to the text embeddings) on the diffusion
   loss (epsilon prediction, DDPM's linear betas) over the VAE's latents;
3. the `small` UNet on the same, now frozen, text encoder and VAE and the same noise schedule
   (plain denoising loss, no distillation).

The prompts say more than the class: "a bold right-slanted digit 7", the weight and slant bins of
each training image measured by nodes/diffusion/digit_attributes.py.  Each attribute word is left
out at random (so "a digit 7" works too), and the whole prompt is dropped (the empty prompt) for a
tenth of the images, so that classifier-free guidance works.

`train_latent(out_dir)` writes both pipeline folders (the VAE, text encoder, tokenizer and
scheduler byte-identical in both), each with `training.json`; `render_card` writes README.md from
it and from `quality.json` (analysis/latent_quality.py).  `edgestage train latent` does all three.
"""

from __future__ import annotations

import json
import platform
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, DDPMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from diffusers.training_utils import EMAModel

from nodes.diffusion import digit_attributes
from nodes.diffusion.architectures import count_parameters
from nodes.diffusion.digits import NUM_CLASSES, SPLIT_SEED, TEST_FRACTION, load_split
from nodes.diffusion.latent_scale_model import BOS, EOS, bpe_vocabulary
from nodes.diffusion.model_zoo import PRETRAINED_DIR, sha256_of
from nodes.diffusion.training import _deterministic, _lr_schedule
from nodes.progress import progress_bar

# One torch thread: on a shared 2-core machine at nice 19, two threads spent most of their time waiting
# for each other (a large-UNet step took 2.7 s with two threads, 0.63 s with one, under the same load)
LATENT_THREADS = 1
NAMES = ("latent-large", "latent-small")
UNET_OF = {"latent-large": "large", "latent-small": "small"}
SHARED = ("vae", "text_encoder", "tokenizer", "scheduler")
TOKENS = 12  # "a bold right-slanted digit 7" is 7 tokens, 9 with the start and end tokens
# whole-word tokens; the digits, "-" and any other character are single-character tokens already
WORDS = ("a", "digit", "thin", "regular", "bold", "left", "right", "slanted", "upright")

VAE_CONFIG: dict[str, Any] = {
    "sample_size": 16, "in_channels": 3, "out_channels": 3, "latent_channels": 4,
    "block_out_channels": (24, 48, 48), "down_block_types": ("DownEncoderBlock2D",) * 3,
    "up_block_types": ("UpDecoderBlock2D",) * 3, "layers_per_block": 1, "norm_num_groups": 8,
}
TEXT_CONFIG: dict[str, Any] = {
    "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
    "max_position_embeddings": TOKENS, "hidden_act": "quick_gelu",
}
_CROSS = ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D")
_CROSS_UP = ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D")
UNET_CONFIGS: dict[str, dict[str, Any]] = {
    name: {
        "sample_size": 4, "in_channels": 4, "out_channels": 4,
        "cross_attention_dim": TEXT_CONFIG["hidden_size"],
        "block_out_channels": channels, "down_block_types": _CROSS, "up_block_types": _CROSS_UP,
        "layers_per_block": 1, "attention_head_dim": heads, "norm_num_groups": 16,
    }
    for name, channels, heads in (("large", (64, 96), 8), ("small", (32, 48), 4))
}
# DDPM's betas (linear 1e-4 to 0.02 over 1000 steps), epsilon prediction; "trailing" spacing so that
# a short DDIM schedule starts from t = 999, pure noise
SCHEDULER_CONFIG: dict[str, Any] = {
    "num_train_timesteps": 1000, "beta_start": 0.0001, "beta_end": 0.02, "beta_schedule": "linear",
    "prediction_type": "epsilon", "clip_sample": False, "timestep_spacing": "trailing", "steps_offset": 1,
}


@dataclass(frozen=True)
class LatentRecipe:
    seed: int = 0
    vae_steps: int = 1000
    vae_batch: int = 64
    vae_lr: float = 1e-3
    kl_weight: float = 1e-3  # on the KL summed over the latent, per pixel of the image
    large_steps: int = 1500
    small_steps: int = 1600
    batch: int = 128
    lr: float = 1e-3
    ema_decay: float = 0.999
    prompt_dropout: float = 0.1  # the empty prompt, for classifier-free guidance
    attribute_dropout: float = 0.15  # each attribute word left out, independently


RECIPE = LatentRecipe()


def build_tokenizer():  # -> CLIPTokenizer
    from transformers import CLIPTokenizer

    vocab, merges = bpe_vocabulary(WORDS)
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=TOKENS)


def build_text_encoder():  # -> CLIPTextModel
    from transformers import CLIPTextConfig, CLIPTextModel

    vocab, _ = bpe_vocabulary(WORDS)
    config = CLIPTextConfig(vocab_size=len(vocab), bos_token_id=vocab[BOS], eos_token_id=vocab[EOS],
                            pad_token_id=vocab[EOS], **TEXT_CONFIG)
    return CLIPTextModel(config)


def prompt_table() -> list[str]:
    """Every prompt training uses: the empty one first, then per digit each choice of weight (or
    none) and slant (or none); `prompt_index` finds one."""
    table = [""]
    for digit in range(NUM_CLASSES):
        for weight in (None, 0, 1, 2):
            for lean in (None, 0, 1, 2):
                table.append(digit_attributes.prompt(digit, weight, lean))
    return table


def prompt_index(digits: torch.Tensor, weights: torch.Tensor, slants: torch.Tensor) -> torch.Tensor:
    """Indices into prompt_table(); a weight or slant of -1 is left out of the prompt."""
    return 1 + digits * 16 + (weights + 1) * 4 + (slants + 1)


def _shifts(images: torch.Tensor) -> torch.Tensor:
    """Each image translated by -1, 0, +1 pixels in each direction (9 x N images, shift-major)."""
    return torch.cat([torch.roll(images, shifts=(dy, dx), dims=(2, 3))
                      for dy in (-1, 0, 1) for dx in (-1, 0, 1)])


def _rgb(grey: torch.Tensor) -> torch.Tensor:
    return grey.expand(-1, 3, -1, -1).contiguous()


def _tail(losses: list[float]) -> float:
    tail = losses[-100:]
    return sum(tail) / len(tail)


def _train_vae(recipe: LatentRecipe, gen: torch.Generator) -> tuple[AutoencoderKL, dict[str, Any]]:
    images = _rgb(load_split("train").images)
    vae = AutoencoderKL(**VAE_CONFIG)
    optimizer = torch.optim.AdamW(vae.parameters(), lr=recipe.vae_lr, weight_decay=1e-4)
    schedule = _lr_schedule(optimizer, recipe.vae_steps)
    pixels = images[0].numel()
    recon_losses, kl_losses = [], []
    started = time.perf_counter()
    vae.train()
    for _ in progress_bar(range(recipe.vae_steps), desc="train latent vae", unit="step"):
        idx = torch.randint(0, len(images), (recipe.vae_batch,), generator=gen)
        dx, dy = (int(v) for v in torch.randint(-1, 2, (2,), generator=gen))
        batch = torch.roll(images[idx], shifts=(dy, dx), dims=(2, 3))
        posterior = vae.encode(batch).latent_dist
        latents = posterior.mean + posterior.std * torch.randn(posterior.mean.shape, generator=gen)
        recon = F.mse_loss(vae.decode(latents).sample, batch)
        kl = posterior.kl().mean() / pixels
        loss = recon + recipe.kl_weight * kl
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        recon_losses.append(recon.item())
        kl_losses.append(kl.item())
    wall = time.perf_counter() - started
    vae.eval().requires_grad_(False)
    return vae, {"wall_time_s": round(wall, 1), "final_recon_mse": _tail(recon_losses),
                 "final_kl_per_pixel": _tail(kl_losses)}


@torch.no_grad()
def vae_round_trip(vae: AutoencoderKL) -> dict[str, float]:
    """The test split through the VAE and back (posterior mean): PSNR, the first judge's class
    accuracy on the reconstructions, and how often their weight and slant bins are the originals':
    the ceiling of what the pipelines can show."""
    from analysis.quality import class_accuracy, psnr

    test = load_split("test")
    recon = vae.decode(vae.encode(_rgb(test.images)).latent_dist.mean).sample.clamp(-1, 1)
    grey = recon.mean(dim=1, keepdim=True)
    weight, lean = digit_attributes.bins(test.images, test.labels)
    weight_r, lean_r = digit_attributes.bins(grey, test.labels)
    return {
        "psnr_db": psnr(grey, test.images),
        "class_accuracy": class_accuracy(grey, test.labels),
        "weight_bin_kept": float((weight == weight_r).float().mean()),
        "slant_bin_kept": float((lean == lean_r).float().mean()),
    }


@dataclass
class _LatentData:
    mean: torch.Tensor  # N x 4 x 4 x 4, the posterior mean, unscaled
    std: torch.Tensor
    digits: torch.Tensor
    weights: torch.Tensor
    slants: torch.Tensor
    scaling_factor: float


@torch.no_grad()
def _latent_data(vae: AutoencoderKL) -> _LatentData:
    """The train split and its +-1 pixel shifts through the encoder, each with the digit, weight and
    slant bins of its unshifted image (shifting changes neither)."""
    train = load_split("train")
    weight, lean = digit_attributes.bins(train.images, train.labels)
    posterior = vae.encode(_rgb(_shifts(train.images))).latent_dist
    scaling = 1.0 / float(posterior.mean.std())
    return _LatentData(posterior.mean, posterior.std, train.labels.repeat(9), weight.repeat(9),
                       lean.repeat(9), scaling)


def _tokens(tokenizer) -> torch.Tensor:
    return tokenizer(prompt_table(), padding="max_length", max_length=TOKENS, truncation=True,
                     return_tensors="pt").input_ids


def _embed(text_encoder, ids: torch.Tensor) -> torch.Tensor:
    return text_encoder(ids)[0]


def _train_unet(name: str, data: _LatentData, recipe: LatentRecipe, gen: torch.Generator,
                ids: torch.Tensor, text_encoder=None, embeddings: torch.Tensor | None = None,
                steps: int = 0) -> tuple[UNet2DConditionModel, dict[str, Any]]:
    """`text_encoder` given: trained with the UNet; else `embeddings` (of every prompt) are fixed."""
    unet = UNet2DConditionModel(**UNET_CONFIGS[name])
    noise_schedule = DDPMScheduler.from_config(SCHEDULER_CONFIG)
    params = [*unet.parameters(), *(text_encoder.parameters() if text_encoder is not None else ())]
    optimizer = torch.optim.AdamW(params, lr=recipe.lr, weight_decay=1e-4)
    schedule = _lr_schedule(optimizer, steps)
    ema = EMAModel(params, decay=recipe.ema_decay, use_ema_warmup=True, power=2 / 3)
    losses = []
    started = time.perf_counter()
    unet.train()
    if text_encoder is not None:
        text_encoder.train()
    for _ in progress_bar(range(steps), desc=f"train latent {name}", unit="step"):
        idx = torch.randint(0, len(data.digits), (recipe.batch,), generator=gen)
        n = len(idx)
        keep_weight = torch.rand(n, generator=gen) >= recipe.attribute_dropout
        keep_slant = torch.rand(n, generator=gen) >= recipe.attribute_dropout
        prompts = prompt_index(data.digits[idx], torch.where(keep_weight, data.weights[idx], -1),
                               torch.where(keep_slant, data.slants[idx], -1))
        prompts = torch.where(torch.rand(n, generator=gen) < recipe.prompt_dropout, 0, prompts)
        latents = (data.mean[idx] + data.std[idx] * torch.randn(data.mean[idx].shape, generator=gen))
        latents = latents * data.scaling_factor
        noise = torch.randn(latents.shape, generator=gen)
        t = torch.randint(0, noise_schedule.config.num_train_timesteps, (n,), generator=gen)
        noisy = noise_schedule.add_noise(latents, noise, t)
        context = _embed(text_encoder, ids[prompts]) if text_encoder is not None else embeddings[prompts]
        loss = F.mse_loss(unet(noisy, t, encoder_hidden_states=context).sample, noise)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        schedule.step()
        ema.step(params)
        losses.append(loss.item())
    wall = time.perf_counter() - started
    ema.copy_to(params)
    unet.eval().requires_grad_(False)
    if text_encoder is not None:
        text_encoder.eval().requires_grad_(False)
    return unet, {"wall_time_s": round(wall, 1), "final_loss": _tail(losses)}


def train_latent(out_dir: Path = PRETRAINED_DIR, recipe: LatentRecipe = RECIPE) -> dict[str, Any]:
    """Train the pair and write `out_dir`/latent-large and `out_dir`/latent-small with their
    training.json (no README: render_card, after the quality is measured)."""
    with _deterministic(recipe.seed) as gen:
        torch.set_num_threads(LATENT_THREADS)  # _deterministic restores the caller's count after
        return _train_latent(Path(out_dir), recipe, gen)


def _train_latent(out_dir: Path, recipe: LatentRecipe, gen: torch.Generator) -> dict[str, Any]:
    started = time.perf_counter()
    vae, vae_facts = _train_vae(recipe, gen)
    data = _latent_data(vae)
    vae.register_to_config(scaling_factor=data.scaling_factor)
    vae_facts["round_trip"] = vae_round_trip(vae)
    print(f"latent vae: {vae_facts}", flush=True)
    tokenizer = build_tokenizer()
    ids = _tokens(tokenizer)
    text_encoder = build_text_encoder()
    large, large_facts = _train_unet("large", data, recipe, gen, ids, text_encoder=text_encoder,
                                     steps=recipe.large_steps)
    print(f"latent large + text encoder: {large_facts}", flush=True)
    with torch.no_grad():
        embeddings = _embed(text_encoder, ids)
    small, small_facts = _train_unet("small", data, recipe, gen, ids, embeddings=embeddings,
                                     steps=recipe.small_steps)
    wall = time.perf_counter() - started
    folders = {}
    for name, unet in (("latent-large", large), ("latent-small", small)):
        folder = out_dir / name
        if folder.exists():
            shutil.rmtree(folder)
        pipeline = StableDiffusionPipeline(
            vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
            scheduler=DDPMScheduler.from_config(SCHEDULER_CONFIG), safety_checker=None,
            feature_extractor=None, requires_safety_checker=False)
        pipeline.save_pretrained(folder, safe_serialization=True)
        vocab, merges = bpe_vocabulary(WORDS)
        (folder / "tokenizer" / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
        merges_text = "".join(f"{a} {b}\n" for a, b in merges)
        (folder / "tokenizer" / "merges.txt").write_text(f"#version: 0.2\n{merges_text}")
        folders[name] = folder
    for part in SHARED:  # one copy of each shared component, byte for byte, in both folders
        shutil.rmtree(folders["latent-small"] / part)
        shutil.copytree(folders["latent-large"] / part, folders["latent-small"] / part)
    facts = {
        "command": "edgestage train latent",
        "recipe": asdict(recipe),
        "threads": LATENT_THREADS,
        "wall_time_s": round(wall, 1),
        "parameters": {"vae": count_parameters(vae), "text_encoder": count_parameters(text_encoder),
                       "unet_large": count_parameters(large), "unet_small": count_parameters(small)},
        "latents": {"shape": [VAE_CONFIG["latent_channels"], 4, 4], "vae_factor": 4,
                    "scaling_factor": data.scaling_factor, "tokens": TOKENS,
                    "text_dim": TEXT_CONFIG["hidden_size"]},
        "vae": vae_facts,
        "unet_large_and_text_encoder": large_facts,
        "unet_small": small_facts,
        "data": {
            "source": "sklearn.datasets.load_digits, 8x8 upsampled bilinearly to 16x16, [-1, 1], the grey "
                      "digit in all 3 channels",
            "split": f"stratified train/test, test_fraction={TEST_FRACTION}, seed={SPLIT_SEED}",
            "train_images": len(load_split("train").labels),
            "test_images": len(load_split("test").labels),
            "diffusion_data": "the train split and its 8 one-pixel shifts (9 x 1437 latents), "
                              "prompts from digit_attributes' bins of the unshifted image",
        },
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                    "torch": torch.__version__},
    }
    for name, folder in folders.items():
        (folder / "training.json").write_text(json.dumps({"name": name, **facts}, indent=2) + "\n")
    return facts


def _weights(folder: Path) -> list[tuple[str, str, int]]:
    return [(str(path.relative_to(folder)), sha256_of(path), path.stat().st_size)
            for path in sorted(folder.glob("*/*.safetensors"))]


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def render_card(folder: Path) -> str:
    """README.md of a pipeline folder from its training.json and quality.json (where measured)."""
    folder = Path(folder)
    training = json.loads((folder / "training.json").read_text())
    name, recipe, params = training["name"], training["recipe"], training["parameters"]
    unet = UNET_OF[name]
    unet_config = UNET_CONFIGS[unet]
    machine = training["machine"]
    vae, large, small = training["vae"], training["unet_large_and_text_encoder"], training["unet_small"]
    lines = [
        f"# edgestage `{name}`",
        "",
        "Embedded default latent text-to-image pipeline of edgestage (Stable Diffusion's layout, trained "
        "here on this project's digits), a diffusers pipeline folder (StableDiffusionPipeline). "
        f"`latent-large` and `latent-small` share the VAE, text encoder, tokenizer and scheduler byte for "
        f"byte; this folder's UNet is `{unet}`. See docs/latent-default.md.",
        "",
        "Prompts: `a [thin|regular|bold] [left-slanted|upright|right-slanted] digit D` (either attribute may "
        "be left out); the bins are relative to the digit's own train images "
        "(nodes/diffusion/digit_attributes.py).",
        "",
        "## Components",
        f"- VAE (AutoencoderKL): 16x16x3 images in [-1, 1] <-> 4x4x4 latents (factor 4), block channels "
        f"{list(VAE_CONFIG['block_out_channels'])}, scaling factor "
        f"{training['latents']['scaling_factor']:.5f}; "
        f"{params['vae']:,} parameters",
        f"- Text encoder (CLIPTextModel): {TEXT_CONFIG['num_hidden_layers']} layers of "
        f"{TEXT_CONFIG['hidden_size']}, {TOKENS} tokens; {params['text_encoder']:,} parameters. Tokenizer: "
        f"CLIP's byte-level BPE, vocabulary written here ({len(WORDS)} whole words)",
        f"- UNet `{unet}` (UNet2DConditionModel): block channels {list(unet_config['block_out_channels'])}, "
        f"cross-attention at both levels; {params['unet_' + unet]:,} parameters",
        f"- Scheduler: DDPMScheduler, {SCHEDULER_CONFIG['beta_schedule']} betas "
        f"{SCHEDULER_CONFIG['beta_start']}-{SCHEDULER_CONFIG['beta_end']}, "
        f"{SCHEDULER_CONFIG['num_train_timesteps']} steps, {SCHEDULER_CONFIG['prediction_type']} prediction, "
        f"{SCHEDULER_CONFIG['timestep_spacing']} spacing",
        "",
        "## Training",
        f"- Command: `{training['command']}` (deterministic: seed {recipe['seed']}, {training['threads']} "
        f"torch thread{'s' if training['threads'] != 1 else ''}; trains both folders)",
        f"- VAE: {recipe['vae_steps']} steps, batch {recipe['vae_batch']}, AdamW lr {recipe['vae_lr']}, "
        f"MSE + {recipe['kl_weight']} x KL per pixel, +-1 pixel shifts; {vae['wall_time_s']} s; final "
        f"reconstruction MSE {vae['final_recon_mse']:.5f}, KL per pixel {vae['final_kl_per_pixel']:.4f}",
        f"- VAE round trip of the test split: PSNR {vae['round_trip']['psnr_db']:.2f} dB, class accuracy "
        f"{vae['round_trip']['class_accuracy']:.4f}, weight bin kept "
        f"{vae['round_trip']['weight_bin_kept']:.4f}, "
        f"slant bin kept {vae['round_trip']['slant_bin_kept']:.4f}",
        f"- Text encoder + UNet `large`: {recipe['large_steps']} steps, batch {recipe['batch']}, AdamW lr "
        f"{recipe['lr']} (warm-up + cosine), EMA {recipe['ema_decay']}; {large['wall_time_s']} s; final loss "
        f"{large['final_loss']:.4f}",
        f"- UNet `small` (text encoder and VAE frozen): {recipe['small_steps']} steps, same settings; "
        f"{small['wall_time_s']} s; final loss {small['final_loss']:.4f}",
        f"- Prompt dropout {recipe['prompt_dropout']} (classifier-free guidance), attribute-word dropout "
        f"{recipe['attribute_dropout']}",
        f"- Wall time, all of it: {training['wall_time_s']} s on {machine['processor']} "
        f"({machine['platform']}, "
        f"torch {machine['torch']}), at nice 19 on a shared 2-core machine",
        f"- Data: {training['data']['source']}; {training['data']['split']} "
        f"({training['data']['train_images']} "
        f"train / {training['data']['test_images']} test images); {training['data']['diffusion_data']}",
        "",
        "## Weights",
        "",
        "| file | bytes | sha256 |",
        "| --- | ---: | --- |",
        *(f"| `{path}` | {size:,} | `{digest}` |" for path, digest, size in _weights(folder)),
    ]
    quality_path = folder / "quality.json"
    if quality_path.is_file():
        quality = json.loads(quality_path.read_text())
        rows = quality["rows"]
        keys = list(dict.fromkeys(k for row in rows for k in row if k != "plan"))
        lines += ["", "## Quality (analysis/latent_quality.py)", f"Command: `{quality['command']}`", "",
                  quality["setting"], "",
                  "| plan | " + " | ".join(keys) + " |", "| --- |" + " ---: |" * len(keys),
                  *(f"| {row['plan']} | " + " | ".join(_fmt(row.get(k, "-")) for k in keys) + " |"
                    for row in rows)]
        if quality.get("note"):
            lines += ["", quality["note"]]
    text = "\n".join(lines) + "\n"
    (folder / "README.md").write_text(text)
    return text
