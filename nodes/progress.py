"""Progress bars that suit where they are written: tqdm's redrawn bar on a terminal, and on a file or
a pipe (`sudo make demo > log`) one plain line at most every LOG_EVERY_S seconds, plus the last,
instead of the carriage-return frames that would fill the log with copies of the bar.  Every bar
of the testbed comes from `progress_bar` (the runner, training, generation, the quality tables)."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import IO, Any

from tqdm import tqdm

LOG_EVERY_S = 10.0
LOG_WIDTH = 100  # a line of the log: no terminal to measure


class _Lines:
    """A stream for tqdm that writes each frame as a line of its own: tqdm starts every frame with
    a carriage return and pads it with spaces to cover the previous one, neither of which a log
    wants; a frame that is only padding (a bar cleared on close) writes nothing."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream

    def write(self, text: str) -> None:
        for frame in text.split("\r"):
            if frame.strip():
                self.stream.write(frame.rstrip() + "\n")

    def flush(self) -> None:
        self.stream.flush()


def is_terminal(stream: IO[str]) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def progress_bar(iterable: Iterable[Any] | None = None, **kwargs: Any) -> tqdm:
    """tqdm(iterable, **kwargs) on `file` (default: stderr); one line per LOG_EVERY_S seconds
    when that is not a terminal."""
    stream = kwargs.pop("file", None) or sys.stderr
    if not is_terminal(stream):
        kwargs.update(file=_Lines(stream), mininterval=LOG_EVERY_S, ascii=True, ncols=LOG_WIDTH,
                      dynamic_ncols=False)
    else:
        kwargs["file"] = stream
    return tqdm(iterable, **kwargs)
