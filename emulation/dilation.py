"""Time dilation: the factor K by which a run's emulated time runs slower than wall time, and how
it was chosen.

Under K every time of the emulated world is stretched by K in wall time: link rates / K, delays,
jitter, traces, the channel model and link events x K (emulation/network.py, dynamics.py),
arrivals, deadlines and timeouts x K (Experiment.node_configs, the runner), profiled step times
x K (nodes/runtime/worker.py).  Measured in emulated time (the tables divide by K), the network
and the hardware behave as configured while the real computation has K times longer to finish a
profiled step.

`"auto"` measures, before the run, the real time of a denoising step of every (model, batch) a
profiled host will run, under the load the run puts on the machine: every such model in a process
of its own with the node's torch threads, all at once, each computing DUTY of its time as a paced
node does (nodes/diffusion/step_timing.py), for a few seconds.  Of each model's step times it
takes the QUANTILE (p95), divides it by the host's CPU share where the topology gives one, and

    K = ceil(SAFETY_MARGIN x max over those of real step (p95 under load) / profiled step)

A latent pipeline's node paces three things (nodes/runtime/pacing.py): its denoising steps (the
guided UNet call and the sampler's step, at the workload's guidance), its text encoding and its
decoding.  Its job times all three under the same load, and each is one more ratio in the max
(against the profile's `step_ms`, `encode_ms`, `decode_ms` forms), so that none of them overruns.

Why under load and a high quantile: one step timed alone was a noisy basis (`large` at batch 2
timed 16.7 to 27.4 ms in different runs of one day, and the run at the K it gave overran), and in
the run the step shares two cores with the other nodes, the captures and the userspace
impairment.  Under load `large` takes about 1.5 x its time alone (median), its p95 about 1.6 x,
and three measurements in a row agreed within 7 % (docs/network-and-dilation.md).  SAFETY_MARGIN
covers the rarer collisions beyond the p95 (three steps at once on two cores) and the machine
slowing down later in the run; a step that still overruns is counted and reported, never hidden,
and a campaign runs such a run again (emulation/campaign.py).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from emulation.scenario import Scenario
from nodes.schema import NODE_ROLES

if TYPE_CHECKING:
    from nodes.planning.hardware import StepProfile

SAFETY_MARGIN = 2.0
QUANTILE = 0.95  # of each model's step times under load
DUTY = 1 / 3  # of its time a paced node computes at the K chosen (1 / (margin x p95 / median): 0.3-0.4)
DURATION_S = 4.0  # of timing, every model at once

# [(model, batch, threads)], duty -> each job's step times (seconds), the jobs timed at once; a
# latent pipeline's job: {"step": [...], "encode": [...], "decode": [...]}
StepTimer = Callable[[list[tuple[str, int, int]], float], list[list[float] | dict[str, list[float]]]]
PHASES = ("step", "encode", "decode")


@dataclass(frozen=True)
class Dilation:
    k: float
    how: str  # one line: why this K
    measured: list[dict] = field(default_factory=list)  # the steps "auto" timed
    native_hosts_note: str | None = None  # a native role under K > 1 computes K times faster

    def manifest(self) -> dict:
        return {"time_dilation": self.k, "how": self.how, "measured": self.measured,
                "safety_margin": SAFETY_MARGIN if self.measured else None,
                "quantile": QUANTILE if self.measured else None, "duty": DUTY if self.measured else None,
                "native_note": self.native_hosts_note}


def choose_dilation(scenario: Scenario, timer: StepTimer | None = None) -> Dilation:
    """K for a scenario: as given, or measured ("auto"); see the module docstring."""
    given = scenario.run.time_dilation
    if given == "auto":
        k, how, measured = _auto(scenario, timer or _step_timer(scenario))
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
    profiled_roles = [r for r in _roles(scenario) if scenario.nodes.role(r).compute == "profiled"]
    jobs = [(role, model) for role in profiled_roles for model in scenario.nodes.role(role).models]
    if not jobs:
        return 1.0, "auto: no profiled host, so nothing to dilate (K = 1)", []
    profiles = load_profiles(scenario.nodes.profiles_file)
    samples = timer([(model, batch, scenario.nodes.role(role).threads) for role, model in jobs], DUTY)
    rows = [row for (role, model), times in zip(jobs, samples, strict=True)
            for row in _rows(scenario, role, model, times, profile_for(
                profiles, scenario.nodes.role(role).hardware or "", model), batch)]
    worst = max(rows, key=lambda r: r["ratio"])
    k = float(max(1, math.ceil(SAFETY_MARGIN * worst["ratio"])))
    what = "a step" if worst["phase"] == "step" else f"to {worst['phase']} (a latent pipeline's)"
    how = (f"auto: {worst['model']} on {worst['role']} ({worst['hardware']}, batch {batch}) takes "
           f"{worst['real_step_ms']:.1f} ms {what} here (p95 of {worst['steps_timed']}, every profiled "
           f"model computing at once) against {worst['profiled_step_ms']:.2f} ms profiled, "
           f"{worst['ratio']:.1f}x; with a safety margin of {SAFETY_MARGIN:g}, K = {k:g}")
    return k, how, rows


def _rows(scenario: Scenario, role: str, model: str, times: list[float] | dict[str, list[float]],
          profile: StepProfile, batch: int) -> list[dict]:
    """One row per phase timed (a pixel model's steps; a latent pipeline's steps, encoding and
    decoding, where its profile times them): the p95 under load against the profile."""
    share = scenario.topology.cpu_shares.get(role) or 1.0
    phases = times if isinstance(times, dict) else {"step": times}
    profiled_s = {"step": profile.step_s, "encode": profile.encode_s, "decode": profile.decode_s}
    rows = []
    for phase in (p for p in PHASES if phases.get(p)):
        profiled = profiled_s[phase](batch)
        if profiled is None:  # a profile without the phase: the host neither encodes nor decodes
            continue
        real = float(np.quantile(phases[phase], QUANTILE)) / share
        rows.append({"role": role, "hardware": scenario.nodes.role(role).hardware, "model": model,
                     "phase": phase, "batch": batch, "cpu_share": scenario.topology.cpu_shares.get(role),
                     "steps_timed": len(phases[phase]),
                     "real_step_median_ms": round(float(np.median(phases[phase])) / share * 1000, 3),
                     "real_step_ms": round(real * 1000, 3), "profiled_step_ms": round(profiled * 1000, 4),
                     "ratio": round(real / profiled, 3)})
    return rows


def _step_timer(scenario: Scenario) -> StepTimer:
    """The timer of "auto": every job at once (nodes/diffusion/step_timing.py), a latent pipeline's at
    the scenario's scheduler, step count and guidance scale."""
    from nodes.planning.request import DEFAULT_GUIDANCE_SCALE

    guidance = scenario.workload.guidance_scale or DEFAULT_GUIDANCE_SCALE
    generation = (scenario.generation.scheduler, scenario.generation.steps, float(guidance))

    def timer(jobs: list[tuple[str, int, int]], duty: float) -> list[list[float] | dict[str, list[float]]]:
        from nodes.diffusion.step_timing import paced_step_times

        return paced_step_times(jobs, duty, DURATION_S, generation)

    return timer
