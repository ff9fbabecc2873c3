"""`edgestage run`: placeholder until the runner lands (issue 4, part B)."""

from __future__ import annotations

import argparse


def register_cli(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run a scenario on the emulated network")
    p.add_argument("scenario")
    p.add_argument("--out")
    p.set_defaults(func=_not_ready)


def _not_ready(args: argparse.Namespace) -> int:
    raise ValueError("run is not implemented yet")
