"""The `edgestage` command line, the one layer that prints: thin over the Python calls of each
folder, which return data.  One module per group of commands: local.py (doctor, train, generate,
quality), bench.py, runs.py (run, sweep, report, calibrate), deploy.py; args.py their argument types.

Bad input anywhere (a ValueError, including pydantic's) ends in one line on stderr and exit 2, and
is found before anything is written.  Ctrl-C, at any point, ends in one line and exit 130 (what
runs below cleans up on the way: the runner takes its network down, a samples file is not left
half-written).
"""

from __future__ import annotations

import os
import signal
import threading
from types import FrameType


def _interrupt(_signum: int, frame: FrameType | None) -> None:
    """Ctrl-C as KeyboardInterrupt, but never inside an import: one cut short leaves torch or
    numpy half-initialised, so that what surfaces is a RecursionError or ImportError with a
    traceback, or the interpreter kills itself with SIGINT at exit.  Inside an import the signal
    is sent again 50 ms later, until the import is done."""
    while frame is not None:
        if frame.f_code.co_filename.startswith("<frozen importlib"):
            threading.Timer(0.05, os.kill, (os.getpid(), signal.SIGINT)).start()
            return
        frame = frame.f_back
    raise KeyboardInterrupt


# First, before anything heavier is imported: from here on a Ctrl-C is one line and exit 130 (one
# in the interpreter's own start-up, the first ~30 ms, still ends it by the default action)
if signal.getsignal(signal.SIGINT) is signal.default_int_handler:  # not where SIGINT is ignored
    signal.signal(signal.SIGINT, _interrupt)

import argparse  # noqa: E402
import sys  # noqa: E402
from collections.abc import Sequence  # noqa: E402

from emulation.cli import bench, deploy, local, runs  # noqa: E402
from emulation.cli.args import Parser  # noqa: E402

SUMMARY = "edgestage: multi-stage collaborative diffusion over emulated edge networks"


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="edgestage", description=SUMMARY)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for commands in (local, bench, runs, deploy):
        commands.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:  # Ctrl-C while the parser imports what it needs is an interrupt like any other
        try:
            parser = build_parser()
            args = parser.parse_args(argv)
            return int(args.func(args) or 0)
        except ValueError as exc:  # bad input: scenario, plan, samples file, argument value
            text = str(exc).strip()
            first = text.splitlines()[0] if text else type(exc).__name__
            print(f"edgestage: error: {first}", file=sys.stderr)
            return 2
    except KeyboardInterrupt:
        # everything below has cleaned up on the way out; a second Ctrl-C while the interpreter
        # shuts down ends it at once (the default action), not with a traceback
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        print("edgestage: interrupted", file=sys.stderr)
        return 130
