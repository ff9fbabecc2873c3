"""The `edgestage` command line, the one layer that prints: thin over the Python calls of each
folder, which return data.  One module per group of commands: local.py (doctor, train, generate,
quality), bench.py, runs.py (run, sweep, compare, campaign, report, calibrate), deploy.py; args.py
their argument types.  The commands that print results (run, sweep, compare, campaign, report,
calibrate, doctor, quality, quality-table, bench, deploy, deploy-keys) take --json: one JSON
document on stdout and nothing else there (progress, remarks and logs on stderr).

Bad input anywhere (a ValueError, including pydantic's) ends in one line on stderr and exit 2, and
is found before anything is written.  Ctrl-C, at any point, ends in one line and exit 130, and
SIGTERM or SIGHUP in one line and exit 128 + the signal (what runs below cleans up on the way: the
runner takes its network down, a samples file is not left half-written); emulation/guard.py
handles them, for the network too.

Exit codes: 0 done; 1 a run whose measured requests all failed, or with --strict any failed
request or overrun step (its run directory is kept); 2 bad input; 130 and 128 + N as above.
`--version`, and `-v`/`-q` (the logging level: WARNING by default, INFO, DEBUG, or ERROR with no
progress bars) before or after the command.
"""

from __future__ import annotations

import signal

from emulation.guard import Terminated, install_handlers

# First, before anything heavier is imported: from here on Ctrl-C is one line and exit 130, SIGTERM
# or SIGHUP one line and 128 + the signal, each unwinding what runs below (emulation/guard.py; one
# in the interpreter's own start-up, the first ~30 ms, still ends it by the default action)
install_handlers()

import argparse  # noqa: E402
import sys  # noqa: E402
from collections.abc import Sequence  # noqa: E402

from emulation.cli import bench, deploy, local, runs  # noqa: E402
from emulation.cli.args import Parser, add_global_args, add_verbosity, configure_logging, subparsers  # noqa: E402

SUMMARY = "edgestage: multi-stage collaborative diffusion over emulated edge networks"


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="edgestage", description=SUMMARY)
    add_global_args(parser)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for commands in (local, bench, runs, deploy):
        commands.register(sub)
    for command in subparsers(parser):  # -v/-q after the command as well as before it
        add_verbosity(command)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:  # Ctrl-C while the parser imports what it needs is an interrupt like any other
        try:
            parser = build_parser()
            args = parser.parse_args(argv)
            configure_logging(getattr(args, "verbose", 0), getattr(args, "quiet", False))
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
    except Terminated as exc:
        print(f"edgestage: terminated ({signal.Signals(exc.signum).name})", file=sys.stderr)
        return int(exc.code)
