"""analysis/run_tables.py on a real run's records (tests/data/smoke-run): requests.parquet is
rebuilt from records/*.jsonl and the manifest's workload, also for a run one device never recorded."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest

from analysis.report import write_report
from analysis.run_tables import requests_frame, run_clock, unrecorded_failures, write_requests
from analysis.summary import summarize
from nodes.clock import Clock
from nodes.planning.request import Request
from nodes.runtime.records import RecordWriter

from .conftest import SMOKE_RUN

REASON = "the run was killed before this request was recorded"


@pytest.fixture(scope="module")
def workload() -> list[dict]:
    return json.loads((SMOKE_RUN / "manifest.json").read_text())["workload"]


def requests(workload: list[dict]) -> list[Request]:
    return [Request(**row) for row in workload]


def test_requests_table_is_rebuilt_from_the_records_exactly(workload):
    clock = run_clock(json.loads((SMOKE_RUN / "manifest.json").read_text()))
    frame = requests_frame(SMOKE_RUN, workload, clock)
    pd.testing.assert_frame_equal(frame, pd.read_parquet(SMOKE_RUN / "requests.parquet"))
    # emulated seconds from the clock's origin, the wall clock kept beside them
    assert clock.wall_origin > 1e9 and clock.dilation == 1
    assert (frame["t_request_sent"] == frame["wall_t_request_sent"] - clock.wall_origin).all()
    assert frame["total_s"].equals(frame["wall_total_s"].astype(float))
    # one row per request per stage, each planned request there, with the workload's columns
    firsts = frame[frame["stage_index"] == 0]
    assert sorted(firsts["request_id"]) == sorted(r["request_id"] for r in workload)
    assert (frame.groupby("request_id").size() == firsts.set_index("request_id")["stage_count"]).all()
    planned = {r["request_id"]: r["at_s"] for r in workload}
    assert (firsts["at_s"] == firsts["request_id"].map(planned)).all()
    assert not unrecorded_failures(set(frame["request_id"]), requests(workload), "dpm", 10, clock, REASON)


def test_a_device_that_recorded_nothing_gives_failed_rows_that_say_why(tmp_path, workload):
    d = tmp_path / "run"
    shutil.copytree(SMOKE_RUN, d)
    (d / "records" / "d2.jsonl").unlink()  # d2 was killed before it could write a line
    seen = set(requests_frame(d, workload)["request_id"])
    # the runner's rows are stamped as the nodes stamp theirs: wall time on the run's clock
    clock = Clock(wall_origin=1000.0, dilation=2)
    missing = unrecorded_failures(seen, requests(workload), "dpm", 10, clock, REASON)
    assert {r.wall_t_scheduled for r in missing} == {1000.0 + 2 * r["at_s"] for r in workload
                                                     if r["device"] == "d2"}
    assert sorted(r.request_id for r in missing) == sorted(r["request_id"] for r in workload
                                                           if r["device"] == "d2")
    writer = RecordWriter(d / "records" / "_runner.jsonl")
    writer.write(missing)
    writer.close()
    frame = requests_frame(d, workload)
    write_requests(d, frame)
    assert not list(d.glob(".requests.parquet*"))  # replaced whole, no temporary left
    pd.testing.assert_frame_equal(pd.read_parquet(d / "requests.parquet"), frame)
    failed = frame[frame["device"] == "d2"]
    assert (failed["outcome"] == "failed").all() and (failed["reason"] == REASON).all()
    assert failed["stage_index"].isna().all() and len(failed) == 4  # no plan came: no stage
    planned_at = {r["request_id"]: 1000.0 + 2 * r["at_s"] for r in workload}  # the table: K = 1, origin 0
    assert (failed["t_scheduled"] == failed["request_id"].map(planned_at)).all()
    # and the summary and report say so, per strategy, next to d1's figures
    summary = summarize(frame, None, d / "samples", quality=False)
    for entry in summary.values():
        assert (entry["requests"], entry["done"], entry["failed"]) == (2, 1, 1)
        assert entry["failure_reasons"] == {REASON: 1}
    document = json.loads((d / "summary.json").read_text())
    (d / "summary.json").write_text(json.dumps({**document, "strategies": summary}, allow_nan=False))
    text = write_report(d).read_text()
    assert "## Failures" in text and text.count(REASON) == 4
    assert (d / "plots" / "latency_cdf.png").is_file()


def test_the_fixture_is_as_committed():
    """What tests/data/smoke-run holds (see its README.md), and nothing a test wrote into it."""
    names = {str(p.relative_to(SMOKE_RUN)) for p in SMOKE_RUN.rglob("*") if p.is_file()}
    top = {"README.md", "manifest.json", "network.json", "requests.parquet", "link_events.jsonl",
           "summary.json"}
    assert {n for n in names if "/" not in n} == top
    assert {n for n in names if n.startswith("records/")} == {"records/d1.jsonl", "records/d2.jsonl",
                                                              "records/_runner.jsonl"}
    assert len([n for n in names if n.startswith("pcap/")]) == 4
    assert len([n for n in names if n.startswith("samples/")]) == 8
    assert (SMOKE_RUN / "records" / "_runner.jsonl").read_text() == ""  # every request was recorded


def test_runs_load_into_pandas_without_the_stack(tmp_path):
    """Reading results needs pandas only: not torch, diffusers, Mininet or ZeroMQ."""
    import subprocess
    import sys

    copy = tmp_path / "smoke-run-2"
    shutil.copytree(SMOKE_RUN, copy)
    code = ("import sys; from analysis.run_tables import load_runs; "
            f"t = load_runs([{str(SMOKE_RUN)!r}, {str(copy)!r}]); "
            "print(len(t['requests']), sorted(set(t['requests']['run_id']))); "
            "print(sorted(m for m in ('torch', 'diffusers', 'mininet', 'zmq') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    rows = len(pd.read_parquet(SMOKE_RUN / "requests.parquet"))
    assert out.splitlines() == [f"{2 * rows} ['smoke-run', 'smoke-run-2']", "[]"]
