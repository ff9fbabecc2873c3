"""Argument types and output helpers every command of the CLI shares: one line and exit 2 for a bad
argument (argparse.ArgumentTypeError names it), JSON that refuses NaN."""

from __future__ import annotations

import argparse
import json
import math


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2, as for every bad input
        self.exit(2, f"edgestage: error: {message}\n")


def print_json(value: object) -> None:
    print(json.dumps(value, indent=2, default=_json_default, allow_nan=False))


def _json_default(value: object) -> object:
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def finite(value: float | None) -> float | None:
    return value if value is None or math.isfinite(value) else None


def integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def positive_int(text: str) -> int:
    value = integer(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {value}")
    return value


def _positive_at_most(text: str, most: int, refusal: str) -> int:
    """A positive integer up to `most`; above it, `refusal` with its `{most}` and `{value}` filled in."""
    value = positive_int(text)
    if value > most:
        raise argparse.ArgumentTypeError(refusal.format(most=most, value=value))
    return value


def image_count(text: str) -> int:
    from nodes.schema import MAX_GENERATE_IMAGES  # pydantic: imported after the parser is up

    return _positive_at_most(text, MAX_GENERATE_IMAGES, "at most {most:,} images in one call, got {value:,} "
                                                        "(each model takes them all as one batch)")


def seed(text: str) -> int:
    from nodes.schema import MAX_SEED  # pydantic: imported after the parser is up (see main)

    value = integer(text)
    if not 0 <= value < MAX_SEED:
        raise argparse.ArgumentTypeError(f"must lie in 0 to 2**63 - 1, got {text}")
    return value


def steps(text: str) -> int:
    from nodes.schema import MAX_STEPS

    return _positive_at_most(text, MAX_STEPS, "at most {most} (the models' noise schedule has {most} "
                                              "timesteps), got {value}")


def seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive finite number of seconds, got {text}")
    return value


def add_sampling_args(p: argparse.ArgumentParser, n_default: int) -> None:
    from nodes.schema import SCHEDULER_NAMES  # nodes.diffusion.schedulers' names, without diffusers

    p.add_argument("--n", type=image_count, default=n_default, help="number of images")
    p.add_argument("--seed", type=seed, default=0, help="0 to 2**63 - 1")
    p.add_argument("--scheduler", choices=SCHEDULER_NAMES, default="ddim")
    p.add_argument("--steps", type=steps, default=50, help="T, steps of the schedule (at most 1000)")
