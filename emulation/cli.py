"""The `edgestage` command line: a thin layer over the Python calls of each folder.

Bad input anywhere (a ValueError, including pydantic's) ends in one line on stderr and exit 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2, as for every bad input
        self.exit(2, f"edgestage: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="edgestage", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    from emulation import calibration

    calibration.register_cli(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ValueError as exc:  # bad input: scenario, plan, samples file, argument value
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"edgestage: error: {first}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("edgestage: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
