"""The samples file (.npz): images, labels, and what is needed to regenerate them."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from nodes.plan import Plan, parse_plan
from nodes.schedulers import check_scheduler_name

REQUIRED_KEYS = ("images", "labels", "plan", "seed", "scheduler", "steps")


@dataclass(frozen=True)
class Samples:
    images: torch.Tensor  # N x C x H x W float32 in [-1, 1]
    labels: torch.Tensor  # N int64
    plan: Plan
    seed: int
    scheduler: str
    steps: int


def save_samples(path: Path, samples: Samples) -> None:
    """Written to a temporary file first, so that an interrupted save leaves nothing behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".npz", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            np.savez(
                handle,
                images=samples.images.detach().cpu().numpy().astype(np.float32),
                labels=samples.labels.cpu().numpy().astype(np.int64),
                plan=np.array(str(samples.plan)),
                seed=np.array(samples.seed, dtype=np.int64),
                scheduler=np.array(samples.scheduler),
                steps=np.array(samples.steps, dtype=np.int64),
            )
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_samples(path: Path) -> Samples:
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"samples file {path} does not exist")
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [key for key in REQUIRED_KEYS if key not in data.files]
            if missing:
                raise ValueError(f"samples file {path} is missing keys: {', '.join(missing)}")
            fields = {key: data[key] for key in REQUIRED_KEYS}
    except (OSError, EOFError) as exc:
        raise ValueError(f"samples file {path} is not a readable .npz: {exc}") from None
    images = torch.from_numpy(fields["images"].astype(np.float32))
    labels = torch.from_numpy(fields["labels"].astype(np.int64))
    if images.ndim != 4 or images.shape[0] != labels.shape[0] or labels.ndim != 1:
        raise ValueError(f"samples file {path}: images must be N x C x H x W with N labels")
    steps = int(fields["steps"])
    return Samples(
        images=images,
        labels=labels,
        plan=parse_plan(str(fields["plan"]), steps),
        seed=int(fields["seed"]),
        scheduler=check_scheduler_name(str(fields["scheduler"])),
        steps=steps,
    )
