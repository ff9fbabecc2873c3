"""A worker killed mid-run: the device records the requests it would have served as failed, with
the reason, while the others complete; the survivors still stop cleanly on SIGTERM."""

import os
import time

import pytest

from nodes.local_cluster import LocalCluster, loopback_configs
from nodes.records import read_records

TIMEOUT_S = 4.0


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
        cluster.wait_workload(timeout=60)
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
        assert r.reason == f"timeout: no result within {TIMEOUT_S:g} s (plan small:0-8@cloud)"
        assert (r.host, r.stage_index, r.total_s) == ("cloud", 0, None)
    assert not (tmp_path / "samples" / f"{failed[0].request_id}.npz").exists()
    assert (tmp_path / "samples" / f"{edge[-1].request_id}.npz").exists()
