"""analysis/interleaving.py: the rounds of a run's interleaved strategies pair their requests, and
how much the requests overlapped is counted per request."""

from __future__ import annotations

import pandas as pd
import pytest

from analysis.interleaving import overlaps, paired_rounds, round_latencies


def _first(rows: list[tuple[str, str, str, int, float, float, str]]) -> pd.DataFrame:
    """(request_id, strategy, device, seed, sent, took, outcome) -> first rows, by request_id."""
    columns = ["request_id", "strategy", "device", "seed", "t_request_sent", "total_s", "outcome"]
    frame = pd.DataFrame(rows, columns=columns)
    return frame.assign(repetition=0).set_index("request_id")


ROUNDS = _first([
    ("r0-q0000", "cloud_only", "d1", 10, 0.0, 0.30, "ok"),    # round 1 (seed 10): cloud first
    ("r0-q0001", "edge_only", "d1", 10, 0.1, 0.15, "ok"),     # in flight with q0000 (same device)
    ("r0-q0002", "edge_only", "d2", 12, 1.0, 0.10, "ok"),     # round 2 (seed 12): the order turned
    ("r0-q0003", "cloud_only", "d2", 12, 1.2, 0.20, "ok"),    # alone
    ("r0-q0004", "cloud_only", "d1", 14, 2.0, 0.40, "ok"),    # round 3: edge_only failed
    ("r0-q0005", "edge_only", "d1", 14, 2.1, float("nan"), "failed"),
])


def test_a_round_pairs_the_same_request_through_each_strategy():
    latencies = round_latencies(ROUNDS)
    assert list(latencies["cloud_only"].index) == [(0, 10), (0, 12), (0, 14)]
    assert list(latencies["edge_only"].index) == [(0, 10), (0, 12)]  # the failed one has no latency
    row = paired_rounds(ROUNDS).set_index("strategy").loc["edge_only"]
    assert row["reference"] == "cloud_only" and row["n_pairs"] == 2
    assert row["latency_mean_ratio"] == pytest.approx((0.15 + 0.10) / (0.30 + 0.20))
    assert row["latency_mean_s"] == pytest.approx(0.125)


def test_one_strategy_has_nothing_to_pair():
    assert paired_rounds(ROUNDS[ROUNDS["strategy"] == "cloud_only"]).empty


def test_overlapping_requests_are_counted_from_send_to_result():
    counted = overlaps(ROUNDS)
    assert counted["overlapping"].to_dict() == {"r0-q0000": 1, "r0-q0001": 1, "r0-q0002": 0, "r0-q0003": 0,
                                                "r0-q0004": 1, "r0-q0005": 1}  # a failure: a moment
    assert counted.loc["r0-q0000", "overlapping_same_device"] == 1
    other_device = ROUNDS.assign(device=["d1", "d2", "d1", "d2", "d1", "d2"])
    assert overlaps(other_device).loc["r0-q0000", "overlapping_same_device"] == 0
