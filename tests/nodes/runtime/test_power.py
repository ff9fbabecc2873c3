"""Hardware power figures (nodes/runtime/pacing.py load_power): the shipped file has them, labelled; bad
figures are refused naming the file and the field; the step-time table loads as before."""

from __future__ import annotations

import re

import pytest

from nodes.planning.hardware import DEFAULT_PROFILES, HardwarePower, load_power, load_profiles, power_for

MODELS = "[hardware.x.models]\nsmall = { step_ms = 1, per_image_ms = 0.1 }\n"


def test_every_shipped_hardware_has_labelled_power_figures_and_the_profiles_still_load() -> None:
    power, profiles = load_power(), load_profiles()
    assert set(power) == set(profiles) == {"datacenter_gpu", "edge_gpu", "jetson", "phone"}
    assert all(p.busy_w > p.idle_w >= 0 for p in power.values())
    assert power["datacenter_gpu"] == HardwarePower(400.0, 50.0) and power["edge_gpu"].busy_w == 70.0
    text = DEFAULT_PROFILES.read_text()
    sources = re.findall(r'^power_source = "(.*)"$', text, re.M)
    assert len(sources) == len(power) and all("busy_w" in s and "idle_w" in s for s in sources)
    assert all("estimate" in s for s in sources)  # every idle figure is one


def test_hardware_without_power_figures_is_absent(tmp_path) -> None:
    f = tmp_path / "p.toml"
    f.write_text(MODELS + "[hardware.y]\nbusy_w = 10\nidle_w = 1\n[hardware.y.models]\n"
                 "small = { step_ms = 1, per_image_ms = 0.1 }\n")
    assert load_power(f) == {"y": HardwarePower(10.0, 1.0)}
    assert set(load_profiles(f)) == {"x", "y"}  # the power keys do not disturb the step times


@pytest.mark.parametrize(("figures", "field"), [
    ("busy_w = -5\nidle_w = 1\n", "hardware.x.busy_w"),
    ('busy_w = "40 W"\nidle_w = 1\n', "hardware.x.busy_w"),
    ("busy_w = true\nidle_w = 1\n", "hardware.x.busy_w"),
    ("busy_w = nan\nidle_w = 1\n", "hardware.x.busy_w"),
    ("busy_w = 5\nidle_w = -1\n", "hardware.x.idle_w"),
    ("busy_w = 5\nidle_w = 9\n", "hardware.x.busy_w"),  # below idle
    ("busy_w = 5\n", "hardware.x.idle_w"),  # one without the other
])
def test_bad_figures_name_the_file_and_the_field(tmp_path, figures: str, field: str) -> None:
    f = tmp_path / "p.toml"
    f.write_text("[hardware.x]\n" + figures + MODELS)
    with pytest.raises(ValueError) as info:
        load_power(f)
    assert str(f) in str(info.value) and f"{field}:" in str(info.value) and "\n" not in str(info.value)


def test_power_for_names_what_is_missing() -> None:
    power = load_power()
    assert power_for(power, "phone") is power["phone"]
    message = f"hardware 'abacus' has no busy_w/idle_w in {DEFAULT_PROFILES} (needed for energy)"
    with pytest.raises(ValueError, match=re.escape(message)):
        power_for(power, "abacus")
