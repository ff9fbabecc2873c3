"""64 devices on one machine (root): scenarios/crowd.toml brings up 64 device hosts plus the access
point, edge server and cloud, forks 66 node processes from one launcher into their namespaces, and
every device's requests (one per strategy) are served; together the nodes take a fraction of what
66 separate processes would."""

from pathlib import Path

import pytest

from emulation.runner import run_scenario
from emulation.scenario import load_scenario

pytestmark = [pytest.mark.root, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]
CROWD = ROOT / "scenarios" / "crowd.toml"


def test_64_devices_each_with_a_node_all_served(tmp_path, nothing_left_after):
    scenario = load_scenario(CROWD)
    # what is tested is 64 devices with their nodes, not their compute: one image per request,
    # twice as often, keeps the suite's time (docs/measurements.md: crowd.toml as it stands)
    workload = scenario.workload.model_copy(update={"images_per_request": 1, "interval_s": 0.05})
    # and 4 denoising steps, not 10: the cloud's large model is the bottleneck, its queue the run's length
    generation = scenario.generation.model_copy(update={"steps": 4})
    # and no packet capture: 67 tcpdumps and the analysis of their pcaps (15 s), which nothing here
    # checks (test_runner_smoke.py checks capture and the traffic accounting)
    capture = scenario.capture.model_copy(update={"enabled": False})
    scenario = scenario.model_copy(update={"workload": workload, "generation": generation,
                                           "capture": capture})
    result = run_scenario(scenario, tmp_path / "run", progress=False, quality=False)
    hosts = {h["name"] for h in result.manifest["network"]["hosts"]}
    nothing_left_after.update(hosts)
    requests = result.requests.groupby("request_id").first()
    assert len(requests) == 256 and set(requests["device"]) == {f"d{i}" for i in range(1, 65)}
    assert (requests["outcome"] == "ok").all(), requests["reason"].dropna().tolist()
    memory = result.manifest["memory"]
    assert len(memory["nodes"]) == 66
    # 66 processes that each map ~300 MB of torch and diffusers, held about once
    assert memory["total_pss_mb"] < 66 * memory["node_rss_median_mb"] / 4, memory
    assert set(result.manifest["node_exit_codes"].values()) == {0}
