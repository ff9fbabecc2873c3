"""The hardware registry: per-step times per (hardware, model, batch) and each hardware's power,
from the profiles file (nodes/profiles.toml).

A profiled host paces every denoising step to its profile (nodes/runtime/pacing.py); the planner
predicts from the same figures, and analysis/energy.py turns compute time into joules with the
power figures (`busy_w`, `idle_w`: `load_power`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

DEFAULT_PROFILES = Path(__file__).resolve().parents[1] / "profiles.toml"  # nodes/profiles.toml


@dataclass(frozen=True)
class StepProfile:
    step_ms: float
    per_image_ms: float

    def step_s(self, n: int) -> float:
        return (self.step_ms + n * self.per_image_ms) / 1000.0


Profiles = Mapping[str, Mapping[str, StepProfile]]  # hardware -> model -> profile


def load_profiles(path: Path | None = None) -> Profiles:
    """The profile table; ValueError names the file and the entry that is wrong."""
    path, hardware = _hardware_tables(path)
    table: dict[str, dict[str, StepProfile]] = {}
    for name, entry in hardware.items():
        models = entry.get("models") if isinstance(entry, dict) else None
        if not isinstance(models, dict) or not models:
            raise ValueError(f"profiles file {path}: hardware.{name} has no models table")
        table[name] = {}
        for model, figures in models.items():
            where = f"profiles file {path}: hardware.{name}.models.{model}"
            if not isinstance(figures, dict) or set(figures) != {"step_ms", "per_image_ms"}:
                raise ValueError(f"{where}: expected {{ step_ms = ..., per_image_ms = ... }}")
            values = [figures["step_ms"], figures["per_image_ms"]]
            if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in values) or not all(
                math.isfinite(v) and v >= 0 for v in values
            ):
                raise ValueError(f"{where}: step_ms and per_image_ms must be non-negative numbers")
            table[name][model] = StepProfile(float(values[0]), float(values[1]))
    return table


def _hardware_tables(path: Path | None) -> tuple[Path, dict]:
    """The file's path and its [hardware.NAME] tables; ValueError naming the file otherwise."""
    path = Path(path) if path is not None else DEFAULT_PROFILES
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ValueError(f"cannot read profiles file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"profiles file {path} is not TOML: {exc}") from None
    hardware = data.get("hardware")
    if not isinstance(hardware, dict) or not hardware:
        raise ValueError(f"profiles file {path}: no [hardware.NAME] tables")
    return path, hardware


@dataclass(frozen=True)
class HardwarePower:
    """What the whole device or board draws, in watts, while it computes and while it idles."""

    busy_w: float
    idle_w: float


POWER_KEYS = ("busy_w", "idle_w")


def load_power(path: Path | None = None) -> dict[str, HardwarePower]:
    """hardware -> HardwarePower from the profiles file's `busy_w` and `idle_w`; hardware without
    them is absent.  ValueError naming the file and `hardware.NAME.busy_w` for a figure that is
    missing beside its partner, not a finite non-negative number, or a busy power below idle."""
    path, hardware = _hardware_tables(path)
    table: dict[str, HardwarePower] = {}
    for name, entry in hardware.items():
        given = [k for k in POWER_KEYS if isinstance(entry, dict) and k in entry]
        if not given:
            continue
        where = f"profiles file {path}: hardware.{name}"
        if len(given) < len(POWER_KEYS):
            missing = next(k for k in POWER_KEYS if k not in given)
            raise ValueError(f"{where}.{missing}: missing (give both busy_w and idle_w, or neither)")
        for key in POWER_KEYS:
            value = entry[key]
            if isinstance(value, bool) or not isinstance(value, int | float) or not (
                    math.isfinite(value) and value >= 0):
                raise ValueError(f"{where}.{key}: must be a non-negative number of watts, got {value!r}")
        if entry["busy_w"] < entry["idle_w"]:
            raise ValueError(f"{where}.busy_w: {entry['busy_w']} W is below idle_w {entry['idle_w']} W")
        table[name] = HardwarePower(float(entry["busy_w"]), float(entry["idle_w"]))
    return table


def power_for(power: Mapping[str, HardwarePower], hardware: str,
              source: Path | str = DEFAULT_PROFILES) -> HardwarePower:
    """The power figures of `hardware`; ValueError naming `source` (the profiles file the table
    came from) where it has none."""
    if hardware not in power:
        raise ValueError(f"hardware {hardware!r} has no busy_w/idle_w in {source} (needed for energy)")
    return power[hardware]


def profile_for(profiles: Profiles, hardware: str, model: str) -> StepProfile:
    if hardware not in profiles:
        raise ValueError(f"hardware {hardware!r} is not in the profiles ({', '.join(sorted(profiles))})")
    if model not in profiles[hardware]:
        raise ValueError(f"profile {hardware!r} has no entry for model {model!r}")
    return profiles[hardware][model]
