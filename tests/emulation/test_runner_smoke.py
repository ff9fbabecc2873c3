"""The smoke scenario end to end on a real emulated network (root): one run shared by the module.

The run is scenarios/smoke.toml plus one strategy that splits the small model between the cloud and
the requesting device, so the state crosses three emulated links between two halves of the same
model: its images must equal the unsplit local run's (nothing lost in transit)."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from emulation.runner import run_scenario
from emulation.scenario import load_scenario
from nodes.diffusion.generation import generate
from nodes.diffusion.samples import load_samples
from nodes.planning.plan import parse_plan
from nodes.planning.strategy_specs import StrategySpec
from tests.emulation.emulated_runs import processes_of

pytestmark = [pytest.mark.root, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]
SMOKE = ROOT / "scenarios" / "smoke.toml"
SAME_MODEL = "split_small"
LARGE_PRESENT = (ROOT / "nodes" / "pretrained" / "large" / "config.json").is_file()


def smoke_with_split_small():
    scenario = load_scenario(SMOKE)
    strategies = {**scenario.strategies, SAME_MODEL: StrategySpec.model_validate(
        {"kind": "fixed_split", "split": [{"model": "small", "tier": "cloud", "share": 0.5},
                                          {"model": "small", "tier": "device", "share": 0.5}]})}
    cloud = scenario.nodes.cloud.model_copy(update={"models": [*scenario.nodes.cloud.models, "small"]})
    requests = 2 * len(strategies)  # every strategy from both devices
    return scenario.model_copy(update={
        "strategies": strategies, "nodes": scenario.nodes.model_copy(update={"cloud": cloud}),
        "workload": scenario.workload.model_copy(update={"requests": requests}),
    })


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    if not LARGE_PRESENT:
        pytest.skip("the large model is not trained in this checkout (edgestage train large)")
    scenario = smoke_with_split_small()
    out = tmp_path_factory.mktemp("smoke") / "run"
    result = run_scenario(scenario, out, progress=False)
    hosts = {h["name"] for h in result.manifest["network"]["hosts"]}
    return scenario, result, hosts


def test_run_directory_contents(run):
    scenario, result, _ = run
    d = result.run_dir
    for name in ("requests.parquet", "traffic.parquet", "manifest.json", "summary.json", "accuracy.json"):
        assert (d / name).is_file(), name
    requests = pd.read_parquet(d / "requests.parquet")
    per_request = requests.groupby("request_id")
    assert per_request.ngroups == scenario.workload.requests
    assert (requests["outcome"] == "ok").all(), requests.loc[requests["outcome"] != "ok", "reason"].tolist()
    assert (per_request.size() == per_request["stage_count"].first()).all()  # one row per stage
    for column in ("total_s", "compute_s", "transfer_s", "queueing_s", "payload_bytes", "message_bytes"):
        assert column in requests.columns
    samples = sorted((d / "samples").glob("*.npz"))
    assert {p.stem for p in samples} == set(requests["request_id"])
    pcaps = sorted((d / "pcap").glob("*.pcap"))
    assert len(pcaps) == len(result.manifest["network"]["links"])
    manifest = json.loads((d / "manifest.json").read_text())
    assert manifest["status"] == "completed"
    assert manifest["network"]["impairment_backend"] in ("netem", "userspace")
    assert manifest["kernel"] == os.uname().release and manifest["versions"]["torch"]
    assert manifest["seeds"]["requests"]
    assert manifest["scenario"]["workload"]["seed"] == scenario.workload.seed
    summary = json.loads((d / "summary.json").read_text())["strategies"]
    assert set(summary) == set(scenario.strategies)
    for name, entry in summary.items():
        assert entry["done"] == 2 and entry["failed"] == 0, name
        assert entry["latency_p50_s"] > 0 and entry["wire_bytes_per_image"] > 0
        assert 0 <= entry["class_accuracy"] <= 1 and entry["fid"] is not None


def test_the_report_shows_every_strategy_and_links_its_figures(run):
    scenario, result, _ = run
    report = (result.run_dir / "report.md").read_text()
    for name in scenario.strategies:
        assert f"| {name} " in report, name
    figures = re.findall(r"!\[[^]]*\]\(([^)]+)\)", report)
    names = ("latency_cdf", "latency_over_time", "latency_parts", "prediction", "quality_vs_latency")
    assert sorted(figures) == [f"plots/{name}.png" for name in names]
    for figure in figures:
        assert (result.run_dir / figure).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    before = (result.run_dir / "report.md").stat().st_mtime_ns
    done = subprocess.run([sys.executable, "-m", "emulation.cli", "report", str(result.run_dir)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == str(result.run_dir / "report.md")
    assert (result.run_dir / "report.md").stat().st_mtime_ns >= before
    assert (result.run_dir / "report.md").read_text() == report  # the same run, the same report


def test_nodes_are_forked_from_one_launcher_and_share_its_pages(run):
    _, result, _ = run
    memory = result.manifest["memory"]
    hosts = result.manifest["network"]["hosts"]
    node_hosts = {h["name"] for h in hosts if h["role"] in ("device", "edge", "cloud")}
    assert set(memory["nodes"]) == node_hosts and memory["launcher"]["pss_mb"] > 0
    # every node maps torch and diffusers, but the launcher's copy: its own share is a fraction
    assert memory["node_pss_max_mb"] < memory["node_rss_median_mb"] / 2, memory
    assert memory["total_pss_mb"] < memory["node_rss_median_mb"] * len(node_hosts) / 2, memory
    summary = json.loads((result.run_dir / "summary.json").read_text())
    assert summary["node_memory"]["total_pss_mb"] == memory["total_pss_mb"]
    assert result.manifest["launcher"]["import_s"] > 0


def test_pcaps_are_readable_by_tshark(run):
    _, result, _ = run
    for cap in result.manifest["capture"]:
        res = subprocess.run(["tshark", "-r", str(result.run_dir / cap["file"]), "-T", "fields", "-e",
                              "frame.len"], capture_output=True, text=True, timeout=120)
        assert res.returncode == 0, res.stderr
        frames = [int(x) for x in res.stdout.split()]
        assert len(frames) == cap["captured"] > 0
        on_link = result.traffic[result.traffic["link"] == cap["link"]]
        assert sum(frames) == pytest.approx(on_link["wire_bytes"].sum(), rel=1e-9)  # scapy == tshark


def test_latency_parts_add_up(run):
    _, result, _ = run
    ok = result.requests
    parts = ok.groupby("request_id")[["uplink_s", "planning_s", "transfer_s", "queueing_s", "compute_s",
                                      "handoff_s", "result_transfer_s"]].sum().sum(axis=1)
    totals = ok.groupby("request_id")["total_s"].first()
    assert ((parts - totals).abs() <= 0.02 * totals).all()
    report = json.loads((result.run_dir / "accuracy.json").read_text())
    assert report["latency_parts"]["within_2pct"] == report["latency_parts"]["requests"] == len(totals)


def test_traffic_accounting(run):
    """Per message per link: the capture's ZeroMQ message length equals the nodes' own count, and
    bytes on the wire equal the nodes' count plus one TCP/IP header per packet within 10 %
    (retransmitted payload counted as overhead too)."""
    _, result, _ = run
    report = json.loads((result.run_dir / "accuracy.json").read_text())["accounting"]
    assert report["messages"] > 0 and report["captured_equals_records"] == report["messages"]
    assert report["within_10pct_with_retransmissions"] == report["messages"], report
    assert report["ratio"]["mean"] == pytest.approx(1.0, abs=0.10)
    messages = result.traffic.dropna(subset=["request_id"])
    assert set(messages["request_id"]) == set(result.requests["request_id"])  # every request on the wire
    for link in result.manifest["capture"]:  # none left in the kernel's ring when tcpdump stopped
        assert link["captured"] == link["received_by_filter"] and link["dropped_by_kernel"] == 0, link
    # recomputed here for the state-carrying messages without a retransmission, from the records
    from analysis.accuracy import HEADER_BYTES, _records_bytes, message_traffic

    mt = message_traffic(result.traffic).merge(_records_bytes(result.requests),
                                               on=["request_id", "kind", "stage"])
    clean = mt[(mt["records_payload_bytes"] > 0) & (mt["retransmitted_packets"] == 0)]
    expected = clean["records_message_bytes"] + HEADER_BYTES * (clean["packet_share"] + clean["ack_packets"])
    ratio = (clean["wire_bytes"] + clean["ack_wire_bytes"]) / expected
    assert len(clean) > 0 and ratio.between(0.9, 1.1).all(), ratio.describe()


def test_transfers_never_beat_the_configured_delay(run):
    """Consistency, not speed: no message arrives sooner than the one-way delays of its route."""
    _, result, _ = run
    from analysis.accuracy import route, transfers

    network = result.manifest["network"]
    tr = transfers(result.requests, network)
    assert len(tr) > 0
    for row in tr.itertuples():
        path = route(network, row.src, row.dst)
        floor_ms = sum(li["delay_ms"] - li["jitter_ms"] for li in path)
        assert row.measured_s >= 0.95 * floor_ms / 1000, row


def test_same_model_split_is_exact_over_the_network(run):
    scenario, result, _ = run
    rows = result.requests[result.requests["strategy"] == SAME_MODEL]
    assert rows["host"].nunique() > 1  # it did cross the network
    steps = scenario.generation.steps
    for request_id in rows["request_id"].unique():
        got = load_samples(result.run_dir / "samples" / f"{request_id}.npz")
        local = generate(parse_plan(f"small:0-{steps}", steps), got.labels, got.seed, got.scheduler)
        assert torch.max(torch.abs(got.images - local)).item() <= 1e-5


def test_nothing_left_running(run, nothing_left_after):
    _, result, hosts = run
    nothing_left_after.update(hosts)  # the fixture checks interfaces, netns, rules, shells, cgroups
    assert not processes_of(result.run_dir)
