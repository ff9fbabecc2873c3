"""The run's clock: one origin, one time dilation K, and which clock every time field is on.

Two clocks exist in a run.  The *wall* clock is the machine's (`time.time()` epoch seconds); under
time dilation K an emulated second takes K wall seconds (emulation/dilation.py).  The *emulated*
clock counts from t = 0 at `wall_origin`, the moment the first measured request is scheduled to
go; warm-up requests go before it, at negative t.  Link events, traces and the channel model
count from the same t = 0.

Names say the clock: a field is emulated unless its name starts with `wall_`.  Scenario files,
workload rows, deadlines and timeouts are emulated; what a node stamps while it works is wall
time, and a record says so field by field (`WallTime` for an epoch, `WallSeconds` for a
duration), so that a table can give each its emulated twin (analysis/run_tables.py) without
guessing from a suffix.
"""

from __future__ import annotations

import time
from typing import Annotated, Literal, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field


class _OnWallClock:
    """Marks a field as the wall clock's: an epoch (`time`) or a duration (`seconds`)."""

    def __init__(self, kind: Literal["time", "seconds"]) -> None:
        self.kind = kind

    def __repr__(self) -> str:
        return f"wall {self.kind}"


WallTime = Annotated[float, _OnWallClock("time")]
WallSeconds = Annotated[float, _OnWallClock("seconds")]


def wall_fields(model: type[BaseModel]) -> dict[str, Literal["time", "seconds"]]:
    """A model's wall-clock fields and their kind, as the model declares them (`WallTime`,
    `WallSeconds`, either or None)."""
    out: dict[str, Literal["time", "seconds"]] = {}
    for name, info in model.model_fields.items():
        marks = [m for m in info.metadata if isinstance(m, _OnWallClock)] + _marks(info.annotation)
        if marks:
            out[name] = marks[0].kind
    return out


def _marks(annotation: object) -> list[_OnWallClock]:
    if get_origin(annotation) is Annotated:
        return [m for m in getattr(annotation, "__metadata__", ()) if isinstance(m, _OnWallClock)]
    return [m for arg in get_args(annotation) for m in _marks(arg)]  # a union: X | None


class Clock(BaseModel):
    """t = 0 at `wall_origin` (epoch seconds), emulated time running `dilation` (K) times slower
    than wall time.  `wall_origin` None: t = 0 is when the clock is first read (`started`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    wall_origin: float | None = None
    dilation: float = Field(1.0, ge=1, le=1000)

    def started(self, wall_now: float | None = None) -> Clock:
        """This clock with an origin: its own, or `wall_now` (default: now)."""
        if self.wall_origin is not None:
            return self
        return self.model_copy(update={"wall_origin": time.time() if wall_now is None else wall_now})

    def wall(self, seconds: float) -> float:
        """An emulated duration in wall seconds."""
        return seconds * self.dilation

    def emulated(self, wall_seconds: float) -> float:
        """A wall duration in emulated seconds."""
        return wall_seconds / self.dilation

    def wall_at(self, t: float) -> float:
        """The wall epoch of emulated time t."""
        return self._origin() + t * self.dilation

    def at(self, wall_time: float) -> float:
        """The emulated time of a wall epoch."""
        return (wall_time - self._origin()) / self.dilation

    def _origin(self) -> float:
        if self.wall_origin is None:
            raise ValueError("the clock has not started: it has no origin yet")
        return self.wall_origin
