"""A node inside the emulation keeps serving while it is fed thousands of fuzzed frames (root).

During a smoke run, a process inside device d1's namespace sends hypothesis-generated multipart
messages (random bytes, and JSON envelopes with random kinds, fields and origins) to the edge
server's inbox over the emulated links; every request of the workload must still complete."""

import sys
from pathlib import Path

import pytest

from emulation.node_procs import NODE_PORT
from emulation.runner import run_scenario
from emulation.scenario import load_scenario

pytestmark = [pytest.mark.root, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]
LARGE_PRESENT = (ROOT / "nodes" / "pretrained" / "large" / "config.json").is_file()
FRAMES = 2000

FUZZER = r"""
import json, sys
import zmq
from hypothesis import HealthCheck, given, settings, strategies as st

endpoint, count = sys.argv[1], int(sys.argv[2])
ctx = zmq.Context()
sock = ctx.socket(zmq.PUSH)
sock.setsockopt(zmq.SNDHWM, 100000)
sock.setsockopt(zmq.LINGER, 5000)
sock.connect(endpoint)
envelope = st.fixed_dictionaries({
    "v": st.one_of(st.just(1), st.integers(), st.none()),
    "kind": st.sampled_from(["request", "stage", "result", "error", "accepted", "bogus"]),
    "request_id": st.text(max_size=80), "origin": st.sampled_from(["d1", "d2", "edge", "zz"]),
    "n": st.integers(-5, 300), "seed": st.integers(-1, 2**64), "stage": st.integers(-2, 40),
    "labels": st.lists(st.integers(-1, 11), max_size=6), "plan": st.text(max_size=40),
}).map(lambda d: json.dumps(d).encode())
frame = st.one_of(st.binary(max_size=300), envelope)
sent = 0

@settings(max_examples=count, database=None, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
@given(st.lists(frame, min_size=1, max_size=4))
def send(frames):
    global sent
    sock.send_multipart(frames)
    sent += 1

send()
sock.close()
ctx.term()
print(sent)
"""


@pytest.mark.skipif(not LARGE_PRESENT, reason="the large model is not trained in this checkout")
def test_edge_keeps_serving_under_fuzzed_frames(tmp_path, nothing_left_after):
    scenario = load_scenario(ROOT / "scenarios" / "smoke.toml")
    sent: list[str] = []

    def fuzz(net, run_dir):
        import subprocess

        proc = net.popen("d1", [sys.executable, "-c", FUZZER, f"tcp://{net.ip('edge')}:{NODE_PORT}",
                                str(FRAMES)], cpu_limited=False, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
        out, err = proc.communicate(timeout=240)
        assert proc.returncode == 0, err.decode()[-2000:]
        sent.append(out.decode().strip())

    result = run_scenario(scenario, tmp_path / "run", progress=False, quality=False, during=fuzz)
    nothing_left_after.update(h["name"] for h in result.manifest["network"]["hosts"])
    assert "during_error" not in result.manifest, result.manifest["during_error"]
    assert sent and int(sent[0]) >= FRAMES // 2
    requests = result.requests.groupby("request_id").first()
    assert len(requests) == scenario.workload.requests
    assert (requests["outcome"] == "ok").all(), requests["reason"].tolist()
    edge = result.manifest["nodes"]["edge"]
    assert edge["state"] == "stopped" and edge["dropped"] >= int(sent[0]) // 2
    assert result.manifest["node_exit_codes"]["edge"] == 0
