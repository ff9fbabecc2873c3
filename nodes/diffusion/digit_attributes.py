"""What a digit image says besides its class: its stroke weight and its slant, measured, binned, and
put into words, so that a text-to-image model's prompts say more than the class (the embedded
latent pipelines, docs/latent-default.md) and its images can be checked against them.

- `stroke_weight`: the ink mass, the mean ink over the image (ink = (x + 1) / 2 of the grey image,
  0 blank, 1 full): more ink for the same digit is a thicker (bolder) stroke.
- `slant`: from the ink's second moments, -cov(x, y) / var(y), the horizontal shift of the ink per
  row going down, sign flipped so that a digit whose top leans right is positive (image rows grow
  downwards).  0 is upright; 1 would be a 45-degree lean to the right.
- `bins`: each into three bins by the tertiles of the train split's values *for the same digit*
  (a 1 has less ink than an 8 and a 7 leans more than a 0, so thresholds of all digits together
  would make "thin" mostly mean "a 1"): thin / regular / bold, left-slanted / upright /
  right-slanted, relative to that digit's own train images.  So on the train split each bin holds a
  third of each digit, and a model that ignored the words would agree with them a third of the time.

Images are N x C x H x W in [-1, 1] (C = 1, or 3 channels that are averaged to grey).  Torch only;
the thresholds are computed from the train split once per process.
"""

from __future__ import annotations

import functools
import re

import torch

from nodes.diffusion.digits import NUM_CLASSES, load_split

WEIGHTS = ("thin", "regular", "bold")
_DIGIT = re.compile(r"\bdigit ([0-9])\b")
SLANTS = ("left-slanted", "upright", "right-slanted")


def ink(images: torch.Tensor) -> torch.Tensor:
    """N x H x W ink in [0, 1] (grey images; colour channels averaged)."""
    if images.ndim != 4:
        raise ValueError(f"images must be N x C x H x W, got shape {tuple(images.shape)}")
    return ((images.float().mean(dim=1) + 1.0) / 2.0).clamp(0.0, 1.0)


def stroke_weight(images: torch.Tensor) -> torch.Tensor:
    """N: the mean ink of each image (its ink mass over its area)."""
    return ink(images).mean(dim=(1, 2))


def slant(images: torch.Tensor) -> torch.Tensor:
    """N: -cov(x, y) / var(y) of each image's ink (positive: the top leans right); 0 for a blank image."""
    mass = ink(images)
    _, height, width = mass.shape
    ys = torch.arange(height, dtype=torch.float32).view(1, height, 1)
    xs = torch.arange(width, dtype=torch.float32).view(1, 1, width)
    total = mass.sum(dim=(1, 2)).clamp_min(1e-6)
    cy = (mass * ys).sum(dim=(1, 2)) / total
    cx = (mass * xs).sum(dim=(1, 2)) / total
    dy = ys - cy.view(-1, 1, 1)
    dx = xs - cx.view(-1, 1, 1)
    var_y = (mass * dy * dy).sum(dim=(1, 2)) / total
    cov_xy = (mass * dx * dy).sum(dim=(1, 2)) / total
    return -cov_xy / var_y.clamp_min(1e-6)


@functools.cache
def thresholds() -> dict[str, torch.Tensor]:
    """Per digit, the two tertile boundaries of each measure on the train split (10 x 2 each)."""
    train = load_split("train")
    found = {}
    for name, measure in (("weight", stroke_weight), ("slant", slant)):
        values = measure(train.images)
        found[name] = torch.stack([
            torch.quantile(values[train.labels == digit], torch.tensor([1 / 3, 2 / 3]))
            for digit in range(NUM_CLASSES)
        ])
    return found


def _bin(values: torch.Tensor, digits: torch.Tensor, bounds: torch.Tensor) -> torch.Tensor:
    edges = bounds[digits.long()]
    return (values > edges[:, 0]).long() + (values > edges[:, 1]).long()


def bins(images: torch.Tensor, digits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each image's weight bin (0 thin, 1 regular, 2 bold) and slant bin (0 left, 1 upright,
    2 right), by the tertiles of the train images of the digit it is meant to be (`digits`)."""
    if len(digits) != len(images):
        raise ValueError(f"{len(images)} images but {len(digits)} digits")
    limits = thresholds()
    return (_bin(stroke_weight(images), digits, limits["weight"]),
            _bin(slant(images), digits, limits["slant"]))


def prompt(digit: int, weight: int | None = None, slant_bin: int | None = None) -> str:
    """"a bold right-slanted digit 7"; an attribute left out where None ("a digit 7")."""
    words = ["a"]
    if weight is not None:
        words.append(WEIGHTS[weight])
    if slant_bin is not None:
        words.append(SLANTS[slant_bin])
    return " ".join([*words, "digit", str(digit)])


def describe(images: torch.Tensor, digits: torch.Tensor) -> list[str]:
    """The prompt that says what each image is: its digit, weight and slant."""
    weight, lean = bins(images, digits)
    return [prompt(int(d), int(w), int(s)) for d, w, s in zip(digits, weight, lean, strict=True)]


def prompt_attributes(text: str) -> tuple[int | None, int | None, int | None]:
    """What a prompt asks for, as `prompt` writes it: (digit, weight bin, slant bin), each None
    where it names none (or, for the digit, more than one)."""
    words = text.lower().split()

    def found(names: tuple[str, ...]) -> int | None:
        hits = {i for i, name in enumerate(names) if name in words}
        return hits.pop() if len(hits) == 1 else None

    return prompt_digit(text), found(WEIGHTS), found(SLANTS)


def prompt_digit(text: str) -> int | None:
    """The digit a prompt asks for ("a bold right-slanted digit 7" -> 7, as `prompt` writes it), or
    None where it names none or more than one (a cascade's gate then has nothing to check against)."""
    found = {int(d) for d in _DIGIT.findall(text)}
    return found.pop() if len(found) == 1 else None
