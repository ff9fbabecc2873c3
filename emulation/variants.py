"""Running named variants of a scenario, each a full run directory OUT/<name>/, under one time
dilation: what `edgestage compare` (a variant per strategy and oracle candidate) and `edgestage
sweep` (a variant per value of a field) share.

    dirs = run_variants({"a": scenario_a, "b": scenario_b}, "runs/x")

One K for every variant, chosen once before the first run, so their emulated times compare: the
largest any variant needs ("auto" measures each distinct hardware configuration once: variants
that differ only in their strategies or their links are measured once).  The one exception: when
the variants themselves set different `run.time_dilation` (a sweep over K), each runs at its own.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import sys
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
                 skip: Collection[str] = ()) -> dict[str, Path]:
    """Run each variant into OUT/<name>/, in order; name -> its run directory.

    `dilation`: the K of every run (default: shared_dilation of the variants, chosen after OUT is
    checked and before anything is written).  `before(dilation)` is called once OUT exists and
    before the first run (to write what the runs share, e.g. compare.json).  `replace`: OUT is an
    existing directory whose runs `runs` are run again, each old run directory removed first
    (otherwise OUT must be new or empty).  `on_run(name, run_dir)` follows each finished run.
    With `progress`, a line `run i of N: name` on stderr before each run, beside its progress bar.
    `skip`: names of `runs` already done in OUT (a resumed campaign): not run again, nor in the
    result, but counted in the `run i of N` lines and in the K chosen."""
    from emulation.runner import check_can_run, make_run_dir, run_scenario

    out = Path(out_dir)
    if not replace:
        check_can_run(out)
    if dilation is None:
        dilation = shared_dilation(runs.values())
    make_run_dir(out)
    if before:
        before(dilation)
    done = {}
    for i, (name, scenario) in enumerate(runs.items(), 1):
        if name in skip:
            continue
        if progress:
            print(f"run {i} of {len(runs)}: {name}", file=sys.stderr, flush=True)
        if replace:
            shutil.rmtree(out / name, ignore_errors=True)
        run_scenario(scenario, out / name, progress=progress, quality=quality, dilation=dilation)
        done[name] = out / name
        if on_run:
            on_run(name, out / name)
    return done
