"""Time dilation: the factor K by which a run's emulated time runs slower than wall time, and how
it was chosen.

Under K every time of the emulated world is stretched by K in wall time: link rates / K, delays,
jitter, traces, the channel model and link events x K (emulation/network.py, dynamics.py),
arrivals, deadlines and timeouts x K (Experiment.node_configs, the runner), profiled step times
x K (nodes/runtime/worker.py).  Measured in emulated time (the tables divide by K), the network
and the hardware behave as configured while the real computation has K times longer to finish a
profiled step.

`"auto"` measures, before the run, the real time of one denoising step of every (model, batch)
a profiled host will run (nodes/diffusion/model_bench.py, the node's torch threads), divides it by
the host's CPU share where the topology gives one, and takes

    K = ceil(SAFETY_MARGIN x max over those of real step / profiled step)

SAFETY_MARGIN covers what a step meets in a run and not in the measurement: the other nodes, the
captures and the userspace impairment processes on the same two cores (in the default scenario
the cloud's `large` steps took 1.1-2.2 x their solo time at K = 33, with another test suite
running beside it, and a margin of 2 left 41 of 960 measured steps overrunning; at 2.5, three
runs of the default scenario overran 0, 1 and 0 of 960 steps), and a slow step now and then; a
step that still overruns is counted and reported, never hidden.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

from emulation.scenario import Scenario
from nodes.schema import NODE_ROLES

SAFETY_MARGIN = 3.0
REPEATS = 5  # steps timed per (model, batch), after warm-up; the median counts

StepTimer = Callable[[str, int, int, int], float]  # (model, batch, repeats, threads) -> seconds


@dataclass(frozen=True)
class Dilation:
    k: float
    how: str  # one line: why this K
    measured: list[dict] = field(default_factory=list)  # the steps "auto" timed
    native_hosts_note: str | None = None  # a native role under K > 1 computes K times faster

    def manifest(self) -> dict:
        return {"time_dilation": self.k, "how": self.how, "measured": self.measured,
                "safety_margin": SAFETY_MARGIN if self.measured else None,
                "native_note": self.native_hosts_note}


def choose_dilation(scenario: Scenario, timer: StepTimer | None = None) -> Dilation:
    """K for a scenario: as given, or measured ("auto"); see the module docstring."""
    given = scenario.run.time_dilation
    if given == "auto":
        k, how, measured = _auto(scenario, timer or _time_step)
    else:
        k, how, measured = float(given), "given in the scenario ([run] time_dilation)", []
    native = [r for r in _roles(scenario) if scenario.nodes.role(r).compute == "native"]
    note = None
    if k > 1 and native:
        note = (f"{', '.join(native)} compute natively: under K = {k:g} they compute {k:g} times "
                "faster, in emulated time, than this machine")
    return Dilation(k, how, measured, note)


def _roles(scenario: Scenario) -> list[str]:
    present = scenario.roles_present()
    return [r for r in NODE_ROLES if r in present and scenario.nodes.role(r).models]


def _auto(scenario: Scenario, timer: StepTimer) -> tuple[float, str, list[dict]]:
    from nodes.planning.hardware import load_profiles, profile_for

    batch = scenario.workload.images_per_request
    profiles = None
    rows = []
    for role in _roles(scenario):
        spec = scenario.nodes.role(role)
        if spec.compute != "profiled":
            continue
        profiles = profiles or load_profiles(scenario.nodes.profiles_file)
        share = scenario.topology.cpu_shares.get(role)
        for model in spec.models:
            real = timer(model, batch, REPEATS, spec.threads) / (share or 1.0)
            profiled = profile_for(profiles, spec.hardware or "", model).step_s(batch)
            rows.append({"role": role, "hardware": spec.hardware, "model": model, "batch": batch,
                         "cpu_share": share, "real_step_ms": round(real * 1000, 3),
                         "profiled_step_ms": round(profiled * 1000, 4),
                         "ratio": round(real / profiled, 3)})
    if not rows:
        return 1.0, "auto: no profiled host, so nothing to dilate (K = 1)", []
    worst = max(rows, key=lambda r: r["ratio"])
    k = float(max(1, math.ceil(SAFETY_MARGIN * worst["ratio"])))
    how = (f"auto: {worst['model']} on {worst['role']} ({worst['hardware']}, batch {batch}) takes "
           f"{worst['real_step_ms']:.1f} ms a step here against {worst['profiled_step_ms']:.2f} ms "
           f"profiled, {worst['ratio']:.1f}x; with a safety margin of {SAFETY_MARGIN:g}, K = {k:g}")
    return k, how, rows


def _time_step(model: str, batch: int, repeats: int, threads: int) -> float:
    import torch

    from nodes.diffusion.model_bench import step_latency_s

    before = torch.get_num_threads()
    torch.set_num_threads(threads)  # as the node computes
    try:
        return step_latency_s(model, batch, repeats)
    finally:
        torch.set_num_threads(before)
