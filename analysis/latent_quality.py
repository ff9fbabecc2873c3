"""Quality of a latent pipeline's digits (the embedded `latent-large` / `latent-small`,
docs/latent-default.md), for images generated along a latent plan from prompts that name a digit,
a stroke weight and a slant ("a bold right-slanted digit 7"):

- `class_accuracy`: the first judge (the digit classifier, nodes/pretrained/classifier, as in
  analysis/quality.py) gives the requested digit; `fid` / `kid` on its features against the
  held-out test split (the images made grey: their three channels averaged);
- `weight_agreement`, `slant_agreement`, `both_agreement`: the weight and slant bins measured on the
  generated image (nodes/diffusion/digit_attributes.py, by the tertiles of the requested digit's
  train images) are the requested ones.  The prompts cover every (weight, slant) pair equally, so a
  pipeline that ignored those words would agree a third of the time (a ninth for both);
- `psnr_vs_large`: PSNR (dB, range 2) against the large-only images of the same seed and prompts.

`compare` adds a control row: the large pipeline alone from prompts that name the digit only
("a digit 7"), judged against the same requested weights and slants, which those prompts do not
state: its agreement is what the measure gives when the words are absent (about a third).

A plan is a list of (pipeline folder, start, end) stages covering [0, steps); the first stage's
folder encodes the prompts, the last one's VAE decodes, as the node processes do; the stages run
through nodes/diffusion/latent_pipeline's functions.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from analysis.quality import classifier_predictions, fid_kid, psnr
from nodes.diffusion import digit_attributes
from nodes.diffusion.digits import NUM_CLASSES, as_digit_images
from nodes.diffusion.latent_folders import check_compatible, pipeline_path
from nodes.diffusion.latent_pipeline import (
    Components,
    decode,
    denoise,
    encode_prompt,
    initial_state,
    load_components,
)

N = 180  # every (digit, weight, slant) twice
SEED = 0
SCHEDULER = "ddim"
STEPS = 20
GUIDANCE = 4.0
Stage = tuple[Path | str, int, int]


def eval_prompts(n: int = N) -> tuple[list[str], torch.Tensor, torch.Tensor, torch.Tensor]:
    """n prompts cycling over the digits, and for each digit over the 9 (weight, slant) pairs: the
    prompts, and the requested digits, weight bins and slant bins."""
    index = torch.arange(n)
    digits = index % NUM_CLASSES
    pair = (index // NUM_CLASSES) % 9
    weights, slants = pair // 3, pair % 3
    prompts = [digit_attributes.prompt(int(d), int(w), int(s)) for d, w, s in zip(digits, weights, slants,
                                                                                   strict=True)]
    return prompts, digits, weights, slants


class Plans:
    """Loaded pipelines by folder, so that several plans over the same folders load each once."""

    def __init__(self) -> None:
        self._loaded: dict[Path, Components] = {}

    def components(self, folder: Path | str) -> Components:
        path = pipeline_path(folder).resolve()
        if path not in self._loaded:
            self._loaded[path] = load_components(path)
        return self._loaded[path]

    def generate(self, stages: Sequence[Stage], prompts: Sequence[str], seed: int = SEED,
                 scheduler: str = SCHEDULER, steps: int = STEPS, guidance: float = GUIDANCE,
                 negative: Sequence[str] | None = None) -> torch.Tensor:
        """Images (n x 3 x H x W in [-1, 1]) of `prompts` (and `negative` prompts) along `stages`."""
        if not stages or stages[0][1] != 0 or stages[-1][2] != steps or any(
                a[2] != b[1] for a, b in zip(stages, stages[1:], strict=False)):
            raise ValueError(f"stages {list(stages)} do not cover [0, {steps}) in order")
        space = check_compatible([folder for folder, _, _ in stages])
        first, last = self.components(stages[0][0]), self.components(stages[-1][0])
        embeddings = encode_prompt(first, list(prompts), None if negative is None else list(negative),
                                   guidance_scale=guidance)
        state = initial_state(space, len(prompts), seed, scheduler, steps)
        for folder, start, end in stages:
            stage = self.components(folder)
            state = denoise(stage.unet, stage.scheduler, state, embeddings, guidance, start, end)
        return decode(last.vae, state.tensors["latents"])


def measure(images: torch.Tensor, digits: torch.Tensor, weights: torch.Tensor, slants: torch.Tensor,
            reference: torch.Tensor | None = None) -> dict[str, float | int]:
    """The figures of the module docstring for `images` generated from the requested attributes."""
    grey = as_digit_images(images)
    fid, kid, _ = fid_kid(grey)
    weight, lean = digit_attributes.bins(grey, digits)
    table: dict[str, float | int] = {
        "n": len(images),
        "class_accuracy": float((classifier_predictions(grey) == digits).float().mean()),
        "fid": fid,
        "kid": kid,
        "weight_agreement": float((weight == weights).float().mean()),
        "slant_agreement": float((lean == slants).float().mean()),
        "both_agreement": float(((weight == weights) & (lean == slants)).float().mean()),
    }
    if reference is not None:
        value = psnr(images, reference)
        table["psnr_vs_large"] = value if math.isfinite(value) else 99.0
    return table


def prompt_quality(images: torch.Tensor, prompts: Sequence[str],
                   reference: torch.Tensor | None = None) -> dict[str, float | int | None]:
    """The figures of `measure` for images generated from any prompts that name a digit: class
    accuracy and FID/KID against the digit each prompt names, weight and slant agreement over the
    prompts that name a weight or a slant (None where none does), PSNR against `reference`.
    ValueError naming a prompt that names no digit (the judges have nothing to check it by)."""
    parsed = [digit_attributes.prompt_attributes(p) for p in prompts]
    for i, (digit, _, _) in enumerate(parsed):
        if digit is None:
            raise ValueError(f"prompt {i + 1} ({prompts[i]!r}) names no digit ('digit D'): a latent image's "
                             "quality is judged against the digit its prompt names")
    if len(images) < 2:
        raise ValueError("quality needs at least 2 images (FID needs a covariance)")
    grey = as_digit_images(images)
    digits = torch.tensor([d for d, _, _ in parsed])
    fid, kid, _ = fid_kid(grey)
    found = digit_attributes.bins(grey, digits)
    table: dict[str, float | int | None] = {
        "n": len(images), "class_accuracy": float((classifier_predictions(grey) == digits).float().mean()),
        "fid": fid, "kid": kid}
    for name, measured, index in (("weight_agreement", found[0], 1), ("slant_agreement", found[1], 2)):
        asked = [(i, p[index]) for i, p in enumerate(parsed) if p[index] is not None]
        table[name] = (sum(int(measured[i]) == want for i, want in asked) / len(asked)) if asked else None
    if reference is not None:
        value = psnr(images, reference)
        table["psnr_vs_large"] = value if math.isfinite(value) else None
    return table


def plan_name(stages: Sequence[Stage]) -> str:
    return ",".join(f"{Path(folder).name}:{start}-{end}" for folder, start, end in stages)


def compare(large: Path | str, small: Path | str, n: int = N, seed: int = SEED, scheduler: str = SCHEDULER,
            steps: int = STEPS, guidance: float = GUIDANCE) -> list[dict[str, Any]]:
    """Large alone, small alone, and large for the first half of the steps then small: one row each;
    then the control (large alone, prompts without the attributes)."""
    prompts, digits, weights, slants = eval_prompts(n)
    plans = Plans()
    half = steps // 2
    rows, reference = [], None
    for stages in ([(large, 0, steps)], [(small, 0, steps)], [(large, 0, half), (small, half, steps)]):
        started = time.perf_counter()
        images = plans.generate(stages, prompts, seed, scheduler, steps, guidance)
        wall = time.perf_counter() - started
        row = {"plan": plan_name(stages), **measure(images, digits, weights, slants, reference),
               "generate_s": round(wall, 2)}
        if reference is None:
            reference = images
        rows.append(row)
    plain = [digit_attributes.prompt(int(digit)) for digit in digits]
    started = time.perf_counter()
    images = plans.generate([(large, 0, steps)], plain, seed, scheduler, steps, guidance)
    wall = time.perf_counter() - started
    rows.append({"plan": f"{plan_name([(large, 0, steps)])} (control: 'a digit D')",
                 **measure(images, digits, weights, slants), "generate_s": round(wall, 2)})
    return rows


def chance_note(rows: list[dict[str, Any]], n: int) -> str:
    """Whether the attribute words matter: agreement against chance (1/3), in standard errors."""
    se = math.sqrt((1 / 3) * (2 / 3) / n)
    parts = []
    for row in rows:
        label = "the control" if "control" in row["plan"] else row["plan"]
        z = [(row[key] - 1 / 3) / se for key in ("weight_agreement", "slant_agreement")]
        parts.append(f"{label}: weight {z[0]:+.1f}, slant {z[1]:+.1f}")
    return ("Chance is 1/3 for weight and for slant (1/9 for both); agreement above chance, in binomial "
            f"standard errors ({se:.3f} at n = {n}): " + "; ".join(parts) + ".")


def record(folders: Sequence[Path], rows: list[dict[str, Any]], n: int = N, seed: int = SEED,
           scheduler: str = SCHEDULER, steps: int = STEPS, guidance: float = GUIDANCE) -> None:
    """quality.json in each folder (the model cards are rendered from it)."""
    facts = {
        "command": "edgestage train latent (analysis.latent_quality.compare after training)",
        "setting": f"{scheduler.upper()} {steps} steps, guidance {guidance}, seed {seed}, n = {n} prompts "
                   "(each digit x weight x slant twice), judged on the grey image; FID/KID against the "
                   "360 held-out test images on the digit classifier's features.",
        "rows": rows,
        "note": chance_note(rows, n),
    }
    for folder in folders:
        (Path(folder) / "quality.json").write_text(json.dumps(facts, indent=2) + "\n")
