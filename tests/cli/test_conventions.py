"""The command line's conventions (issue 18): --version, -v/-q, exit codes of a run whose measured
requests failed, progress written to a log, outputs handed to the user who ran sudo, --json on
the commands that print results.  None of these needs root or a network: the run's exit code is
judged on a requests table made here, and run's and report's JSON on a fake runner."""

from __future__ import annotations

import importlib.metadata as md
import io
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from emulation.cli import build_parser
from emulation.cli import runs as run_commands
from emulation.cli.args import created_by, hand_to_sudo_user, log_level
from emulation.runner import RunResult
from nodes.progress import progress_bar

REPO = Path(__file__).resolve().parents[2]


def test_version_prints_the_package_version_on_stdout() -> None:
    done = subprocess.run([sys.executable, "-m", "emulation.cli", "--version"], capture_output=True,
                          text=True, timeout=60, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"edgestage {md.version('edgestage')}"), done.stdout
    assert done.stderr == ""


@pytest.mark.parametrize(("argv", "verbose", "quiet"), [
    (["run", "x.toml"], 0, False),
    (["run", "x.toml", "--quiet"], 0, True),  # what make demo's users and the tests write
    (["-q", "run", "x.toml"], 0, True),
    (["-vv", "run", "x.toml"], 2, False),
    (["compare", "x.toml", "-v"], 1, False),
    (["sweep", "x.toml", "--set", "a=1", "-q"], 0, True),
    (["bench", "models", "-v"], 1, False),  # a nested command too
    (["doctor"], 0, False),
])
def test_verbosity_flags_before_or_after_the_command(argv, verbose, quiet) -> None:
    args = build_parser().parse_args(argv)
    assert (args.verbose, args.quiet) == (verbose, quiet)


def test_verbosity_sets_the_logging_level() -> None:
    assert log_level(0, False) == logging.WARNING
    assert log_level(1, False) == logging.INFO
    assert log_level(3, False) == logging.DEBUG
    assert log_level(2, True) == logging.ERROR


def _result(rows: list[tuple[str, bool, str]], summary: dict | None = None) -> RunResult:
    """A run's result whose requests table has one stage row per (request_id, warmup, outcome)
    and a second stage row for each, as the real table has."""
    frame = pd.DataFrame([{"request_id": r, "warmup": w, "outcome": o, "stage_index": i}
                          for r, w, o in rows for i in (0, 1)])
    return RunResult(Path("run"), frame, pd.DataFrame(), summary or {"strategies": {}}, {})


def test_a_run_whose_measured_requests_all_failed_exits_1(capsys) -> None:
    # the warm-up succeeded, every measured request failed: the run measured nothing
    result = _result([("w0", True, "ok"), ("r0", False, "failed"), ("r1", False, "failed")])
    assert run_commands._run_status(result, strict=False) == 1
    assert capsys.readouterr().err.strip() == ("edgestage: all 2 measured requests failed "
                                               "(summary.json: failure_reasons)")


def test_some_failed_requests_fail_the_run_only_under_strict(capsys) -> None:
    result = _result([("w0", True, "failed"), ("r0", False, "ok"), ("r1", False, "failed")])
    assert run_commands._run_status(result, strict=False) == 0
    assert capsys.readouterr().err == ""
    assert run_commands._run_status(result, strict=True) == 1
    assert capsys.readouterr().err.strip() == "edgestage: --strict: 1 of 2 measured requests failed"


def test_failed_warm_ups_do_not_count() -> None:
    result = _result([("w0", True, "failed"), ("r0", False, "ok")])
    assert run_commands.measured_outcomes(result.requests) == (1, 0)
    assert run_commands._run_status(result, strict=True) == 0


def test_strict_names_an_overrun_on_the_last_line(capsys) -> None:
    overran = {"device_only": {"overrun_steps": 3, "overrun_requests": 1, "overrun_s": 0.5}}
    result = _result([("r0", False, "ok"), ("r1", False, "failed")], {"strategies": overran})
    assert run_commands._run_status(result, strict=True) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[0].endswith("1 of 2 measured requests failed")
    assert lines[-1].startswith("edgestage: --strict: profiled compute overran: device_only")


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_to_a_log_is_lines_not_carriage_returns() -> None:
    log = io.StringIO()
    bar = progress_bar(total=200, desc="requests", unit="req", file=log, dynamic_ncols=True)
    for i in range(200):
        bar.set_postfix(ok=i, refresh=False)
        bar.update(1)
    bar.close()
    text = log.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    assert 1 < len(lines) <= 3, lines  # the first, the last, and none in between within seconds
    assert lines[-1].startswith("requests: 100%") and "200/200" in lines[-1]


