"""The stage executor: run denoising steps [start, end) of a T-step schedule on a batch.

This one function is what every node runs for its stage; the unsplit run is the one-stage plan.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from diffusers import DDPMScheduler, UNet2DModel

from nodes.diffusion import schedulers
from nodes.diffusion.model_zoo import SampleShape
from nodes.diffusion.state import DenoisingMeta, StateBundle
from nodes.schema import check_scheduler_name

SAMPLE = "sample"
LABELS = "labels"


def initial_state(labels: torch.Tensor, seed: int, scheduler: str, steps: int,
                  shape: SampleShape) -> StateBundle:
    """Pure noise of the first stage's model's `shape` for each requested label, drawn from the
    request's seed."""
    check_scheduler_name(scheduler)
    if steps <= 0:
        raise ValueError(f"steps must be positive, got {steps}")
    labels = labels.to(torch.int64)
    if labels.ndim != 1 or len(labels) == 0:
        raise ValueError("labels must be a non-empty 1-D tensor")
    if int(labels.min()) < 0 or int(labels.max()) >= shape.classes:
        raise ValueError(f"labels must lie in 0-{shape.classes - 1}")
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn(shape.batch(len(labels)), generator=generator)
    meta = DenoisingMeta(scheduler=scheduler, steps=steps, next_step=0, seed=seed)
    return StateBundle(meta=meta.header(), tensors={SAMPLE: noise, LABELS: labels})


@torch.no_grad()
def run_stage(
    model: UNet2DModel,
    noise_schedule: DDPMScheduler,
    state: StateBundle,
    start: int,
    end: int,
    on_step: Callable[[int], None] | None = None,
) -> StateBundle:
    meta = DenoisingMeta.of(state)
    steps = meta.steps
    if meta.next_step != start:
        raise ValueError(f"stage starts at step {start} but the state is at step {meta.next_step}")
    if not 0 <= start < end <= steps:
        raise ValueError(f"stage step range [{start}, {end}) is outside [0, {steps})")
    handoff = schedulers.adapter(meta.scheduler)
    scheduler = handoff.build(noise_schedule, steps)
    handoff.resume(scheduler, start, meta, state.tensors)
    sample, labels = state.tensors[SAMPLE], state.tensors[LABELS]
    for index in range(start, end):
        timestep = scheduler.timesteps[index]
        batch_t = timestep.expand(len(labels)).to(sample.device)
        prediction = model(sample, batch_t, class_labels=labels).sample
        sample = handoff.step(scheduler, prediction, timestep, sample, index, meta.seed)
        if on_step:
            on_step(index)
    carried_meta, carried = handoff.export(scheduler)
    new_meta = meta.model_copy(update={"lower_order_nums": None, **carried_meta, "next_step": end})
    return StateBundle(meta=new_meta.header(), tensors={SAMPLE: sample, LABELS: labels, **carried})
