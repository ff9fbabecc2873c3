"""What the tests of whole emulated runs share: a short profiled scenario's tables, `edgestage run`
on a scenario file, and the processes a run leaves behind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def profiled_nodes(**roles: tuple[str, str] | None) -> str:
    """`[nodes.ROLE]` tables: ROLE=(model, hardware) holds that one model, paced to the hardware's
    profile; ROLE=None holds no model."""
    tables = ""
    for role, held in roles.items():
        if held is None:
            tables += f"[nodes.{role}]\nmodels = []\n"
        else:
            model, hardware = held
            tables += f'[nodes.{role}]\nmodels = ["{model}"]\ncompute = "profiled"\nhardware = "{hardware}"\n'
    return tables


# the edge's medium and the device's small, paced to their profiles; the cloud holds nothing
PROFILED_NODES = profiled_nodes(edge=("medium", "edge_gpu"), device=("small", "phone"), cloud=None)


def profiled_scenario(topology: str, workload: str, strategies: str, *, timeout_s: float,
                      k: float | str, capture: bool = False, nodes: str = PROFILED_NODES) -> str:
    """A scenario file's text: the given tables' lines, a warmed-up workload, 10 DPM steps and time
    dilation K = `k` (a number or "auto")."""
    return f"""
[topology]
{topology.strip()}

{nodes.strip()}

[workload]
{workload.strip()}
warmup = true
warmup_gap_s = 0.1
warmup_settle_s = 0.3

{strategies.strip()}

[generation]
scheduler = "dpm"
steps = 10

[capture]
enabled = {str(capture).lower()}

[run]
timeout_s = {timeout_s}
time_dilation = {json.dumps(k)}
"""


def run_cli(scenario: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    """`edgestage run` on the scenario file, quietly and without quality figures."""
    return subprocess.run([sys.executable, "-m", "emulation.cli", "run", str(scenario), "--out", str(out),
                           "--quiet", "--no-quality", *extra],
                          capture_output=True, text=True, timeout=600, cwd=REPO)


def processes_of(run_dir: Path) -> list[str]:
    """Processes whose command line names the run directory (node processes, tcpdump), this one
    aside."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if str(run_dir) in cmd and int(pid) != os.getpid():
            found.append(f"{pid} {cmd}")
    return found


class FakeRunnerBase:
    """What the fake runners of the variant tests share (tests/emulation/test_variants.py,
    test_campaign.py): they stand in for the runner and the K measurement, so that compare, sweep
    and campaign are followed without a network; a subclass writes the run directory."""

    def __init__(self, monkeypatch) -> None:
        from emulation import dilation as dilation_module
        from emulation import runner

        self.runs: list = []
        self.measured = 0
        monkeypatch.setattr(runner, "check_can_run", self.check_can_run)
        monkeypatch.setattr(runner, "run_scenario", self.run_scenario)
        monkeypatch.setattr(dilation_module, "choose_dilation", self.choose_dilation)

    @staticmethod
    def check_can_run(out: Path) -> None:
        if out.exists() and any(out.iterdir()):
            raise ValueError(f"--out {out}: exists and is not empty")

    def choose_dilation(self, scenario, timer=None):
        raise NotImplementedError

    def run_scenario(self, scenario, out_dir, **kwargs):
        raise NotImplementedError
