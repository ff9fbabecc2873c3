"""Scenario [topology] validation, traces, channel model and routing plans (no root needed)."""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap

import pytest

from topologies.channel import ChannelModel, RandomWaypoint
from topologies.spec import ChannelSpec, load_topology, parse_topology
from topologies.topos import topology_from_spec
from topologies.traces import TRACE_DIR, load_trace, mahimahi_lines, write_synthetic_traces

BASE = {"kind": "two_tier", "devices": [{"name": "d1", "bw_mbit": 10, "delay_ms": 5}]}


def bad(update: dict) -> str:
    with pytest.raises(ValueError) as info:
        parse_topology({**BASE, **update})
    msg = str(info.value)
    assert "\n" not in msg
    return msg


@pytest.mark.parametrize(
    ("update", "expected"),
    [
        ({"kind": "ring"}, "topology.kind"),
        ({"devices": [{"name": "d1", "bw_mbit": -5}]}, "topology.devices[0].bw_mbit"),
        ({"devices": [{"name": "d1", "bw_mbit": 1e9}]}, "topology.devices[0].bw_mbit"),
        ({"devices": [{"name": "d1", "delay_ms": -3}]}, "topology.devices[0].delay_ms"),
        ({"devices": [{"name": "d1", "delay_ms": "3ms"}]}, "topology.devices[0].delay_ms"),
        ({"devices": [{"name": "d1", "delay_ms": 1e6}]}, "topology.devices[0].delay_ms"),
        ({"devices": [{"name": "d1", "loss_pct": 120}]}, "topology.devices[0].loss_pct"),
        ({"devices": [{"name": "d1", "queue_pkts": 0}]}, "topology.devices[0].queue_pkts"),
        ({"backhaul": {"bw_mbit": 0}}, "topology.backhaul.bw_mbit"),
        ({"devices": [{"name": "d1", "bw": 5}]}, "topology.devices[0]: `bw` is now `bw_mbit`"),
        ({"backhaul": {"delay": "5ms"}}, "topology.backhaul: `delay` is now `delay_ms`"),
        ({"devices": [{"name": "d1", "colour": "red"}]}, "topology.devices[0].colour"),
        ({"links": [{"endpoints": ["d1", "nowhere"], "bw_mbit": 5}]}, "nowhere"),
        ({"events": [{"at": 1, "link": ["d9", "ap"], "action": "down"}]}, "d9"),
        ({"cpu_shares": {"gpu": 0.5}}, "topology.cpu_shares"),
        ({"compute": {"edge": 0.5}}, "topology: `compute` is now `cpu_shares`"),  # a node's mode, not a share
        ({"impairment": "magic"}, "topology.impairment"),
    ],
)
def test_bad_input_is_one_line_naming_the_field(update: dict, expected: str) -> None:
    assert expected in bad(update)


def test_trace_that_does_not_parse(tmp_path) -> None:
    t = tmp_path / "broken.trace"
    t.write_text("1\n2\nthree\n")
    msg = bad({"devices": [{"name": "d1", "trace": str(t)}]})
    assert "topology.devices[0].trace" in msg and "line 3" in msg
    c = tmp_path / "broken.csv"
    c.write_text("time_s,bw_mbit,delay_ms,loss_pct\n0,10,5,0\n1,-4,5,0\n")
    assert "line 3" in bad({"devices": [{"name": "d1", "trace": str(c)}]})


def test_cli_bad_scenario_exits_2_with_one_line(tmp_path) -> None:
    s = tmp_path / "bad.toml"
    s.write_text('[topology]\nkind = "two_tier"\n[[topology.devices]]\nbw_mbit = -1\n')
    res = subprocess.run([sys.executable, "-m", "emulation.cli", "calibrate", str(s)],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 2
    assert res.stderr.count("\n") == 1 and "topology.devices[0].bw_mbit" in res.stderr, res.stderr


def test_scenarios_load_and_ignore_other_tables(tmp_path) -> None:
    spec = load_topology("scenarios/default.toml")
    assert spec.kind == "two_tier" and len(spec.devices) == 4
    assert sorted(d.bw_mbit for d in spec.devices) == [2, 8, 20, 50]
    assert spec.backhaul.bw_mbit == 100 and spec.backhaul.delay_ms == 20
    smoke = load_topology("scenarios/smoke.toml")
    assert smoke.kind == "two_tier"
    other = tmp_path / "s.toml"
    other.write_text(textwrap.dedent("""
        [topology]
        kind = "star"
        num_devices = 3
        [workload]
        anything = "goes"
    """))
    assert load_topology(other).host_names() == ["d1", "d2", "d3", "edge"]


def test_routes_of_multi_cell_reach_every_subnet() -> None:
    spec = parse_topology({"kind": "multi_cell", "cells": 3, "num_devices": 6,
                           "backhaul": {"bw_mbit": 100, "delay_ms": 10}})
    topo = topology_from_spec(spec)
    routes = topo.routes()
    subnets = {li.subnet for li in topo.link_infos}
    for host in topo.hosts():
        own = {li.subnet for li in topo.link_infos if host in (li.a, li.b)}
        rows = routes[host]
        if rows == [] or rows[0][0] != "default":
            assert {dst for dst, _ in rows} | own == subnets, host
    assert set(topo.forwarders()) == {"ap1", "ap2", "ap3", "edge1", "edge2", "edge3"}
    assert {topo.role(h) for h in topo.hosts()} == {"device", "ap", "edge", "cloud"}


def test_shipped_traces_are_the_generated_ones(tmp_path) -> None:
    for path in write_synthetic_traces(tmp_path):
        assert path.read_text() == (TRACE_DIR / path.name).read_text(), path.name
    step = load_trace(TRACE_DIR / "step-20-4.trace")
    assert step.period_s == pytest.approx(4.0)
    assert step.at(0.5).bw_mbit == pytest.approx(20, rel=0.02)
    assert step.at(2.5).bw_mbit == pytest.approx(4, rel=0.05)
    assert step.at(4.5).bw_mbit == pytest.approx(20, rel=0.02)  # loops
    csv = load_trace(TRACE_DIR / "congestion.csv")
    assert csv.at(11).delay_ms == 80 and csv.at(11).loss_pct == 2


def test_mahimahi_rate_round_trip() -> None:
    lines = mahimahi_lines([12.0], 1.0)
    assert len(lines) == pytest.approx(1000, abs=2)  # 12 Mbit/s = 1000 x 1500 B per second


def test_channel_model_rate_and_loss_fall_with_distance() -> None:
    model = ChannelModel(ChannelSpec())
    near, far, very_far = model.link(5), model.link(80), model.link(2000)
    assert near[0] > far[0] > very_far[0] and near[1] < far[1] < very_far[1]
    assert very_far[1] > 50 and near[1] < 0.01
    assert math.isclose(model.snr_db(10) - model.snr_db(100), 30.0)  # exponent 3 x 10 dB/decade


def test_random_waypoint_stays_in_area_and_moves() -> None:
    spec = ChannelSpec(area=(50, 30), speed=(1, 2))
    rw = RandomWaypoint(["a", "b"], spec, seed=3)
    start = dict(rw.pos)
    for _ in range(200):
        rw.step(0.5)
        for x, y in rw.pos.values():
            assert 0 <= x <= 50 and 0 <= y <= 30
    assert rw.pos != start
    again = RandomWaypoint(["a", "b"], spec, seed=3)
    assert again.pos == start  # seeded
