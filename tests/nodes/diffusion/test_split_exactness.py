"""A plan split anywhere, with the same model on both sides, equals the unsplit run.

The state crosses each boundary as bytes (StateBundle.to_bytes / from_bytes), as it will on the
wire, so the test also pins that nothing is lost in serialisation.
"""

import functools

import pytest
import torch

from nodes.diffusion.executor import SAMPLE, initial_state, run_stage
from nodes.diffusion.model_zoo import SampleShape, denoiser_config, load_denoiser, load_noise_schedule
from nodes.diffusion.schedulers import SCHEDULERS
from nodes.diffusion.state import StateBundle

SHAPE = SampleShape.of(denoiser_config("small"))  # every shipped denoiser draws this

STEPS = 20
LABELS = torch.tensor([0, 3, 7, 9])
SEED = 11


def _run(model: str, scheduler: str, cuts: list[int], restart_solver: bool = False) -> torch.Tensor:
    state = initial_state(LABELS, SEED, scheduler, STEPS, SHAPE)
    bounds = [0, *cuts, STEPS]
    for start, end in zip(bounds, bounds[1:], strict=False):
        state = StateBundle.from_bytes(state.to_bytes())
        if restart_solver:  # what a naive handoff of the sample alone would do
            state.tensors = {k: v for k, v in state.tensors.items() if not k.startswith("history")}
            state.meta["lower_order_nums"] = 0
        state = run_stage(load_denoiser(model), load_noise_schedule(model), state, start, end)
    return state.tensors[SAMPLE]


@functools.cache
def _unsplit(model: str, scheduler: str) -> torch.Tensor:
    return _run(model, scheduler, [])


@pytest.mark.parametrize("scheduler", SCHEDULERS)
@pytest.mark.parametrize("cuts", [[1], [7], [10], [19], [3, 4, 15]])
def test_split_equals_unsplit(scheduler, cuts):
    split = _run("small", scheduler, cuts)
    assert (split - _unsplit("small", scheduler)).abs().max().item() <= 1e-5


def test_split_with_the_large_model_too():
    assert (_run("large", "dpm", [9]) - _unsplit("large", "dpm")).abs().max().item() <= 1e-5


def test_dpm_history_matters_so_the_test_has_teeth():
    restarted = _run("small", "dpm", [10], restart_solver=True)
    assert (restarted - _unsplit("small", "dpm")).abs().max().item() > 1e-3


def test_dpm_state_without_its_history_is_refused():
    state = run_stage(load_denoiser("small"), load_noise_schedule("small"),
                      initial_state(LABELS, SEED, "dpm", STEPS, SHAPE), 0, 5)
    state.tensors.pop("history_1")
    with pytest.raises(ValueError, match="lacks its history: history_1"):
        run_stage(load_denoiser("small"), load_noise_schedule("small"), state, 5, STEPS)


def test_ddpm_noise_depends_on_the_seed():
    a = _unsplit("small", "ddpm")
    state = initial_state(LABELS, SEED + 1, "ddpm", STEPS, SHAPE)
    b = run_stage(load_denoiser("small"), load_noise_schedule("small"), state, 0, STEPS)
    assert (a - b.tensors[SAMPLE]).abs().max().item() > 1e-2


def test_stage_must_start_where_the_state_is():
    state = initial_state(LABELS, SEED, "ddim", STEPS, SHAPE)
    with pytest.raises(ValueError, match="state is at step 0"):
        run_stage(load_denoiser("small"), load_noise_schedule("small"), state, 5, 10)
