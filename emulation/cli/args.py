"""Argument types and output helpers every command of the CLI shares: one line and exit 2 for a bad
argument (argparse.ArgumentTypeError names it), JSON that refuses NaN, --version, -v/-q and the
logging level they set, and handing outputs made under sudo to the user who ran sudo."""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
from pathlib import Path

LOG_FORMAT = "%(levelname)s %(name)s: %(message)s"


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2, as for every bad input
        self.exit(2, f"edgestage: error: {message}\n")


class _Version(argparse.Action):
    """--version: looked up only when asked (git runs), not each time the parser is built."""

    def __init__(self, option_strings: list[str], dest: str = argparse.SUPPRESS, **kwargs: object) -> None:
        super().__init__(option_strings, dest=dest, default=argparse.SUPPRESS, nargs=0,
                         help="print the version (and the git commit, when known) and exit")

    def __call__(self, parser: argparse.ArgumentParser, *args: object) -> None:
        from emulation.provenance import version_line

        print(version_line())  # stdout, as argparse's own version action writes it
        parser.exit(0)


def add_global_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--version", action=_Version)
    add_verbosity(parser, top=True)


def add_verbosity(parser: argparse.ArgumentParser, top: bool = False) -> None:
    """-v/--verbose and -q/--quiet, before the command (`edgestage -v run ...`) or after it (`run
    --quiet`, as scripts and the tests write it).  A subcommand's copy has no default, or its
    default would overwrite what was given before the command."""
    unset = {} if top else {"default": argparse.SUPPRESS}
    parser.add_argument("-v", "--verbose", action="count", help="log more: -v info, -vv debug",
                        **({"default": 0} if top else unset))
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars; log only errors",
                        **unset)


def subparsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """Every command's parser below `parser`, nested ones (bench models, ...) included."""
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in dict.fromkeys(action.choices.values()):  # aliases share a parser
                found += [child, *subparsers(child)]
    return found


def log_level(verbose: int, quiet: bool) -> int:
    """WARNING by default; -q: ERROR; -v: INFO; -vv: DEBUG (-q wins over -v)."""
    if quiet:
        return logging.ERROR
    return {0: logging.WARNING, 1: logging.INFO}.get(verbose, logging.DEBUG)


def configure_logging(verbose: int, quiet: bool) -> None:
    logging.basicConfig(level=log_level(verbose, quiet), format=LOG_FORMAT)


def created_by(path: Path) -> Path:
    """The topmost folder that creating `path` (with its parents) makes: `path` itself, or the
    first of its parents that does not exist yet.  Call it before creating anything."""
    top = Path(path).absolute()
    for parent in top.parents:
        if parent.exists():
            break
        top = parent
    return top


def hand_to_sudo_user(path: Path) -> bool:
    """Under sudo (root, SUDO_UID and SUDO_GID set), give the tree at `path` to the user who ran
    sudo, so that they can read, re-report and delete their results without root; True if it did.
    Symbolic links are changed, not followed: nothing outside the tree changes hands."""
    try:
        uid, gid = int(os.environ["SUDO_UID"]), int(os.environ["SUDO_GID"])
    except (KeyError, ValueError):
        return False
    if os.geteuid() != 0 or not os.path.lexists(path):
        return False
    os.lchown(path, uid, gid)
    for folder, dirs, files in os.walk(path):
        for name in (*dirs, *files):
            os.lchown(os.path.join(folder, name), uid, gid)
    return True


def print_json(value: object) -> None:
    print(json.dumps(value, indent=2, default=_json_default, allow_nan=False))


def plain(value: object) -> object:
    """`value` made of what JSON holds, for print_json: numpy scalars and arrays as Python numbers
    and lists, paths as text, NaN and infinities as null (JSON has neither, and a reader's
    parser would refuse them)."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, float):
        return finite(float(value))
    if hasattr(value, "tolist") and not isinstance(value, str | bytes):  # numpy scalar or array
        return plain(value.tolist())
    return value


def _json_default(value: object) -> object:
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def finite(value: float | None) -> float | None:
    return value if value is None or math.isfinite(value) else None


def integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def guidance(text: str) -> float:
    """A classifier-free guidance scale: a positive finite number (as a request's, at most 1000)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (math.isfinite(value) and 0 < value <= 1000):
        raise argparse.ArgumentTypeError(f"must be a positive number up to 1000, got {text}")
    return value


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
