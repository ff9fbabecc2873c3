"""The samples file (.npz): images, labels, and what is needed to regenerate them.

A latent pipeline's samples (docs/latent-pipelines.md) have `prompts` (N strings) in place of
`labels`, optionally `negative_prompts` (N strings), and `guidance_scale` (a float); their images
are N x 3 x H x W (the pipeline's size) in [-1, 1].

`load_samples` checks everything it reads (a file that is not an .npz archive, a corrupt one, keys
of the wrong type or shape, images that are not finite or not in [-1, 1], labels outside 0-9) and
raises ValueError with one line naming the file; `save_samples` writes all or nothing.
"""

from __future__ import annotations

import os
import signal
import tempfile
import threading
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from nodes.diffusion.digits import IMAGE_SIZE, NUM_CLASSES
from nodes.planning.plan import Plan, parse_plan
from nodes.schema import MAX_SEED, MAX_STEPS, check_scheduler_name

REQUIRED_KEYS = ("images", "labels", "plan", "seed", "scheduler", "steps")
LATENT_KEYS = ("images", "prompts", "guidance_scale", "plan", "seed", "scheduler", "steps")
IMAGE_SHAPE = (1, IMAGE_SIZE, IMAGE_SIZE)  # what the digit classifier judges: one grey channel


@dataclass(frozen=True)
class Samples:
    images: torch.Tensor  # N x C x H x W float32 in [-1, 1]
    labels: torch.Tensor | None  # N int64; None for a latent pipeline's images (their prompts instead)
    plan: Plan
    seed: int
    scheduler: str
    steps: int
    prompts: tuple[str, ...] | None = None  # a latent pipeline's: one per image
    negative_prompts: tuple[str, ...] | None = None
    guidance_scale: float | None = None


def check_output_path(path: Path, what: str = "samples file") -> Path:
    """That a file can be written at `path` (its folders made where missing), before any work is
    done for it; ValueError naming the path otherwise.  Nothing is left behind."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"cannot write {what} {path}: it is a directory")
    ancestor = path.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        if ancestor.is_symlink():  # a dangling link: mkdir would fail on it
            raise ValueError(f"cannot write {what} {path}: {ancestor} is a broken link")
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise ValueError(f"cannot write {what} {path}: {ancestor} is not a directory")
    try:  # the only sure test (read-only mounts, /proc, permissions, quotas): make a file, remove it
        with ctrl_c_held():
            fd, probe = tempfile.mkstemp(prefix=".edgestage-probe-", dir=ancestor)
            os.close(fd)
            os.unlink(probe)
    except OSError as exc:
        raise ValueError(f"cannot write {what} {path}: cannot create a file in {ancestor} "
                         f"({exc.strerror or exc})") from None
    return path


@contextmanager
def ctrl_c_held() -> Iterator[None]:
    """Ctrl-C held off (raised again on leaving) where it could come between making a temporary
    file and knowing its name, and leave the file behind (seen in CI).  Python runs signal
    handlers in the main thread only, so elsewhere there is nothing to hold; blocking the signal
    instead would not do either: the kernel gives it to another thread (torch's, ZeroMQ's)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, _frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if caught:
            signal.raise_signal(signal.SIGINT)  # as it would have come, to whatever handles it now


def save_samples(path: Path, samples: Samples) -> None:
    """Written to a temporary file first, so that an interrupted or failed save leaves nothing
    behind (not even the folders it made); ValueError naming the path if it cannot be written."""
    path = Path(path)
    made = [p for p in (path.parent, *path.parent.parents) if not p.exists()]
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with ctrl_c_held():
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".npz", dir=path.parent)
        with os.fdopen(fd, "wb") as handle:
            if samples.prompts is None:
                assert samples.labels is not None, "pixel samples need their labels"
                described = {"labels": samples.labels.cpu().numpy().astype(np.int64)}
            else:
                described = {"prompts": np.array(list(samples.prompts), dtype=str),
                             "guidance_scale": np.array(samples.guidance_scale, dtype=np.float64)}
                if samples.negative_prompts is not None:
                    described["negative_prompts"] = np.array(list(samples.negative_prompts), dtype=str)
            np.savez(
                handle,
                images=samples.images.detach().cpu().numpy().astype(np.float32),
                **described,
                plan=np.array(str(samples.plan)),
                seed=np.array(samples.seed, dtype=np.int64),
                scheduler=np.array(samples.scheduler),
                steps=np.array(samples.steps, dtype=np.int64),
            )
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        for folder in made:  # innermost first
            try:
                if folder.exists():
                    folder.rmdir()
            except OSError:
                break
        if isinstance(exc, OSError):
            raise ValueError(f"cannot write samples file {path}: {exc.strerror or exc}") from None
        raise


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _read(path: Path) -> dict[str, np.ndarray]:
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, EOFError, ValueError, zipfile.BadZipFile) as exc:
        raise ValueError(f"samples file {path} is not a readable .npz: {_first_line(exc)}") from None
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise ValueError(f"samples file {path} is a single .npy array, not an .npz archive of "
                         f"{', '.join(REQUIRED_KEYS)}")
    with data:
        keys = LATENT_KEYS if "prompts" in data.files else REQUIRED_KEYS
        missing = [key for key in keys if key not in data.files]
        if missing:
            raise ValueError(f"samples file {path} is missing keys: {', '.join(missing)}")
        fields = {}
        for key in (*keys, *(["negative_prompts"] if "negative_prompts" in data.files else [])):
            try:
                fields[key] = data[key]
            except (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile, zlib.error) as exc:
                raise ValueError(f"samples file {path}: {key} does not read: "
                                 f"{_first_line(exc)}") from None
    return fields


