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


def _our_processes(run_dir: Path) -> list[str]:
    """Processes whose command line names the run directory: node processes, tcpdump."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if str(run_dir) in cmd and int(pid) != os.getpid():
            found.append(f"{pid} {cmd}")
    return found


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
    assert not _our_processes(out)


@needs_large
def test_sigint_leaves_partial_results_and_nothing_running(tmp_path, nothing_left_after):
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "emulation.cli", "run", str(SMOKE), "--out", str(out),
                             "--quiet"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 240
        while sum(_lines(p) for p in (out / "records").glob("*.jsonl")) < 1:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no request was recorded in time"
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    manifest = json.loads((out / "manifest.json").read_text())
    nothing_left_after.update(h["name"] for h in manifest["network"]["hosts"])
    assert manifest["status"] == "interrupted"
    requests = pd.read_parquet(out / "requests.parquet")
    assert (requests["outcome"] == "ok").any()
    assert json.loads((out / "summary.json").read_text())["status"] == "interrupted"
    for pcap in (out / "pcap").glob("*.pcap"):
        res = subprocess.run(["tshark", "-r", str(pcap), "-c", "1"], capture_output=True, timeout=60)
        assert res.returncode == 0, res.stderr
    assert not _our_processes(out)
