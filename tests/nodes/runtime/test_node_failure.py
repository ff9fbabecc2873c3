"""A worker killed mid-run: the device records the requests it would have served as failed, with a
reason naming the dead host, long before its request timeout, while the others complete; the
survivors still stop cleanly on SIGTERM."""

import os
import time

import pytest

from nodes.runtime.local_cluster import LocalCluster, loopback_configs
from nodes.runtime.records import read_records

TIMEOUT_S = 60.0  # far more than the whole workload takes: a dead host must not cost a timeout


@pytest.mark.slow
def test_killing_the_cloud_fails_its_requests_and_spares_the_others(tmp_path):
    workload = []
    for index in range(4):
        workload.append({"at_s": 1.5 * index, "n": 2, "seed": index, "strategy": "cloud_only"})
        workload.append({"at_s": 1.5 * index + 0.2, "n": 2, "seed": index, "strategy": "edge_only"})
    hosts = {"d1": {"role": "device", "workload": workload},
             "edge": {"role": "edge", "models": ["small"]},
             "cloud": {"role": "cloud", "models": ["small"]}}
    strategies = {"cloud_only": {"kind": "cloud_only", "model": "small"},
                  "edge_only": {"kind": "edge_only", "model": "small"}}
    configs = loopback_configs(tmp_path, hosts, steps=8, scheduler="ddim", request_timeout_s=TIMEOUT_S,
                               strategies=strategies)
    records_file = tmp_path / "records" / "d1.jsonl"
    with LocalCluster(configs) as cluster:
        deadline = time.monotonic() + 60  # the first cloud request completes, then the cloud dies
        while time.monotonic() < deadline:
            if records_file.exists() and any(r.host == "cloud" and r.outcome == "ok"
                                             for r in read_records(records_file)):
                break
            time.sleep(0.05)
        cloud_pid = cluster.nodes["cloud"].pid
        cluster.nodes["cloud"].kill()
        with pytest.raises(ProcessLookupError):
            os.kill(cloud_pid, 0)
        killed = time.monotonic()
        cluster.wait_workload(timeout=TIMEOUT_S / 2)
        ended_s = time.monotonic() - killed  # the last request is issued 4.7 s into the workload
        codes = cluster.stop()
    assert codes["d1"] == 0 and codes["edge"] == 0
    rows = {r.request_id: r for r in read_records(records_file)}
    assert len(rows) == 8
    edge = [r for r in rows.values() if r.strategy == "edge_only"]
    cloud = [r for r in rows.values() if r.strategy == "cloud_only"]
    assert all(r.outcome == "ok" for r in edge)
    assert cloud[0].outcome == "ok"
    failed = [r for r in cloud if r.outcome == "failed"]
    assert len(failed) == 3
    for r in failed:
        assert r.reason.startswith("edge: host cloud is down: its connection closed at "), r.reason
        assert (r.plan, r.host, r.stage_index, r.wall_total_s) == ("small:0-8@cloud", "cloud", 0, None)
    assert ended_s < 15
    assert not (tmp_path / "samples" / f"{failed[0].request_id}.npz").exists()
    assert (tmp_path / "samples" / f"{edge[-1].request_id}.npz").exists()
