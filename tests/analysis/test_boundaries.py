"""What each boundary message of a plan carries (analysis/boundaries.py)."""

from __future__ import annotations

import pandas as pd

from analysis.boundaries import boundary_kind, boundary_table, bytes_by_boundary
from nodes.planning.plan import parse_plan


def test_the_kinds_of_a_latent_plans_boundaries(tiny_pipelines):
    large, small = str(tiny_pipelines["large"]), str(tiny_pipelines["small"])
    placed = parse_plan(f"{large}:0-0@d1,{large}:0-4@cloud,{small}:4-8@edge,{small}:8-8@d1")
    assert [boundary_kind(placed, "stage", s) for s in range(4)] == [
        "prompt", "embeddings", "latents+embeddings", "latents"]
    assert boundary_kind(placed, "result", None) == "pixels"
    each = parse_plan(f"{large}:0-4@cloud,{small}:4-8@edge;encode=each")
    assert boundary_kind(each, "stage", 1) == "latents"
    assert boundary_kind(each, "request", None) is None
    pixel = parse_plan("large:0-4@cloud,small:4-8@d1")
    assert [boundary_kind(pixel, "stage", s) for s in range(2)] == ["dispatch", "state"]


def test_bytes_per_boundary_from_captured_messages(tiny_pipelines):
    large = str(tiny_pipelines["large"])
    plan = f"{large}:0-4@cloud,{large}:4-8@edge,{large}:8-8@d1"
    requests = pd.DataFrame({"request_id": ["r1"] * 3, "stage_index": [0, 1, 2], "plan": [plan] * 3,
                             "strategy": ["s"] * 3, "n_images": [2] * 3})
    # stage 1's hand-off crosses two links (data and ACKs on each); stage 2's latents one
    traffic = pd.DataFrame([
        {"request_id": "r1", "kind": "stage", "stage": 0, "part": "data", "link": "a", "wire_bytes": 900.0,
         "message_bytes": 700.0},
        {"request_id": "r1", "kind": "stage", "stage": 1, "part": "data", "link": "b", "wire_bytes": 6000.0,
         "message_bytes": 5800.0},
        {"request_id": "r1", "kind": "stage", "stage": 1, "part": "data", "link": "c", "wire_bytes": 6000.0,
         "message_bytes": 5800.0},
        {"request_id": "r1", "kind": "stage", "stage": 1, "part": "ack", "link": "b", "wire_bytes": 66.0,
         "message_bytes": None},
        {"request_id": "r1", "kind": "stage", "stage": 2, "part": "data", "link": "d", "wire_bytes": 2300.0,
         "message_bytes": 2100.0},
        {"request_id": "r1", "kind": "report", "stage": 1, "part": "data", "link": "b", "wire_bytes": 400.0,
         "message_bytes": 300.0},
    ])
    table = boundary_table(requests, traffic)
    assert table[["boundary", "message_bytes", "wire_bytes", "links"]].values.tolist() == [
        ["prompt", 700.0, 900.0, 1], ["latents+embeddings", 5800.0, 12066.0, 2],
        ["latents", 2100.0, 2300.0, 1]]
    assert bytes_by_boundary(table) == {"s": {"prompt": 350.0, "latents+embeddings": 2900.0,
                                              "latents": 1050.0}}
