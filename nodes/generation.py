"""Local generation along a plan: each stage's model continues the state of the previous one.

This is the same code path a node runs for its stage (nodes/executor.py), just without a network
between the stages; the emulated runs are checked against it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from tqdm import tqdm

from nodes.digits import NUM_CLASSES
from nodes.executor import SAMPLE, initial_state, run_stage
from nodes.model_zoo import load_denoiser, load_noise_schedule
from nodes.plan import Plan
from nodes.schedulers import SCHEDULE_KEYS


def request_labels(n: int, label: int | None = None) -> torch.Tensor:
    """`n` copies of `label`, or labels cycling through 0-9 so that classes are balanced."""
    if n <= 0:
        raise ValueError(f"n must be positive, got {n}")
    if label is None:
        return torch.arange(n, dtype=torch.int64) % NUM_CLASSES
    if not 0 <= label < NUM_CLASSES:
        raise ValueError(f"label must lie in 0-{NUM_CLASSES - 1}, got {label}")
    return torch.full((n,), label, dtype=torch.int64)


def check_plan_models(plan: Plan) -> None:
    """Every model loads, and all were trained on one noise schedule (else a handoff is wrong)."""
    reference = None
    for model in plan.models():
        load_denoiser(model)
        config = load_noise_schedule(model).config
        schedule = {key: config.get(key) for key in SCHEDULE_KEYS}
        if reference is None:
            reference = (model, schedule)
        elif schedule != reference[1]:
            raise ValueError(
                f"models {reference[0]!r} and {model!r} were trained on different noise schedules"
            )


def generate(
    plan: Plan,
    labels: Sequence[int] | torch.Tensor,
    seed: int,
    scheduler: str,
    progress: bool = False,
) -> torch.Tensor:
    """Images (N x 1 x 16 x 16 float32 in [-1, 1]) for `labels`, following `plan` step by step."""
    check_plan_models(plan)
    labels = torch.as_tensor(labels, dtype=torch.int64)
    state = initial_state(labels, seed, scheduler, plan.total_steps)
    bar = tqdm(total=plan.total_steps, desc=str(plan), unit="step", disable=not progress, leave=False)
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
