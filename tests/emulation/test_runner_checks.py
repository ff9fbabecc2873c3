"""What the runner checks before anything starts (the run directory) and the workload's clock."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from emulation.runner import _Run, check_can_run, make_run_dir
from emulation.scenario import parse_scenario, scenario_tables
from emulation.workload import plan_workload

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.root
@pytest.mark.parametrize("where, message", [
    ("file/run", "is not a directory"),
    ("file", "exists and is not a directory"),
    ("/proc/edgestage-run", "kernel file system"),
    ("/sys/kernel/edgestage-run", "kernel file system"),
])
def test_an_output_directory_that_cannot_be_made_is_refused_first(tmp_path: Path, where: str,
                                                                  message: str) -> None:
    (tmp_path / "file").write_text("not a directory")
    out = Path(where) if where.startswith("/") else tmp_path / where
    with pytest.raises(ValueError, match=message):
        check_can_run(out)
    assert not out.exists() or out.is_file()


@pytest.mark.root
def test_make_run_dir_turns_os_errors_into_one_line(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="cannot create it"):
        make_run_dir(tmp_path / "file" / "run")


def _run_with_event(at: float, warmup: bool) -> _Run:
    data, _ = scenario_tables(ROOT / "scenarios" / "smoke.toml")
    data["topology"]["events"] = [{"at": at, "link": ["ap", "edge"], "action": "down"}]
    data["workload"]["warmup"] = warmup
    run = _Run(parse_scenario(data), Path("/nonexistent"), progress=False)
    run.planned = plan_workload(run.scenario.workload, ["d1", "d2"], run.scenario.strategy_names())
    return run


def test_the_clock_starts_at_the_first_measured_request() -> None:
    cold = _run_with_event(1.0, warmup=False)
    assert cold.first_at_s() == 0.0 and min(r.at_s for r in cold.planned) == 0.0
    # 2 devices x 4 strategies of warm-up, 0.5 s apart, then 3 s to settle (emulation/workload.py):
    # the warm-ups go before t = 0, the first measured request at t = 0
    warm = _run_with_event(1.0, warmup=True)
    assert warm.first_at_s() == pytest.approx(-(2 * 4 * 0.5 + 3.0))
    assert min(r.at_s for r in warm.planned if not r.warmup) == 0.0
    assert max(r.at_s for r in warm.planned if r.warmup) == pytest.approx(-3.5)


def test_an_event_after_the_last_measured_request_is_warned_about(caplog) -> None:
    # smoke: 8 requests 0.5 s apart, so the last measured one goes at 3.5 s on the workload's clock
    inside = _run_with_event(3.0, warmup=True)
    inside._warn_outside_window()
    assert inside.warnings == []
    outside = _run_with_event(12.0, warmup=True)
    with caplog.at_level(logging.WARNING):
        outside._warn_outside_window()
    assert len(outside.warnings) == 1 and "12 s comes after the last measured request" in outside.warnings[0]
    assert outside.warnings[0] in caplog.text
