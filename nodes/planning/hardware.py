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
    """A model's step on a hardware: step_ms + n x per_image_ms for n images.  A latent pipeline's
    entry also times its text encoding and its decoding, each in the same form (None: not given,
    which a host that encodes or decodes with it refuses)."""

    step_ms: float
    per_image_ms: float
    encode: tuple[float, float] | None = None  # (encode_ms, encode_per_image_ms)
    decode: tuple[float, float] | None = None  # (decode_ms, decode_per_image_ms)

    def step_s(self, n: int) -> float:
        return (self.step_ms + n * self.per_image_ms) / 1000.0

    def encode_s(self, n: int) -> float | None:
        return None if self.encode is None else (self.encode[0] + n * self.encode[1]) / 1000.0

    def decode_s(self, n: int) -> float | None:
        return None if self.decode is None else (self.decode[0] + n * self.decode[1]) / 1000.0


STEP_KEYS = ("step_ms", "per_image_ms")
PHASE_KEYS = {"encode": ("encode_ms", "encode_per_image_ms"), "decode": ("decode_ms", "decode_per_image_ms")}


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
            table[name][model] = _step_profile(figures, where)
    return table


def _step_profile(figures: object, where: str) -> StepProfile:
    """One model's entry: step_ms and per_image_ms, and optionally (a latent pipeline's) both of
    encode_ms and encode_per_image_ms, both of decode_ms and decode_per_image_ms."""
    allowed = {*STEP_KEYS, *(k for keys in PHASE_KEYS.values() for k in keys)}
    if not isinstance(figures, dict) or not set(STEP_KEYS) <= set(figures) or not set(figures) <= allowed:
        raise ValueError(f"{where}: expected {{ step_ms = ..., per_image_ms = ... }} (a latent pipeline's "
                         "also encode_ms, encode_per_image_ms, decode_ms, decode_per_image_ms)")
    values = list(figures.values())
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in values) or not all(
        math.isfinite(v) and v >= 0 for v in values
    ):
        raise ValueError(f"{where}: {', '.join(figures)} must be non-negative numbers")
    phases: dict[str, tuple[float, float] | None] = {}
    for phase, keys in PHASE_KEYS.items():
        given = [k for k in keys if k in figures]
        if given and len(given) < len(keys):
            raise ValueError(f"{where}: {given[0]} without {next(k for k in keys if k not in given)}")
        phases[phase] = (float(figures[keys[0]]), float(figures[keys[1]])) if given else None
    return StepProfile(float(figures["step_ms"]), float(figures["per_image_ms"]), **phases)


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


def find_profile(models: Mapping[str, StepProfile], model: str) -> StepProfile | None:
    """A hardware's entry for `model`: by its name, or for a model named by its path (a pipeline
    folder, one's own denoiser directory) by its folder's name, e.g. `sd15-scale-large`."""
    return models.get(model) or models.get(Path(model).name)


def profile_for(profiles: Profiles, hardware: str, model: str) -> StepProfile:
    if hardware not in profiles:
        raise ValueError(f"hardware {hardware!r} is not in the profiles ({', '.join(sorted(profiles))})")
    found = find_profile(profiles[hardware], model)
    if found is None:
        raise ValueError(f"profile {hardware!r} has no entry for model {model!r}")
    return found
