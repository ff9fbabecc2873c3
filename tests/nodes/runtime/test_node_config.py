"""The node config: an example that validates, one-line errors naming the field, and the node
command's exit code 2 on a bad config, before any socket is bound."""

import json
import subprocess
import sys

import pytest

from nodes.diffusion.schedulers import ADAPTERS
from nodes.runtime.local_cluster import ROOT, free_ports
from nodes.runtime.node_config import load_node_config
from nodes.schema import SCHEDULER_NAMES

EXAMPLE = {
    "host": "d1", "role": "device", "bind": "tcp://10.0.0.11:5555", "coordinator": "edge",
    "peers": {"edge": {"endpoint": "tcp://10.0.0.2:5555", "role": "edge", "models": ["medium"]},
              "cloud": {"endpoint": "tcp://10.0.0.1:5555", "role": "cloud", "models": ["large"]}},
    "models": ["small"], "compute": {"mode": "profiled", "hardware": "phone"},
    "run_dir": "/tmp/run", "scheduler": "dpm", "steps": 50, "request_timeout_s": 60,
    "clock": {"wall_origin": 1795770000.0},
    "workload": [{"at_s": 0.0, "n": 8, "seed": 1, "strategy": "fixed_split", "deadline_s": 5.0},
                 {"at_s": 2.5, "n": 4, "labels": [3, 3, 3, 3], "seed": 2, "strategy": "cloud_only"}],
}


def _write(tmp_path, data) -> str:
    path = tmp_path / "node.json"
    path.write_text(json.dumps(data) if not isinstance(data, str) else data)
    return str(path)


def test_scheduler_names_match_the_executor():
    assert tuple(ADAPTERS) == SCHEDULER_NAMES  # every name a config accepts has an adapter


def test_the_example_config_validates(tmp_path):
    config = load_node_config(_write(tmp_path, EXAMPLE))
    assert config.roles() == {"d1": "device", "edge": "edge", "cloud": "cloud"}
    assert not config.is_coordinator and set(config.strategies) >= {"cloud_only", "fixed_split"}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"role": "phone"}, "role: Input should be 'cloud', 'edge' or 'device'"),
        ({"bind": "10.0.0.1:5555"}, "bind: Value error, endpoint '10.0.0.1:5555'"),
        ({"coordinator": "cloud"}, "coordinator 'cloud' must be an edge host"),
        ({"coordinator": "nowhere"}, "coordinator 'nowhere' is not this host nor one of the peers"),
        ({"scheduler": "euler"}, "unknown scheduler 'euler'"),
        ({"compute": {"mode": "profiled"}}, "compute.hardware is required"),
        ({"workload": [{"at_s": 0, "n": 3, "labels": [1], "seed": 1, "strategy": "x"}]}, "'labels' has 1"),
        ({"workload": [{"at_s": 0, "n": 1, "strategy": "x", "device": "d2"}]}, "requests of device 'd2'"),
        ({"surprise": 1}, "surprise: unknown field"),
    ],
)
def test_errors_name_the_field(tmp_path, change, message):
    with pytest.raises(ValueError, match="node config") as info:
        load_node_config(_write(tmp_path, {**EXAMPLE, **change}))
    assert message.replace("Value error, ", "") in str(info.value) and "\n" not in str(info.value)


def _node(path: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nodes.runtime.node", "--config", path], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def test_the_node_command_exits_2_with_one_line_on_a_bad_config(tmp_path):
    for data, fragment in [("{not json", "is not JSON"),
                           ({**EXAMPLE, "steps": 0}, "steps: Input should be greater than or equal to 1")]:
        result = _node(_write(tmp_path, data))
        assert result.returncode == 2
        assert result.stderr.count("\n") == 1 and fragment in result.stderr


def test_a_model_or_profile_that_does_not_exist_is_a_bad_config_too(tmp_path):
    (port,) = free_ports(1)
    base = {**EXAMPLE, "bind": f"tcp://127.0.0.1:{port}", "run_dir": str(tmp_path / "run"), "workload": []}
    for change, fragment in [({"models": ["huge"]}, "unknown model 'huge'"),
                             ({"models": ["small"], "compute": {"mode": "profiled", "hardware": "abacus"}},
                              "hardware 'abacus' is not in the profiles")]:
        result = _node(_write(tmp_path, {**base, **change}))
        assert result.returncode == 2, result.stderr
        assert result.stderr.count("\n") == 1 and fragment in result.stderr
        assert not (tmp_path / "run" / "nodes").exists()  # nothing started, nothing written
