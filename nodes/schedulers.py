"""Sampling schedulers and the part of their state that must cross a stage boundary.

- ddim: deterministic (eta = 0); nothing to carry but the sample.
- dpm:  DPM-Solver++ multistep; carries its model-output history and order counter, so that a
        split run takes exactly the steps of the unsplit one.
- ddpm: stochastic; the noise of step i is drawn from a generator seeded by (request seed, i),
        so that the result does not depend on where a split falls.
All are built from the training noise schedule shipped with the model (diffusers' config idiom).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler
from diffusers.schedulers.scheduling_utils import SchedulerMixin

SCHEDULERS = ("ddim", "dpm", "ddpm")
_CLASSES = {"ddim": DDIMScheduler, "dpm": DPMSolverMultistepScheduler, "ddpm": DDPMScheduler}
_HISTORY = "history_"

# fields of a noise schedule that must agree between the models of one plan
SCHEDULE_KEYS = ("num_train_timesteps", "beta_schedule", "beta_start", "beta_end", "prediction_type")


def check_scheduler_name(name: str) -> str:
    if name not in SCHEDULERS:
        raise ValueError(f"unknown scheduler {name!r}: expected one of {', '.join(SCHEDULERS)}")
    return name


def build_scheduler(name: str, noise_schedule: DDPMScheduler, steps: int) -> SchedulerMixin:
    scheduler = _CLASSES[check_scheduler_name(name)].from_config(noise_schedule.config)
    scheduler.set_timesteps(steps)
    return scheduler


def step_noise_seed(seed: int, step: int) -> int:
    """The DDPM noise seed of one step: a function of the request's seed and the step only."""
    return int(np.random.SeedSequence([seed, step]).generate_state(1, dtype=np.uint64)[0] >> 1)


def prepare_resume(scheduler: SchedulerMixin, start: int, meta: dict[str, Any],
                   tensors: dict[str, torch.Tensor]) -> None:
    """Put a fresh scheduler where the previous stage left off (step index, DPM history)."""
    if isinstance(scheduler, DPMSolverMultistepScheduler):
        scheduler.set_begin_index(start)
        order = scheduler.config.solver_order
        lower_order_nums = int(meta.get("lower_order_nums", 0))
        history = [tensors.get(f"{_HISTORY}{i}") for i in range(order)]
        needed = range(order - min(lower_order_nums, order), order)
        missing = [f"{_HISTORY}{i}" for i in needed if history[i] is None]
        if missing:
            raise ValueError(f"dpm state at step {start} lacks its history: {', '.join(missing)}")
        scheduler.lower_order_nums = lower_order_nums
        scheduler.model_outputs = history


def export_state(scheduler: SchedulerMixin) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """What the next stage needs from this scheduler, as header fields and tensors."""
    if isinstance(scheduler, DPMSolverMultistepScheduler):
        tensors = {
            f"{_HISTORY}{i}": out.contiguous()
            for i, out in enumerate(scheduler.model_outputs)
            if out is not None
        }
        return {"lower_order_nums": int(scheduler.lower_order_nums)}, tensors
    return {}, {}


def step(
    scheduler: SchedulerMixin, model_output: torch.Tensor, timestep: torch.Tensor,
    sample: torch.Tensor, step_index: int, seed: int,
) -> torch.Tensor:
    if isinstance(scheduler, DDPMScheduler):
        generator = torch.Generator().manual_seed(step_noise_seed(seed, step_index))
        return scheduler.step(model_output, timestep, sample, generator=generator).prev_sample
    return scheduler.step(model_output, timestep, sample).prev_sample
