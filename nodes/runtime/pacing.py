"""Compute modes of a stage host: `native` (real time at this host's CPU share) or `profiled`.

In `profiled` mode every denoising step is paced to the time the profile table gives for
(hardware, model, batch size): the real step still runs and produces the real sample, then the
host sleeps until the profiled time has elapsed. Pacing is per step, not per stage, so a slow step
can never be hidden behind fast ones: a step that really took longer than its profile is counted
(`overrun_steps`, `overrun_s`) and the stage takes that longer time.

The profiles are nodes/planning/hardware.py's (the hardware registry).
"""

from __future__ import annotations

import time
from dataclasses import dataclass


@dataclass
class PacingReport:
    real_compute_s: float = 0.0  # sum of the steps' own computation
    profiled_compute_s: float | None = None  # what the profile says the stage takes
    overrun_steps: int = 0
    overrun_s: float = 0.0  # how much longer than profiled the overrunning steps took


class Pacer:
    """Per-step pacing; `on_step` goes to `run_stage`. With no profile it only measures."""

    def __init__(self, step_s: float | None, steps: int) -> None:
        self.step_s = step_s
        self.report = PacingReport(profiled_compute_s=None if step_s is None else step_s * steps)
        self._last = time.perf_counter()

    def start(self) -> None:
        self._last = time.perf_counter()

    def on_step(self, _index: int) -> None:
        self._pace(self.step_s)

    def on_phase(self, profiled_s: float | None) -> None:
        """A latent pipeline's text encoding or decoding has just ended: pace it as a step of its own
        (`profiled_s`: the profile's time for it; None where the host is not profiled)."""
        if profiled_s is not None and self.report.profiled_compute_s is not None:
            self.report.profiled_compute_s += profiled_s
        self._pace(profiled_s)

    def _pace(self, profiled_s: float | None) -> None:
        now = time.perf_counter()
        real = now - self._last
        self.report.real_compute_s += real
        if profiled_s is not None:
            if real < profiled_s:
                _sleep_until(self._last + profiled_s)
            else:
                self.report.overrun_steps += 1
                self.report.overrun_s += real - profiled_s
        self._last = time.perf_counter()


def _sleep_until(deadline: float) -> None:
    """time.sleep may wake early on some systems; loop until the deadline has passed."""
    while (remaining := deadline - time.perf_counter()) > 0:
        time.sleep(remaining)
