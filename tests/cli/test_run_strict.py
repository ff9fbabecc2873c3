"""`edgestage run --strict`: a run whose profiled compute overran exits 1 with one line naming the
strategies, after its table and run directory are written as for any run.  The run itself (root,
Mininet) is replaced by one that returns a canned summary: what is tested is the command's verdict."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from types import SimpleNamespace

import pytest

import emulation.runner
import emulation.scenario
from emulation.cli import main

SMOKE_RUN = Path(__file__).resolve().parents[1] / "data" / "smoke-run"


@pytest.fixture
def fake_run(monkeypatch, tmp_path):
    """`run` gives the smoke run's summary.json, with cloud_only's steps overrunning if asked."""
    document = json.loads((SMOKE_RUN / "summary.json").read_text())
    state = {"overran": False}

    def run_scenario(scenario, out_dir, progress, quality, on_finish):
        summary = copy.deepcopy(document)
        if state["overran"]:
            summary["strategies"]["cloud_only"].update(overrun_steps=12, overrun_s=0.84, overrun_requests=2)
        out = Path(out_dir)
        out.mkdir(parents=True)
        (out / "summary.json").write_text(json.dumps(summary))
        result = SimpleNamespace(run_dir=out, summary=summary)
        on_finish(result)
        return result

    monkeypatch.setattr(emulation.scenario, "load_scenario", lambda path: SimpleNamespace())
    monkeypatch.setattr(emulation.runner, "run_scenario", run_scenario)
    return state, tmp_path


def test_strict_fails_a_run_that_overran_and_keeps_its_directory(fake_run, capsys):
    state, tmp = fake_run
    state["overran"] = True
    assert main(["run", "s.toml", "--out", str(tmp / "run"), "--strict", "--quiet"]) == 1
    out, err = capsys.readouterr()
    line = "edgestage: --strict: profiled compute overran: cloud_only 12 steps in 2 requests, +0.84 s"
    assert err.strip().splitlines() == [line]
    assert "cloud_only!" in out and (tmp / "run" / "summary.json").is_file()


def test_without_strict_an_overrun_is_flagged_but_not_fatal(fake_run, capsys):
    state, tmp = fake_run
    state["overran"] = True
    assert main(["run", "s.toml", "--out", str(tmp / "run"), "--quiet"]) == 0
    out, err = capsys.readouterr()
    assert "overran: cloud_only 12 steps in 2 requests, +0.84 s" in out and err == ""


def test_strict_passes_a_run_without_overruns(fake_run, capsys):
    _, tmp = fake_run
    assert main(["run", "s.toml", "--out", str(tmp / "run"), "--strict", "--quiet"]) == 0
    out, err = capsys.readouterr()
    assert "overran" not in out and err == ""
