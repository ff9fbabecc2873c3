"""Local generation along a plan: each stage's model continues the state of the previous one.

This is the same code path a node runs for its stage (nodes/diffusion/executor.py), just without a network
between the stages; the emulated runs are checked against it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch

from nodes.diffusion.digits import NUM_CLASSES
from nodes.diffusion.executor import SAMPLE, initial_state, run_stage
from nodes.diffusion.model_zoo import SampleShape, check_denoiser_dir, load_denoiser, load_noise_schedule
from nodes.diffusion.schedulers import SCHEDULE_KEYS
from nodes.planning.plan import Plan
from nodes.progress import progress_bar
from nodes.schema import MAX_GENERATE_IMAGES

# Peak resident memory per image of `edgestage generate` with each shipped model, in MiB: the
# growth of peak RSS from 256 to 2,048 images (small, medium) and to 4,096 (large), measured on
# a 2-core x86 CPU (torch 2.13).  A model directory of one's own is taken as large scaled by its
# widest block.
MIB_PER_IMAGE = {"small": 0.19, "medium": 0.32, "large": 0.93}
BASE_MIB = 600.0  # the process with torch, diffusers and the models, before any image (measured)
HEADROOM = 0.9  # of the available memory, the share a generation may plan to use


def request_labels(n: int, label: int | None = None) -> torch.Tensor:
    """`n` copies of `label`, or labels cycling through 0-9 so that classes are balanced."""
    if n <= 0:
        raise ValueError(f"n must be positive, got {n}")
    if label is None:
        return torch.arange(n, dtype=torch.int64) % NUM_CLASSES
    if not 0 <= label < NUM_CLASSES:
        raise ValueError(f"label must lie in 0-{NUM_CLASSES - 1}, got {label}")
    return torch.full((n,), label, dtype=torch.int64)


def image_mib(model: str) -> float:
    """Peak memory per image (MiB) of one batched denoising step of `model` (MIB_PER_IMAGE)."""
    if model in MIB_PER_IMAGE:
        return MIB_PER_IMAGE[model]
    config = json.loads((check_denoiser_dir(model) / "config.json").read_text())
    channels = config.get("block_out_channels") or [128]
    widest = max((c for c in channels if isinstance(c, int)), default=128)
    return MIB_PER_IMAGE["large"] * max(1.0, widest / 128)


def available_mib() -> float | None:
    """Memory this process may still take (MiB): MemAvailable, or less where a cgroup limit is
    tighter; None where neither can be read."""
    figures = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                figures.append(int(line.split()[1]) / 1024)
    except (OSError, ValueError, IndexError):
        pass
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit != "max":
            used = int(Path("/sys/fs/cgroup/memory.current").read_text())
            figures.append((int(limit) - used) / 2**20)
    except (OSError, ValueError):
        pass
    return min(figures) if figures else None


def check_fits(models: Sequence[str], n: int, what: str | None = None) -> None:
    """ValueError, before anything is computed, where `n` images through `models` exceed the cap
    or this machine's available memory (all n go through each model as one batch).  `what` names
    where n came from in the message (default: `--n N`)."""
    what = what or f"--n {n}"
    if n > MAX_GENERATE_IMAGES:
        raise ValueError(f"{what}: {n:,} images, at most {MAX_GENERATE_IMAGES:,} in one call (each model "
                         "takes them all as one batch); make several calls with different --seed")
    model = max(models, key=image_mib)
    need = BASE_MIB + n * image_mib(model)
    free = available_mib()
    if free is not None and need > HEADROOM * free:
        raise ValueError(f"{what}: about {need / 1024:.1f} GiB of memory needed ({n:,} images through "
                         f"model {model!r} as one batch, {image_mib(model):.2f} MiB each), this machine has "
                         f"{free / 1024:.1f} GiB available; make several calls with fewer images and "
                         "different --seed")


def check_plan_models(plan: Plan) -> None:
    """Every model loads, and all draw one sample shape and were trained on one noise schedule
    (else a handoff is wrong)."""
    reference = None
    for model in plan.models():
        shape = SampleShape.of(load_denoiser(model).config)
        config = load_noise_schedule(model).config
        schedule = {key: config.get(key) for key in SCHEDULE_KEYS}
        if reference is None:
            reference = (model, schedule, shape)
        elif schedule != reference[1]:
            raise ValueError(
                f"models {reference[0]!r} and {model!r} were trained on different noise schedules"
            )
        elif shape != reference[2]:
            raise ValueError(f"models {reference[0]!r} and {model!r} draw different samples "
                             f"({reference[2]} and {shape})")


def generate(
    plan: Plan,
    labels: Sequence[int] | torch.Tensor,
    seed: int,
    scheduler: str,
    progress: bool = False,
) -> torch.Tensor:
    """Images (N x C x H x W float32 in [-1, 1], the shape the plan's models' configs give) for
    `labels`, following `plan` step by step."""
    check_plan_models(plan)
    labels = torch.as_tensor(labels, dtype=torch.int64)
    shape = SampleShape.of(load_denoiser(plan.stages[0].model).config)
    state = initial_state(labels, seed, scheduler, plan.total_steps, shape)
    bar = progress_bar(total=plan.total_steps, desc=str(plan), unit="step", disable=not progress, leave=False)
    for stage in plan.stages:
        state = run_stage(
            load_denoiser(stage.model),
            load_noise_schedule(stage.model),
            state,
            stage.start,
            stage.end,
            on_step=lambda _i: bar.update(1),
        )
    bar.close()
    return state.tensors[SAMPLE].clamp(-1.0, 1.0)
