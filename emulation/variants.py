"""Running named variants of a scenario, each a full run directory OUT/<name>/, under one time
dilation: what `edgestage compare` (a variant per strategy and oracle candidate) and `edgestage
sweep` (a variant per value of a field) share.

    dirs = run_variants({"a": scenario_a, "b": scenario_b}, "runs/x")

One K for every variant, chosen once before the first run, so their emulated times compare: the
largest any variant needs ("auto" measures each distinct hardware configuration once: variants
that differ only in their strategies or their links are measured once).  The one exception: when
the variants themselves set different `run.time_dilation` (a sweep over K), each runs at its own.

Progress: before each run a line `run i of N: name` on stderr, and from the second run on the
time left, the mean wall time of the runs finished so far times the runs still to go (this one
included): `run 3 of 8: elastic (about 4 min left)`.  Compare, sweep and campaign all show it.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import sys
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from emulation.scenario import Scenario

if TYPE_CHECKING:
    from emulation.dilation import Dilation

OnRun = Callable[[str, Path], None]


def shared_dilation(scenarios: Iterable[Scenario]) -> Dilation | None:
    """The K all the scenarios run at (the largest any needs), or None where they set different
    `run.time_dilation` (then each chooses its own)."""
    from emulation.dilation import choose_dilation

    scenarios = list(scenarios)
    if len({json.dumps(s.run.time_dilation) for s in scenarios}) > 1:
        return None
    chosen: dict[str, Dilation] = {}
    for scenario in scenarios:
        key = _dilation_inputs(scenario)
        if key not in chosen:
            chosen[key] = choose_dilation(scenario)
    worst = max(chosen.values(), key=lambda d: d.k)
    if len({d.k for d in chosen.values()}) > 1:
        worst = dataclasses.replace(worst, how=f"{worst.how} (the largest of {len(chosen)} variants' K)")
    return worst


def _dilation_inputs(scenario: Scenario) -> str:
    """What choose_dilation reads of a scenario: two scenarios alike in it get the same K."""
    return json.dumps([scenario.run.time_dilation, scenario.workload.images_per_request,
                       sorted(scenario.roles_present()), scenario.nodes.model_dump(mode="json"),
                       scenario.topology.cpu_shares], sort_keys=True, default=str)


def run_variants(runs: Mapping[str, Scenario], out_dir: str | Path, *, dilation: Dilation | None = None,
                 before: Callable[[Dilation | None], None] | None = None, replace: bool = False,
                 quality: bool = True, progress: bool = True, on_run: OnRun | None = None,
                 skip: Collection[str] = (), clock: Callable[[], float] = time.monotonic
                 ) -> dict[str, Path]:
    """Run each variant into OUT/<name>/, in order; name -> its run directory.

    `dilation`: the K of every run (default: shared_dilation of the variants, chosen after OUT is
    checked and before anything is written).  `before(dilation)` is called once OUT exists and
    before the first run (to write what the runs share, e.g. compare.json).  `replace`: OUT is an
    existing directory whose runs `runs` are run again, each old run directory removed first
    (otherwise OUT must be new or empty).  `on_run(name, run_dir)` follows each finished run.
    With `progress`, a line `run i of N: name` on stderr before each run, beside its progress bar,
    with the time left once a run has finished (progress_line; `clock` gives the wall seconds).
    `skip`: names of `runs` already done in OUT (a resumed campaign): not run again, nor in the
    result, nor in the time left, but counted in the `run i of N` lines and in the K chosen."""
    from emulation.runner import check_can_run, make_run_dir, run_scenario

    out = Path(out_dir)
    if not replace:
        check_can_run(out)
    if dilation is None:
        dilation = shared_dilation(runs.values())
    make_run_dir(out)
    if before:
        before(dilation)
    done: dict[str, Path] = {}
    to_run = sum(name not in skip for name in runs)
    started = clock()
    for i, (name, scenario) in enumerate(runs.items(), 1):
        if name in skip:
            continue
        if progress:
            left = time_left(clock() - started, len(done), to_run - len(done)) if done else None
            print(progress_line(i, len(runs), name, left), file=sys.stderr, flush=True)
        if replace:
            shutil.rmtree(out / name, ignore_errors=True)
        run_scenario(scenario, out / name, progress=progress, quality=quality, dilation=dilation)
        done[name] = out / name
        if on_run:
            on_run(name, out / name)
    return done


def time_left(elapsed_s: float, finished: int, remaining: int) -> float:
    """Seconds left: the mean wall time of the `finished` runs (which took `elapsed_s` together,
    what happens between runs included) times the `remaining` ones."""
    return elapsed_s / finished * remaining


def progress_line(i: int, n: int, name: str, left_s: float | None = None) -> str:
    """`run i of N: name`, and `(about 4 min left)` where the time left is known."""
    line = f"run {i} of {n}: {name}"
    return line if left_s is None else f"{line} ({format_duration(left_s)} left)"


def format_duration(seconds: float) -> str:
    """A rough duration, as an estimate deserves: `about 40 s`, `about 4 min`, `about 2.5 h`."""
    if seconds < 90:
        return f"about {max(1, round(seconds))} s"
    if seconds < 90 * 60:
        return f"about {round(seconds / 60)} min"
    return f"about {seconds / 3600:.1f} h"