def _scalar(path: Path, key: str, value: np.ndarray, kind: str) -> int | str:
    """A 0-d entry of kind 'int' or 'str'."""
    ok = value.ndim == 0 and (np.issubdtype(value.dtype, np.integer) if kind == "int"
                              else value.dtype.kind == "U")
    if not ok:
        what = "integer" if kind == "int" else "string"
        raise ValueError(f"samples file {path}: {key} must be one {what}, "
                         f"got an array of shape {value.shape} and dtype {value.dtype}")
    return int(value) if kind == "int" else str(value)


def load_samples(path: Path) -> Samples:
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"samples file {path} is a directory")
    if not path.is_file():
        raise ValueError(f"samples file {path} does not exist")
    fields = _read(path)
    images = fields["images"]
    where = f"samples file {path}"
    latent = "prompts" in fields
    if not np.issubdtype(images.dtype, np.floating):
        raise ValueError(f"{where}: images must be floats, got dtype {images.dtype}")
    if latent and (images.ndim != 4 or images.shape[0] < 1 or images.shape[1] != 3):
        raise ValueError(f"{where}: a latent pipeline's images must be N x 3 x H x W (N >= 1), "
                         f"got shape {' x '.join(map(str, images.shape)) or 'scalar'}")
    if not latent and (images.ndim != 4 or tuple(images.shape[1:]) != IMAGE_SHAPE or images.shape[0] < 1):
        raise ValueError(f"{where}: images must be N x {' x '.join(map(str, IMAGE_SHAPE))} (N >= 1), "
                         f"got shape {' x '.join(map(str, images.shape)) or 'scalar'}")
    bad = int(np.count_nonzero(~np.isfinite(images)))
    if bad:
        raise ValueError(f"{where}: {bad} image values are NaN or infinite")
    low, high = float(images.min()), float(images.max())
    if low < -1.0 or high > 1.0:
        raise ValueError(f"{where}: images must lie in [-1, 1], found values in [{low:g}, {high:g}]")
    n = images.shape[0]
    described = _prompts(where, fields, n) if latent else _labels(where, fields, n)
    seed = _scalar(path, "seed", fields["seed"], "int")
    if not 0 <= seed < MAX_SEED:
        raise ValueError(f"{where}: seed must lie in [0, 2**63), got {seed}")
    steps = _scalar(path, "steps", fields["steps"], "int")
    if not 1 <= steps <= MAX_STEPS:
        raise ValueError(f"{where}: steps must lie in 1-{MAX_STEPS}, got {steps}")
    try:
        scheduler = check_scheduler_name(_scalar(path, "scheduler", fields["scheduler"], "str"))
        plan = parse_plan(_scalar(path, "plan", fields["plan"], "str"), steps)
    except ValueError as exc:
        message = str(exc)
        raise ValueError(message if message.startswith(where) else f"{where}: {message}") from None
    return Samples(images=torch.from_numpy(images.astype(np.float32)), plan=plan, seed=seed,
                   scheduler=scheduler, steps=steps, **described)


def _labels(where: str, fields: dict[str, np.ndarray], n: int) -> dict:
    labels = fields["labels"]
    if not np.issubdtype(labels.dtype, np.integer) or labels.ndim != 1:
        raise ValueError(f"{where}: labels must be a list of integers, got shape {labels.shape} "
                         f"and dtype {labels.dtype}")
    if labels.shape[0] != n:
        raise ValueError(f"{where}: {n} images but {labels.shape[0]} labels")
    if labels.size and not (labels.min() >= 0 and labels.max() < NUM_CLASSES):
        raise ValueError(f"{where}: labels must lie in 0-{NUM_CLASSES - 1}, found {int(labels.min())}.."
                         f"{int(labels.max())}")
    return {"labels": torch.from_numpy(labels.astype(np.int64))}


def _prompts(where: str, fields: dict[str, np.ndarray], n: int) -> dict:
    """A latent pipeline's samples: their prompts (and negative prompts), one per image, and the
    guidance scale."""
    out: dict = {"labels": None}
    for key in ("prompts", "negative_prompts"):
        if key not in fields:
            continue
        value = fields[key]
        if value.dtype.kind != "U" or value.ndim != 1 or value.shape[0] != n:
            raise ValueError(f"{where}: {key} must be {n} strings, one per image, got shape {value.shape} "
                             f"and dtype {value.dtype}")
        out[key] = tuple(str(v) for v in value)
    scale = fields["guidance_scale"]
    if scale.ndim != 0 or not np.issubdtype(scale.dtype, np.floating) or not (0 < float(scale) < np.inf):
        raise ValueError(f"{where}: guidance_scale must be one positive number")
    out["guidance_scale"] = float(scale)
    return out
