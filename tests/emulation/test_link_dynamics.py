"""Links that change while running: trace replay, scheduled down/up, channel model + mobility."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from emulation.network import EmulatedNetwork
from topologies.spec import parse_topology
from topologies.traces import TRACE_DIR

pytestmark = pytest.mark.root


def test_trace_replay_changes_measured_throughput(nothing_left_after: set, tmp_path) -> None:
    spec = parse_topology({"kind": "star", "devices": [
        {"name": "tr1", "delay_ms": 2, "trace": str(TRACE_DIR / "step-20-4.trace")}]})
    nothing_left_after.add("tr1")
    with EmulatedNetwork(spec, run_dir=tmp_path) as net:
        server = net.popen("tr1", ["iperf3", "-s", "-1", "-p", "5400"],
                           stdout=subprocess.DEVNULL)
        time.sleep(0.2)
        client = net.popen("edge", ["iperf3", "-c", net.ip("tr1"), "-p", "5400", "-t", "6",
                                    "-i", "0.5", "-J"], stdout=subprocess.PIPE)
        result = json.loads(client.communicate(timeout=30)[0])
        server.wait(timeout=10)
    rates = [i["sum"]["bits_per_second"] / 1e6 for i in result["intervals"]]
    # The square wave (20 Mbit/s for 2 s, 4 Mbit/s for 2 s) shows up in the goodput.
    assert max(rates) > 15 and min(rates[1:]) < 6, rates
    changes = [e for e in net.link_log if e["source"] == "trace"]
    assert {round(e["bw_mbit"]) for e in changes} == {20, 4}
    logged = (tmp_path / "link_events.jsonl").read_text().splitlines()
    assert len(logged) == len(net.link_log)
    assert all({"t", "wall_t"} <= set(json.loads(x)) for x in logged)  # emulated, and the wall clock


def test_scheduled_down_and_up(nothing_left_after: set) -> None:
    spec = parse_topology({
        "kind": "star", "devices": [{"name": "fl1", "bw_mbit": 10, "delay_ms": 1}],
        "events": [{"at": 1.0, "link": ["fl1", "edge"], "action": "down"},
                   {"at": 2.0, "link": ["fl1", "edge"], "action": "up"}]})
    nothing_left_after.add("fl1")
    with EmulatedNetwork(spec) as net:
        py = [sys.executable, "-m", "emulation.probe"]
        srv = net.popen("edge", [*py, "serve", "7100"], stdin=subprocess.PIPE,
                        stdout=subprocess.PIPE)
        assert srv.stdout.readline().strip() == b"ready"
        cli = net.popen("fl1", [*py, "send", net.ip("edge"), "7100", "--count", "300",
                                "--interval", "0.01"], stdout=subprocess.PIPE)
        out = json.loads(cli.communicate(timeout=30)[0])
        after = net.reachability()
        srv.stdin.close()
    # About one second of the three was cut off (timing on a busy machine: be generous).
    assert 15 <= out["fwd_loss_pct"] <= 50, out
    assert after["fl1"]["edge"] == 3 and after["edge"]["fl1"] == 3  # routes came back
    states = [(e["state"], e["t"]) for e in net.link_log if e["source"] == "schedule"]
    assert [s for s, _ in states] == ["down", "up"]
    assert states[0][1] == pytest.approx(1.0, abs=0.3)
    assert states[1][1] == pytest.approx(2.0, abs=0.3)


def test_channel_model_with_mobility_updates_links(nothing_left_after: set) -> None:
    spec = parse_topology({
        "kind": "two_tier", "seed": 4,
        "devices": [{"name": "mo1", "delay_ms": 2, "position": [10, 10]},
                    {"name": "mo2", "delay_ms": 2, "position": [190, 190]}],
        "channel": {"interval_s": 0.2, "speed": [20, 30], "area": [200, 200],
                    "ap_positions": [[100, 100]]}})
    nothing_left_after.update({"mo1", "mo2"})
    with EmulatedNetwork(spec) as net:
        time.sleep(1.1)
        shown = net.cmd("mo1", "tc class show dev mo1-eth0")
        entries = [e for e in net.link_log if e["source"] == "channel"]
        last = [e for e in entries if e["direction"] == "mo1->ap"][-1]
    assert len({e["t"] for e in entries}) >= 4  # updated at the interval
    positions = {tuple(e["position"]) for e in entries if e["link"] == "mo1-ap"}
    assert len(positions) >= 4  # the device moved
    assert all({"snr_db", "distance_m", "bw_mbit", "loss_pct"} <= e.keys() for e in entries)
    # The rate in force on the interface is the last one the model chose (HTB prints e.g. 63Mbit).
    assert "rate" in shown and f"{last['bw_mbit']:.3g}"[:2] in shown.replace("Kbit", "")


def test_set_link_changes_delay_and_loss_live(nothing_left_after: set) -> None:
    spec = parse_topology({"kind": "star", "devices": [{"name": "lv1", "bw_mbit": 10,
                                                        "delay_ms": 5}]})
    nothing_left_after.add("lv1")
    py = [sys.executable, "-m", "emulation.probe"]

    def rtt(net: EmulatedNetwork) -> dict:
        cli = net.popen("lv1", [*py, "send", net.ip("edge"), "7200", "--count", "60",
                                "--interval", "0.01", "--wait", "0.5"], stdout=subprocess.PIPE)
        return json.loads(cli.communicate(timeout=30)[0])

    with EmulatedNetwork(spec) as net:
        srv = net.popen("edge", [*py, "serve", "7200"], stdin=subprocess.PIPE,
                        stdout=subprocess.PIPE)
        assert srv.stdout.readline().strip() == b"ready"
        before = rtt(net)
        net.set_link("lv1", "edge", delay_ms=30, loss_pct=20, direction="lv1")
        after = rtt(net)
        srv.stdin.close()
    assert before["fwd_ms"]["median"] == pytest.approx(5, abs=0.5)
    assert after["fwd_ms"]["median"] == pytest.approx(30, abs=1)  # only lv1 -> edge changed
    assert after["rev_ms"]["median"] == pytest.approx(5, abs=0.5)
    assert after["fwd_loss_pct"] > 3 and after["rev_loss_pct"] == 0
    change = [e for e in net.link_log if e["source"] == "api"]
    assert change and change[0]["direction"] == "lv1->edge" and change[0]["delay_ms"] == 30