def test_a_bar_cleared_on_close_leaves_no_blank_line() -> None:
    log = io.StringIO()
    for _ in progress_bar(range(3), desc="large:0-50", leave=False, file=log):
        pass
    assert log.getvalue().count("\n") == 1 and "\r" not in log.getvalue()


def test_progress_on_a_terminal_is_tqdms_own_bar() -> None:
    terminal = _Terminal()
    for _ in progress_bar(range(3), desc="x", file=terminal):
        pass
    assert "\r" in terminal.getvalue()


def test_created_by_is_the_first_folder_that_does_not_exist(tmp_path) -> None:
    assert created_by(tmp_path / "runs" / "a" / "b") == tmp_path / "runs"
    assert created_by(tmp_path) == tmp_path


def test_outputs_go_to_the_sudo_user(tmp_path, monkeypatch) -> None:
    """As root under sudo the tree goes to SUDO_UID:SUDO_GID.  Here, not root, the ids are this
    user's own (a chown to oneself is allowed) and geteuid pretends to be root, so every call of
    the walk runs, and a link out of the tree is changed, not followed."""
    run = tmp_path / "runs" / "r1"
    (run / "plots").mkdir(parents=True)
    (run / "manifest.json").write_text("{}")
    outside = tmp_path / "outside"
    outside.write_text("x")
    (run / "link").symlink_to(outside)
    calls = []
    real_lchown = os.lchown
    monkeypatch.setattr(os, "lchown", lambda p, u, g: (calls.append(str(p)), real_lchown(p, u, g)))
    monkeypatch.setenv("SUDO_UID", str(os.getuid()))
    monkeypatch.setenv("SUDO_GID", str(os.getgid()))
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert hand_to_sudo_user(tmp_path / "runs")
    assert sorted(Path(c).relative_to(tmp_path).as_posix() for c in calls) == [
        "runs", "runs/r1", "runs/r1/link", "runs/r1/manifest.json", "runs/r1/plots"]


