"""`edgestage calibrate`: configured vs measured link behaviour (owned by the emulation work)."""

from __future__ import annotations

import argparse


def register_cli(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("calibrate", help="measure every link of a scenario's topology")
    p.add_argument("scenario")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_not_ready)


def _not_ready(args: argparse.Namespace) -> int:
    raise ValueError("calibrate is not implemented yet")
