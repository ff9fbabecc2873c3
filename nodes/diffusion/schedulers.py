"""Sampling schedulers, each behind one small adapter that says what of its state must cross a
stage boundary (diffusers keeps that state in the scheduler object; a stage on another host
starts from a fresh one).

- ddim: deterministic (eta = 0); nothing to carry but the sample.
- dpm:  DPM-Solver++ multistep; carries its model-output history and order counter, so that a
        split run takes exactly the steps of the unsplit one.  It sets diffusers' internal
        `model_outputs` and `lower_order_nums` (pyproject pins diffusers to the tested range).
- ddpm: stochastic; the noise of step i is drawn from a generator seeded by (request seed, i),
        so that the result does not depend on where a split falls.
All are built from the training noise schedule shipped with the model (diffusers' config idiom):
`adapter(name).build(noise_schedule, steps)`, then `resume`, `step` per step, `export`.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler
from diffusers.schedulers.scheduling_utils import SchedulerMixin

from nodes.diffusion.state import DenoisingMeta
from nodes.schema import SCHEDULER_NAMES, check_scheduler_name

# fields of a noise schedule that must agree between the models of one plan
SCHEDULE_KEYS = ("num_train_timesteps", "beta_schedule", "beta_start", "beta_end", "prediction_type")


class Stateless:
    """A scheduler whose only state between steps is the sample (DDIM with eta = 0)."""

    scheduler_class: ClassVar[type[SchedulerMixin]] = DDIMScheduler

    def build(self, noise_schedule: DDPMScheduler, steps: int) -> SchedulerMixin:
        scheduler = self.scheduler_class.from_config(noise_schedule.config)
        scheduler.set_timesteps(steps)
        return scheduler

    def resume(self, scheduler: SchedulerMixin, start: int, meta: DenoisingMeta,
               tensors: dict[str, torch.Tensor]) -> None:
        """Put a fresh scheduler where the previous stage left off."""

    def export(self, scheduler: SchedulerMixin) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
        """What the next stage needs from this scheduler, as header fields and tensors."""
        return {}, {}

    def step(self, scheduler: SchedulerMixin, model_output: torch.Tensor, timestep: torch.Tensor,
             sample: torch.Tensor, step_index: int, seed: int) -> torch.Tensor:
        return scheduler.step(model_output, timestep, sample).prev_sample


class SolverHistory(Stateless):
    """DPM-Solver++ multistep: its last `solver_order` model outputs cross the boundary."""

    scheduler_class = DPMSolverMultistepScheduler
    HISTORY = "history_"

    def resume(self, scheduler: SchedulerMixin, start: int, meta: DenoisingMeta,
               tensors: dict[str, torch.Tensor]) -> None:
        scheduler.set_begin_index(start)
        order = scheduler.config.solver_order
        lower_order_nums = meta.lower_order_nums or 0
        history = [tensors.get(f"{self.HISTORY}{i}") for i in range(order)]
        needed = range(order - min(lower_order_nums, order), order)
        missing = [f"{self.HISTORY}{i}" for i in needed if history[i] is None]
        if missing:
            raise ValueError(f"dpm state at step {start} lacks its history: {', '.join(missing)}")
        scheduler.lower_order_nums = lower_order_nums
        scheduler.model_outputs = history

    def export(self, scheduler: SchedulerMixin) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
        tensors = {f"{self.HISTORY}{i}": out.contiguous()
                   for i, out in enumerate(scheduler.model_outputs) if out is not None}
        return {"lower_order_nums": int(scheduler.lower_order_nums)}, tensors


class SeededNoise(Stateless):
    """DDPM: the noise of each step comes from (request seed, step), not from the scheduler."""

    scheduler_class = DDPMScheduler

    def step(self, scheduler: SchedulerMixin, model_output: torch.Tensor, timestep: torch.Tensor,
             sample: torch.Tensor, step_index: int, seed: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(step_noise_seed(seed, step_index))
        return scheduler.step(model_output, timestep, sample, generator=generator).prev_sample


ADAPTERS: dict[str, Stateless] = {"ddim": Stateless(), "dpm": SolverHistory(), "ddpm": SeededNoise()}
SCHEDULERS = SCHEDULER_NAMES  # the torch-free names scenario checks use; one adapter each (tested)


def adapter(name: str) -> Stateless:
    return ADAPTERS[check_scheduler_name(name)]


def step_noise_seed(seed: int, step: int) -> int:
    """The DDPM noise seed of one step: a function of the request's seed and the step only."""
    return int(np.random.SeedSequence([seed, step]).generate_state(1, dtype=np.uint64)[0] >> 1)