def test_no_sudo_or_not_root_changes_nothing(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("SUDO_UID", raising=False)
    assert not hand_to_sudo_user(tmp_path)
    monkeypatch.setenv("SUDO_UID", "not a number")
    monkeypatch.setenv("SUDO_GID", "0")
    assert not hand_to_sudo_user(tmp_path)
    if os.geteuid() != 0:
        monkeypatch.setenv("SUDO_UID", str(os.getuid()))
        assert not hand_to_sudo_user(tmp_path)


def test_a_directory_that_was_there_changes_hands_only_once_accepted(tmp_path, monkeypatch) -> None:
    handed = []
    monkeypatch.setattr(run_commands, "hand_to_sudo_user", handed.append)
    with pytest.raises(ValueError), run_commands._owned_by_sudo_user(tmp_path):  # e.g. not a run
        raise ValueError("holds no run")
    assert handed == []
    with pytest.raises(KeyboardInterrupt), run_commands._owned_by_sudo_user(tmp_path / "new"):
        (tmp_path / "new").mkdir()
        raise KeyboardInterrupt  # what it created is handed over all the same
    with run_commands._owned_by_sudo_user(tmp_path):
        pass
    assert handed == [tmp_path / "new", tmp_path]


def test_compare_prints_each_strategy_s_paired_ratio_with_its_interval_and_test():
    from emulation.cli.runs import _paired_lines

    rows = [{"strategy": "cloud_only", "reference": "cloud_only", "n_pairs": 8, "latency_mean_ratio": 1.0,
             "latency_mean_ratio_ci_low": 1.0, "latency_mean_ratio_ci_high": 1.0, "wilcoxon_p": None,
             "note": "every difference is zero: no test"},
            {"strategy": "elastic", "reference": "cloud_only", "n_pairs": 8, "latency_mean_ratio": 0.714,
             "latency_mean_ratio_ci_low": 0.62, "latency_mean_ratio_ci_high": 0.8, "wilcoxon_p": 0.0078,
             "note": None},
            {"strategy": "oracle", "reference": "cloud_only", "n_pairs": 1, "latency_mean_ratio": 0.5,
             "latency_mean_ratio_ci_low": None, "latency_mean_ratio_ci_high": None, "wilcoxon_p": None,
             "note": "one pair: no interval and no test"}]
    assert _paired_lines(rows)[1:] == ["  elastic: 0.714x (0.62-0.8), p = 0.0078, n = 8",
                                       "  oracle: 0.5x, n = 1 [one pair: no interval and no test]"]
    assert "against cloud_only" in _paired_lines(rows)[0] and _paired_lines([]) == []


JSON_COMMANDS = [["run", "x.toml"], ["compare", "x.toml"], ["sweep", "x.toml", "--set", "a=1"],
                 ["campaign", "x.toml", "--out", "c"], ["report", "runs/r"], ["calibrate", "x.toml"],
                 ["doctor"], ["deploy", "x.toml", "--check"], ["deploy", "x.toml", "--all"],
                 ["deploy-keys", "x.toml"], ["bench", "dilation"]]


@pytest.mark.parametrize("argv", JSON_COMMANDS, ids=lambda argv: argv[0])
def test_every_command_that_prints_results_takes_json(argv) -> None:
    assert build_parser().parse_args([*argv, "--json"]).json is True
    assert build_parser().parse_args(argv).json is False


def test_run_check_json_is_one_document(capsys) -> None:
    from emulation.cli import main

    assert main(["run", str(REPO / "scenarios" / "smoke.toml"), "--check", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["ok"] is True and doc["scenario"].endswith("smoke.toml")
    assert doc["strategies"] and doc["requests"] > 0


def test_run_json_prints_the_summary_and_directory_alone_on_stdout(tmp_path, monkeypatch, capsys) -> None:
    """`run --json` on a fake runner: stdout is one JSON document (the run's directory, status, K
    and summary, NaN as null, numpy numbers plain); the K line goes to stderr."""
    import numpy as np

    from emulation import dilation as dilation_module
    from emulation import runner
    from emulation.cli import main
    from emulation.dilation import Dilation

    summary = {"scenario": "smoke", "status": "completed",
               "strategies": {"cloud_only": {"done": np.int64(2), "latency_p50_s": np.float64(0.2),
                                             "fid": float("nan")}}}

    def run_scenario(scenario, out, on_finish=None, **_):
        result = _result([("r0", False, "ok"), ("r1", False, "ok")], summary)
        result = RunResult(out, result.requests, result.traffic, summary, {"clock": {"time_dilation": 5.0}})
        on_finish(result)
        return result

    monkeypatch.setattr(runner, "check_can_run", lambda out: None)
    monkeypatch.setattr(runner, "run_scenario", run_scenario)
    monkeypatch.setattr(dilation_module, "choose_dilation", lambda scenario: Dilation(5.0, "fake"))
    out = tmp_path / "run"
    assert main(["run", str(REPO / "scenarios" / "smoke.toml"), "--out", str(out), "--json", "-q"]) == 0
    printed = capsys.readouterr()
    doc = json.loads(printed.out)
    assert doc == {"run_dir": str(out), "scenario": "smoke", "status": "completed", "time_dilation": 5.0,
                   "summary": {**summary, "strategies": {"cloud_only": {"done": 2, "latency_p50_s": 0.2,
                                                                        "fid": None}}}}
    assert printed.err.startswith("time dilation K = 5: fake")


def test_report_json_gives_the_report_and_the_run(tmp_path, monkeypatch, capsys) -> None:
    from analysis import report
    from emulation import runner
    from emulation.cli import main

    run = tmp_path / "run"
    run.mkdir()
    (run / "manifest.json").write_text(json.dumps({"status": "running"}))  # its runner was killed
    finished = RunResult(run, pd.DataFrame(), pd.DataFrame(), {"requests": {"recorded": 3, "planned": 4}}, {})
    monkeypatch.setattr(runner, "finish_killed_run", lambda run_dir, quality=True: finished)
    monkeypatch.setattr(report, "write_report", lambda run_dir: Path(run_dir) / "report.md")
    assert main(["report", str(run), "--json"]) == 0
    printed = capsys.readouterr()
    assert json.loads(printed.out) == {"run_dir": str(run), "report": str(run / "report.md"),
                                       "finished_from_records": {"recorded": 3, "planned": 4}}
    assert "finished from its records: 3 of 4 requests recorded" in printed.err
    (run / "manifest.json").write_text(json.dumps({"status": "completed"}))
    assert main(["report", str(run), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["finished_from_records"] is None


def test_json_values_are_plain_and_finite() -> None:
    import numpy as np

    from emulation.cli.args import plain

    value = {"a": np.float32(0.5), "b": [np.int64(3), float("inf")], "c": Path("x"), 1: (np.array([1, 2]),)}
    assert plain(value) == {"a": 0.5, "b": [3, None], "c": "x", "1": [[1, 2]]}
    assert json.dumps(plain(value), allow_nan=False)
