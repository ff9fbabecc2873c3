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


def test_a_cascade_s_escalation_counts_as_the_request_of_its_own_it_is_on_the_wire(tiny_pipelines):
    """`r1.esc` carried the escalated image's prompt to the cloud and its pixels back: rows of that
    id, with the escalation's plan and its one image."""
    large, small = str(tiny_pipelines["large"]), str(tiny_pipelines["small"])
    requests = pd.DataFrame({"request_id": ["r1", "r1"], "stage_index": [0, 1], "strategy": ["c", "c"],
                             "plan": [f"{small}:0-8@d1", f"{large}:0-8@cloud"], "n_images": [2, 2],
                             "escalated_images": [1, 1]})
    traffic = pd.DataFrame([
        {"request_id": rid, "kind": kind, "stage": stage, "part": "data", "link": "a",
         "wire_bytes": size + 100, "message_bytes": size}
        for rid, kind, stage, size in (("r1", "stage", 0, 600.0), ("r1.esc", "stage", 0, 550.0),
                                       ("r1.esc", "result", None, 4000.0))])
    table = boundary_table(requests, traffic)
    assert table[["request_id", "plan", "boundary", "n_images", "message_bytes"]].values.tolist() == [
        ["r1", f"{small}:0-8@d1", "prompt", 2, 600.0], ["r1.esc", f"{large}:0-8@cloud", "prompt", 1, 550.0],
        ["r1.esc", f"{large}:0-8@cloud", "pixels", 1, 4000.0]]
    assert bytes_by_boundary(table) == {"c": {"prompt": 425.0, "pixels": 4000.0}}
