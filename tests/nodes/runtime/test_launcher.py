"""The node launcher (nodes/runtime/launcher.py): nodes forked from one process that imported torch and
diffusers once. Real node processes on loopback: they serve requests exactly as nodes started
one by one, share the imported pages, do without scipy, report their exits, and never outlive
the launcher; a bad command gets an error event and the launcher goes on."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nodes.diffusion.generation import generate
from nodes.diffusion.samples import load_samples
from nodes.planning.plan import parse_plan
from nodes.runtime.launcher import NodeLauncher
from nodes.runtime.local_cluster import ROOT, LocalCluster, Probe, loopback_configs
from nodes.runtime.memory import process_memory

STEPS = 8
STRATEGIES = {"cloud_only": {"kind": "cloud_only", "model": "large"},
              "edge_only": {"kind": "edge_only", "model": "small"},
              "fixed_split": {"kind": "fixed_split", "split": [
                  {"model": "small", "tier": "cloud", "share": 0.5},
                  {"model": "small", "tier": "edge", "share": 0.25},
                  {"model": "small", "tier": "device", "share": 0.25}]}}
EXPECTED_UNSPLIT = {"cloud_only": "large:0-8", "edge_only": "small:0-8", "fixed_split": "small:0-8"}


def _workload() -> list[dict]:
    strategies = 2 * list(STRATEGIES)
    return [{"at_s": 0.2 * i, "n": 4, "seed": 40 + i, "strategy": s} for i, s in enumerate(strategies)]


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run")
    hosts = {"d1": {"role": "device", "models": ["small"], "workload": _workload()},
             "probe": {"role": "device"},
             "edge": {"role": "edge", "models": ["small"]},
             "cloud": {"role": "cloud", "models": ["small", "large"]}}
    configs = loopback_configs(run_dir, hosts, steps=STEPS, scheduler="dpm", request_timeout_s=120,
                               strategies=STRATEGIES)
    configs.pop("probe")
    with LocalCluster(configs, shared_imports=True) as local:
        local.probe_endpoint = configs["d1"].peers["probe"].endpoint
        local.wait_workload(timeout=240)
        yield local


def test_every_node_is_a_child_of_the_launcher(cluster):
    launcher = cluster.launcher
    assert launcher is not None and launcher.import_s > 0
    for node in cluster.nodes.values():
        assert node.process.poll() is None
        assert int(Path(f"/proc/{node.pid}/stat").read_text().rsplit(")", 1)[1].split()[1]) == launcher.pid
        assert Path(f"/proc/{node.pid}/comm").read_text().strip() == f"node-{node.host}"


def test_forked_nodes_serve_the_same_images_as_an_unsplit_local_run(cluster):
    run_dir = cluster.nodes["d1"].config.run_dir
    rows = [json.loads(line) for line in (run_dir / "records" / "d1.jsonl").read_text().splitlines()]
    done = {r["request_id"]: r for r in rows if r["outcome"] == "ok"}
    assert len(done) == 2 * len(STRATEGIES), [r.get("reason") for r in rows]
    for request_id, row in done.items():
        samples = load_samples(run_dir / "samples" / f"{request_id}.npz")
        local = generate(parse_plan(EXPECTED_UNSPLIT[row["strategy"]]), samples.labels, samples.seed, "dpm")
        assert (samples.images - local).abs().max().item() <= 1e-5


def test_nodes_share_the_imported_pages(cluster):
    for node in cluster.nodes.values():
        memory = process_memory(node.pid)
        # torch and diffusers are mapped in every node, but held once: a node owns a small part
        assert memory["uss"] < memory["rss"] / 3, (node.host, memory)
        assert memory["pss"] < memory["rss"] / 2, (node.host, memory)


def test_nodes_do_without_scipy_and_still_have_torch(cluster):
    for node in cluster.nodes.values():
        maps = Path(f"/proc/{node.pid}/maps").read_text()
        assert "libtorch" in maps
        assert "/scipy/" not in maps and "/scipy.libs/" not in maps


def test_a_killed_node_is_reported_with_its_signal_and_the_rest_keep_serving(cluster):
    cloud = cluster.nodes["cloud"]
    cloud.kill()
    assert cloud.process.returncode == -signal.SIGKILL and not _alive(cloud.pid)
    probe = Probe("probe", cluster.probe_endpoint, cluster.nodes["edge"].config.bind)
    try:
        reply, _ = probe.request("after-kill", "edge_only", [1, 2], seed=3)
    finally:
        probe.close()
    assert reply.envelope.kind == "result"
    assert cluster.nodes["edge"].process.poll() is None and cluster.nodes["d1"].process.poll() is None


def test_closing_the_launcher_stops_every_node(tmp_path):
    configs = loopback_configs(tmp_path, {"e": {"role": "edge", "models": ["small"]},
                                          "c": {"role": "cloud", "models": ["small"]}},
                               coordinator="e", steps=STEPS, scheduler="ddim")
    local = LocalCluster(configs, shared_imports=True)
    with local:
        pids = [node.pid for node in local.nodes.values()] + [local.launcher.pid]
        assert all(_alive(pid) for pid in pids)
        local.launcher.close()
        assert {node.process.returncode for node in local.nodes.values()} == {0}
    assert not any(_alive(pid) for pid in pids)


def test_nodes_die_with_a_killed_launcher(tmp_path):
    configs = loopback_configs(tmp_path, {"e": {"role": "edge", "models": ["small"]}}, coordinator="e",
                               steps=STEPS, scheduler="ddim")
    config = configs["e"]
    launcher = NodeLauncher(tmp_path)
    launcher.start()
    try:
        config.write_for_launch()
        node = launcher.spawn("e", config.config_file, config.log_file)
        os.kill(launcher.pid, signal.SIGKILL)
        assert node.wait(30) == -signal.SIGTERM  # what the launcher's death sends them
        launcher.signal(node, signal.SIGTERM)  # signalling through a dead launcher is not an error
        deadline = time.monotonic() + 30
        while _alive(node.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(node.pid)
    finally:
        launcher.close()


def _command(launcher: subprocess.Popen, command: object) -> dict:
    line = command if isinstance(command, str) else json.dumps(command)
    launcher.stdin.write(line + "\n")
    launcher.stdin.flush()
    return json.loads(launcher.stdout.readline())


def test_bad_commands_get_an_error_event_and_the_launcher_goes_on(tmp_path):
    outside = tmp_path.parent / f"{tmp_path.name}-outside.json"
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    launcher = subprocess.Popen([sys.executable, "-m", "nodes.runtime.launcher", str(run_dir)], cwd=ROOT,
                                text=True, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
    try:
        assert json.loads(launcher.stdout.readline())["event"] == "ready"
        cases = {
            "not json": ("Expecting value", None),
            "[1, 2]": ("a command must be a JSON object", None),
            json.dumps({"op": "fork"}): ("unknown op 'fork'", "fork"),
            json.dumps({"op": "spawn", "host": "x"}): ("KeyError", "spawn"),
            json.dumps({"op": "spawn", "host": "x", "config": str(outside), "log": str(run_dir / "x.log")}):
                ("outside the run directory", "spawn"),
            json.dumps({"op": "spawn", "host": "x", "config": str(run_dir / "none.json"),
                        "log": str(run_dir / "x.log")}): ("no config file", "spawn"),
            json.dumps({"op": "signal", "pid": 1, "signal": 9}): ("not a running child", "signal"),
        }
        for line, (message, op) in cases.items():
            event = _command(launcher, line)
            assert event["event"] == "error" and message in event["error"] and event["op"] == op, event
            assert "\n" not in event["error"]
        assert launcher.poll() is None
        launcher.stdin.close()
        assert launcher.wait(30) == 0
    finally:
        if launcher.poll() is None:
            launcher.kill()
            launcher.wait()
    assert not (run_dir / "x.log").exists()


def test_a_missing_run_directory_is_a_one_line_error(tmp_path):
    done = subprocess.run([sys.executable, "-m", "nodes.runtime.launcher", str(tmp_path / "nope")], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and "does not exist" in done.stderr


def test_a_process_the_launcher_kept_scipy_out_of_can_let_it_back_in():
    """The coordinator does so before it imports a plugin strategy (which may need scikit-learn)."""
    code = ("import sys\nsys.modules['scipy'] = None\n"
            "try:\n    import scipy\nexcept ImportError:\n    print('blocked')\n"
            "from nodes.runtime.memory import unblock_unused\nunblock_unused()\n"
            "import scipy.linalg\nprint('imported', scipy.linalg.__name__)\n")
    repo = Path(__file__).resolve().parents[3]
    done = subprocess.run([sys.executable, "-c", code], cwd=repo, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["blocked", "imported", "scipy.linalg"]
