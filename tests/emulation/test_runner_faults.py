"""Faults during a run (root): a device's node killed mid-run, and the whole run interrupted.

A killed device's requests are recorded as failed, with the reason, while the other device's
complete; Ctrl-C (SIGINT to `edgestage run`) leaves readable partial results and nothing running."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from emulation.runner import run_scenario
from emulation.scenario import load_scenario
from tests.emulation.emulated_runs import processes_of

pytestmark = pytest.mark.root
ROOT = Path(__file__).resolve().parents[2]
SMOKE = ROOT / "scenarios" / "smoke.toml"
LARGE_PRESENT = (ROOT / "nodes" / "pretrained" / "large" / "config.json").is_file()
needs_large = pytest.mark.skipif(not LARGE_PRESENT, reason="the large model is not trained in this checkout")


def _lines(path: Path) -> int:
    try:
        return path.read_bytes().count(b"\n")
    except OSError:
        return 0


def _kill_when_it_has_served_one(run_dir: Path, host: str, killed: dict) -> None:
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        if _lines(run_dir / "records" / f"{host}.jsonl") >= 1:
            pid = json.loads((run_dir / "nodes" / f"{host}.json").read_text())["pid"]
            os.kill(pid, signal.SIGKILL)  # by its own pid, as a crashed host
            killed.update(pid=pid, at=time.time())
            return
        time.sleep(0.05)


@needs_large
@pytest.mark.slow
def test_killed_device_fails_its_requests_and_the_others_complete(tmp_path, nothing_left_after):
    scenario = load_scenario(SMOKE)
    scenario = scenario.model_copy(update={"workload": scenario.workload.model_copy(update={"requests": 12})})
    out = tmp_path / "run"
    killed: dict = {}
    watcher = threading.Thread(target=_kill_when_it_has_served_one, args=(out, "d2", killed), daemon=True)
    watcher.start()
    result = run_scenario(scenario, out, progress=False, quality=False)
    watcher.join(timeout=5)
    nothing_left_after.update(h["name"] for h in result.manifest["network"]["hosts"])
    assert killed, "d2 never served a request"
    requests = result.requests.groupby("request_id").first()
    assert len(requests) == 12
    d1, d2 = requests[requests["device"] == "d1"], requests[requests["device"] == "d2"]
    assert (d1["outcome"] == "ok").all(), d1["reason"].tolist()
    assert (d2["outcome"] == "ok").sum() >= 1
    failed = d2[d2["outcome"] == "failed"]
    assert len(failed) >= 1 and failed["reason"].str.contains("d2 exited").all(), failed["reason"].tolist()
    assert result.manifest["status"] == "completed" and result.manifest["node_exit_codes"]["d2"] == -9
    assert not processes_of(out)
    # the "all nodes up" memory figure was taken while d2 was still alive, not after it died
    memory = result.manifest["memory"]
    assert set(memory["nodes"]) == {"cloud", "edge", "d1", "d2"}
    clock = result.manifest["clock"]  # t_taken: emulated seconds on the run's clock
    assert clock["wall_origin"] + memory["t_taken"] * clock["time_dilation"] < killed["at"]


@needs_large
def test_sigint_leaves_partial_results_and_nothing_running(tmp_path, nothing_left_after):
    out = tmp_path / "run"
    recorded = lambda: sum(_lines(p) for p in (out / "records").glob("*.jsonl")) >= 1  # noqa: E731
    returncode, err = _interrupt_when(SMOKE, out, recorded, "a recorded request")
    assert returncode == 130, err
    manifest = json.loads((out / "manifest.json").read_text())
    nothing_left_after.update(h["name"] for h in manifest["network"]["hosts"])
    assert manifest["status"] == "interrupted"
    requests = pd.read_parquet(out / "requests.parquet")
    assert (requests["outcome"] == "ok").any()
    assert json.loads((out / "summary.json").read_text())["status"] == "interrupted"
    for pcap in (out / "pcap").glob("*.pcap"):
        res = subprocess.run(["tshark", "-r", str(pcap), "-c", "1"], capture_output=True, timeout=60)
        assert res.returncode == 0, res.stderr
    assert not processes_of(out)


def _smoke_variant(tmp_path: Path, extra: str, timeout_s: int = 5, warmup: bool = False) -> Path:
    """smoke.toml with a short request timeout, warm-up on or off, and `extra` TOML appended."""
    text = SMOKE.read_text().replace("request_timeout_s = 30",
                                     f"request_timeout_s = {timeout_s}\nwarmup = {str(warmup).lower()}")
    path = tmp_path / "scenario.toml"
    path.write_text(text + "\n" + extra)
    return path


def _wait_for(condition, proc: subprocess.Popen, what: str, limit: float = 240) -> None:
    deadline = time.monotonic() + limit
    while not condition():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, f"{what}: not in {limit:g} s"
        time.sleep(0.05)


def _interrupt_when(scenario: Path, out: Path, condition, what: str) -> tuple[int, str]:
    """`edgestage run` in a subprocess, SIGINT once `condition()` holds: (exit code, stderr).
    (An interrupted run computes no quality figures either way.)"""
    argv = [sys.executable, "-m", "emulation.cli", "run", str(scenario), "--out", str(out), "--quiet",
            "--no-quality"]
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(condition, proc, what)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, err


def _nodes_ready(out: Path, count: int) -> bool:
    return len(list((out / "nodes").glob("*.json"))) >= count


@needs_large
@pytest.mark.slow
def test_a_run_in_which_every_measured_request_fails_ends_with_its_summary(tmp_path, nothing_left_after):
    """The access link goes down at t = 0 of the workload's clock (the first measured request):
    the warm-up requests before it are served, every measured one fails, and the run still ends
    with its summary, report and final status.  An event at 0.0 also no longer stops capture."""
    path = _smoke_variant(tmp_path, '[[topology.events]]\nat = 0.0\nlink = ["ap", "edge"]\naction = "down"\n',
                          timeout_s=3, warmup=True)
    result = run_scenario(load_scenario(path), tmp_path / "run", progress=False, quality=False)
    out = result.run_dir
    nothing_left_after.update(h["name"] for h in result.manifest["network"]["hosts"])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "completed" and result.manifest["status"] == "completed"
    assert summary["requests"] == {"planned": 16, "recorded": 16, "ok": 8}  # the 8 warm-up ones
    measured = result.requests[result.requests["warmup"].ne(True)].groupby("request_id").first()
    assert len(measured) == 8 and (measured["outcome"] == "failed").all()
    assert measured["reason"].str.contains("timeout").all(), measured["reason"].tolist()
    for entry in summary["strategies"].values():
        assert entry["done"] == 0 and entry["failed"] == 2 and sum(entry["failure_reasons"].values()) == 2
    assert (out / "report.md").is_file()
    # the event happened on the workload's clock: at the first measured request, after warm-up
    events = [json.loads(line) for line in (out / "link_events.jsonl").read_text().splitlines()]
    down = next(e for e in events if e.get("state") == "down")
    assert -0.05 <= down["t"] < 1.0, down
    first_measured = measured["t_request_sent"].min()  # on the same clock: emulated s from origin
    assert down["t"] <= first_measured + 1.0
    origin = result.manifest["clock"]["wall_origin"]
    assert abs(measured["wall_t_request_sent"].min() - origin - first_measured) < 1e-6
    assert (measured["t_scheduled"].min(), measured["at_s"].min()) == (pytest.approx(0.0), 0.0)
    warm = result.requests[result.requests["warmup"].eq(True)]
    assert (warm["at_s"] < 0).all() and (warm["t_scheduled"] < 0).all()  # warm-ups go before t = 0
    assert warm["t_result_received"].max() < down["t"]  # every warm-up request ended before it
    assert warm["wall_t_result_received"].max() < down["wall_t"]
    assert all(c.get("captured", 0) > 0 for c in result.manifest["capture"])


@needs_large
def test_sigint_before_the_first_result_still_writes_the_summary(tmp_path, nothing_left_after):
    """Ctrl-C once the nodes are up and before any request is recorded: exit 130, and the run
    ends with every planned request failed with the reason, a summary and a final status."""
    out = tmp_path / "run"
    path = _smoke_variant(tmp_path, "", timeout_s=30)
    ready = lambda: _nodes_ready(out, 4)  # noqa: E731  (cloud, edge, d1, d2)
    returncode, err = _interrupt_when(path, out, ready, "nodes ready")
    assert returncode == 130, err
    assert "Traceback" not in err, err
    manifest = json.loads((out / "manifest.json").read_text())
    nothing_left_after.update(h["name"] for h in manifest["network"]["hosts"])
    summary = json.loads((out / "summary.json").read_text())
    assert manifest["status"] == summary["status"] == "interrupted"
    requests = pd.read_parquet(out / "requests.parquet").groupby("request_id").first()
    assert len(requests) == summary["requests"]["planned"] == 8
    failed = requests[requests["outcome"] == "failed"]
    assert len(failed) + (requests["outcome"] == "ok").sum() == 8 and len(failed) >= 1
    assert failed["reason"].str.contains("interrupted|stopped").all(), failed["reason"].tolist()
    assert (out / "report.md").is_file()
    assert not processes_of(out)


@needs_large
@pytest.mark.slow
def test_sigkill_of_the_runner_leaves_nothing_and_report_finishes_the_run(tmp_path, nothing_left_after):
    """SIGKILL of `edgestage run` mid-run: nothing of ours is left (the cgroup watcher removes
    the CPU groups, the nodes die with their launcher), and `edgestage report` rebuilds the
    requests table from the devices' records, every planned request in it."""
    out = tmp_path / "run"
    path = _smoke_variant(tmp_path, "", timeout_s=30)
    proc = subprocess.Popen([sys.executable, "-m", "emulation.cli", "run", str(path), "--out", str(out),
                             "--quiet", "--no-quality"], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        _wait_for(lambda: sum(_lines(p) for p in (out / "records").glob("*.jsonl")) >= 1, proc,
                  "a recorded request")
        recorded = {json.loads(line)["request_id"] for p in (out / "records").glob("*.jsonl")
                    for line in p.read_text().splitlines() if line.endswith("}")}
        proc.kill()
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "running"
    nothing_left_after.update(h["name"] for h in manifest["network"]["hosts"])
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and (processes_of(out) or _cgroups_of(manifest)):
        time.sleep(0.2)
    assert not processes_of(out) and not _cgroups_of(manifest)
    res = subprocess.run([sys.executable, "-m", "emulation.cli", "report", str(out), "--no-quality"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "killed"
    assert json.loads((out / "manifest.json").read_text())["status"] == "killed"
    requests = pd.read_parquet(out / "requests.parquet").groupby("request_id").first()
    assert len(requests) == 8 and recorded <= set(requests.index)
    unrecorded = requests[~requests.index.isin(recorded) & (requests["outcome"] == "failed")]
    assert unrecorded["reason"].str.contains("killed|stopped|no record").all(), unrecorded["reason"].tolist()


def _cgroups_of(manifest: dict) -> list[str]:
    """CPU cgroups whose name holds the runner's pid (they are named edgestage-<pid>.<start>-<n>)."""
    pid = manifest["runner"]["pid"]
    root = Path("/sys/fs/cgroup/cpu")
    return [p.name for p in root.glob(f"edgestage-{pid}.*")] if root.is_dir() else []
