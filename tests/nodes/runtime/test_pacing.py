"""Profiled compute: the shipped table loads, pacing holds each step to its profile, and a step
that really takes longer is counted, not hidden."""

import time

import pytest
import torch

from nodes.diffusion.executor import initial_state, run_stage
from nodes.diffusion.model_zoo import SampleShape, denoiser_config, load_denoiser, load_noise_schedule
from nodes.planning.hardware import DEFAULT_PROFILES, StepProfile, load_profiles, profile_for
from nodes.runtime.pacing import Pacer

SHAPE = SampleShape.of(denoiser_config("small"))  # every shipped denoiser draws this


def test_the_shipped_profiles_cover_every_default_model_and_say_where_figures_come_from():
    table = load_profiles()
    assert {"datacenter_gpu", "edge_gpu", "jetson", "phone"} <= set(table)
    for models in table.values():
        assert {"small", "medium", "large"} <= set(models)
        # a bigger model never steps faster on the same hardware
        assert models["small"].step_s(8) < models["medium"].step_s(8) < models["large"].step_s(8)
    text = DEFAULT_PROFILES.read_text()
    # one `source` per hardware for its step times (`power_source` is its power figures')
    assert text.count("\nsource = ") == len(table) and "ESTIMATES" in text


def test_profile_errors_name_the_entry(tmp_path):
    bad = tmp_path / "p.toml"
    bad.write_text('[hardware.x.models]\nsmall = { step_ms = -1, per_image_ms = 0 }\n')
    with pytest.raises(ValueError, match=r"hardware\.x\.models\.small"):
        load_profiles(bad)
    bad.write_text("not toml [")
    with pytest.raises(ValueError, match="not TOML"):
        load_profiles(bad)
    with pytest.raises(ValueError, match="no entry for model 'huge'"):
        profile_for(load_profiles(), "phone", "huge")
    with pytest.raises(ValueError, match="hardware 'abacus'"):
        profile_for(load_profiles(), "abacus", "small")
    assert StepProfile(2.0, 0.5).step_s(4) == pytest.approx(0.004)


def test_pacing_holds_fast_steps_to_the_profile():
    pacer = Pacer(step_s=0.03, steps=5)
    started = time.perf_counter()
    pacer.start()
    for index in range(5):
        pacer.on_step(index)
    elapsed = time.perf_counter() - started
    assert elapsed >= 0.15
    assert pacer.report.overrun_steps == 0 and pacer.report.profiled_compute_s == pytest.approx(0.15)
    assert pacer.report.real_compute_s < 0.15


def test_a_slow_step_is_an_overrun_and_is_not_absorbed_by_fast_ones():
    pacer = Pacer(step_s=0.02, steps=3)
    pacer.start()
    pacer.on_step(0)
    time.sleep(0.06)  # this step really takes 3x its profile
    pacer.on_step(1)
    pacer.on_step(2)
    assert pacer.report.overrun_steps == 1
    assert pacer.report.overrun_s == pytest.approx(0.04, abs=0.02)


def test_a_paced_stage_still_computes_the_real_images():
    state = initial_state(torch.tensor([1, 2]), 5, "ddim", 6, SHAPE)
    model, schedule = load_denoiser("small"), load_noise_schedule("small")
    unpaced = run_stage(model, schedule, state, 0, 6).tensors["sample"]
    pacer = Pacer(step_s=0.05, steps=6)
    started = time.perf_counter()
    pacer.start()
    paced = run_stage(model, schedule, state, 0, 6, on_step=pacer.on_step).tensors["sample"]
    assert time.perf_counter() - started >= 0.3
    assert torch.equal(paced, unpaced)
