"""accuracy.json on runs in which nothing, or not everything, was done (no root needed)."""

from __future__ import annotations

import pandas as pd
import pytest

from analysis.accuracy import accuracy_report
from analysis.run_tables import records_table
from nodes.planning.request import Request
from nodes.runtime.records import SentRequest, StageRecord, failed_records

NETWORK = {"hosts": [{"name": "edge", "role": "edge"}, {"name": "cloud", "role": "cloud"},
                     {"name": "d1", "role": "device"}],
           "links": [{"link": "d1-edge", "a": "d1", "b": "edge", "bw_mbit": 10, "delay_ms": 5},
                     {"link": "edge-cloud", "a": "edge", "b": "cloud", "bw_mbit": 50, "delay_ms": 10}]}


def _failed(request_id: str, plan: str | None) -> list[StageRecord]:
    request = Request(request_id=request_id, device="d1", strategy="cloud_only", n=2, seed=1)
    return failed_records(SentRequest(request, "ddim", 10, 1.0, 1.0), "timeout: no result within 5 s", plan)


def test_a_run_in_which_every_request_failed_has_an_accuracy_report() -> None:
    rows = _failed("r0", "large:0-10@cloud") + _failed("r1", None)
    frame = records_table(rows)
    report = accuracy_report(frame, pd.DataFrame(), NETWORK)
    assert report["transfers"] == []
    assert report["latency_parts"] == {"requests": 0, "within_2pct": 0, "max_relative_error": None}
    assert report["headline"]["latency_parts_within_2pct"] == "0/0"
    assert report["headline"]["state_transfer_ratio_warm_p50"] is None


def test_an_empty_run_has_an_empty_headline() -> None:
    frame = records_table([])
    assert accuracy_report(frame, pd.DataFrame(), NETWORK) == {"headline": {}}


def test_the_prediction_follows_the_links_as_they_were_when_a_message_went() -> None:
    from analysis.accuracy import LinkStates, predicted_s

    network = {**NETWORK, "paths": {"edge": {"d1": ["d1-edge"], "cloud": ["edge-cloud"]}}}
    events = [{"t": 5.0, "link": "d1-edge", "direction": "d1->edge", "delay_ms": 50, "bw_mbit": 1},
              {"t": 7.0, "link": "edge-cloud", "state": "down"},
              {"t": 9.0, "link": "edge-cloud", "state": "up"},
              {"t": None, "link": None, "source": "start"}]
    states = LinkStates(network, events)
    assert predicted_s(network, "d1", "edge", 1000, 1.0, states)[0] == pytest.approx(0.005 + 8000 / 10e6)
    assert predicted_s(network, "d1", "edge", 1000, 6.0, states)[0] == pytest.approx(0.050 + 8000 / 1e6)
    assert predicted_s(network, "edge", "d1", 1000, 6.0, states)[0] == pytest.approx(0.005 + 8000 / 10e6)
    assert predicted_s(network, "edge", "cloud", 0, 8.0, states)[0] is None  # down: nothing to predict
    assert predicted_s(network, "cloud", "edge", 0, 9.5, states)[0] == pytest.approx(0.010)
