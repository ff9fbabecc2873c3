"""A cascade request's records: its first pass, then its escalation, as one request whose latency
parts still add up to its total (nodes/runtime/records.py cascade_records)."""

import math

from analysis.run_tables import records_table
from nodes.clock import Clock
from nodes.planning.request import Request
from nodes.runtime.protocol import Hop, RequestTimes
from nodes.runtime.records import SentRequest, cascade_records, completed_records, request_of

CLOCK = Clock(wall_origin=0.0)
REQUEST = Request(request_id="d1-0003", device="d1", strategy="cascade", n=4, seed=9, deadline_s=1.0)


def _rows(request: Request, host: str, t0: float, sent: float, result: float) -> list:
    times = RequestTimes(request_sent=sent, coordinator_received=t0 + 0.01, dispatched=t0 + 0.02)
    hop = Hop(stage=0, host=host, model="small", received=t0 + 0.03, compute_start=t0 + 0.04,
              compute_end=t0 + 0.3, sent=t0 + 0.31, payload_bytes=0, message_bytes=300, real_compute_s=0.2)
    note = SentRequest(request, "dpm", 10, wall_t_scheduled=100.0, wall_t_request_sent=sent)
    return completed_records(note, f"small:0-10@{host}", times, [hop], result, 1000, 1200, CLOCK)


def test_an_escalated_request_is_its_first_pass_then_its_escalation_and_parts_add_up():
    first = _rows(REQUEST, "d1", 100.0, 100.0, 100.35)
    escalation = REQUEST.model_copy(update={"request_id": "d1-0003.esc", "n": 2, "labels": (1, 3),
                                            "seed": 77})
    second = _rows(escalation, "cloud", 100.4, 100.4, 100.9)
    rows = cascade_records(first, second, "small>large@0.9", [1, 3], CLOCK)
    assert [(r.request_id, r.stage_index, r.host, r.stage_count) for r in rows] == [
        ("d1-0003", 0, "d1", 2), ("d1-0003", 1, "cloud", 2)]
    assert {r.n_images for r in rows} == {4} and {r.seed for r in rows} == {9}
    assert {r.wall_total_s for r in rows} == {rows[-1].wall_t_result_received - 100.0}
    parts = sum(r.wall_uplink_s + r.wall_planning_s + r.wall_transfer_s + r.wall_queueing_s + r.wall_compute_s
                + r.wall_handoff_s + r.wall_result_transfer_s for r in rows)
    assert math.isclose(parts, rows[0].wall_total_s, rel_tol=1e-12)
    # from the first result, the gate included
    assert rows[1].wall_uplink_s == rows[1].wall_t_coordinator_received - 100.35
    assert rows[0].deadline_met is True
    assert (rows[0].escalated_indices, rows[0].escalated_images) == ("1,3", 2)


def test_a_request_nothing_was_escalated_of_keeps_its_first_pass():
    first = _rows(REQUEST, "d1", 100.0, 100.0, 100.35)
    (row,) = cascade_records(first, [], "small>large@0.9", [], CLOCK)
    assert row.wall_total_s == first[0].wall_total_s
    assert row.escalated_images == 0 and row.escalated_indices is None
    assert row.cascade == "small>large@0.9"


def test_an_escalation_s_messages_belong_to_its_request():
    assert request_of("d1-0003.esc") == "d1-0003" and request_of("d1-0003") == "d1-0003"


def test_the_escalation_is_a_second_request_on_the_device_s_radio():
    from analysis.energy import device_transfers

    first = _rows(REQUEST, "d1", 100.0, 100.0, 100.35)
    escalation = REQUEST.model_copy(update={"request_id": "d1-0003.esc", "n": 2, "labels": (1, 3)})
    second = _rows(escalation, "cloud", 100.4, 100.4, 100.9)
    rows = cascade_records(first, second, "small>large@0.9", [1, 3], CLOCK)
    assert rows[0].wall_gate_s is not None and math.isclose(rows[0].wall_gate_s, 100.4 - 100.35)
    transfers = device_transfers(records_table(rows))
    kinds = [(round(t, 3), round(d, 3), direction) for t, d, _, direction in transfers]
    # the request; the dispatch to itself; the escalation request after the gate; the cloud's result
    assert kinds == [(100.0, 0.01, "up"), (100.02, 0.01, "down"), (100.4, 0.01, "up"), (100.71, 0.19, "down")]
