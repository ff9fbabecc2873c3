"""Canned run directories for the analysis tests: requests frames shaped as the runner writes them
(one row per request per stage, StageRecord's columns plus the workload's), no network needed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from analysis.run_tables import REQUEST_COLUMNS as COLUMNS


def failed_row(request_id: str, strategy: str, reason: str | None, t: float) -> dict[str, Any]:
    """A request that failed before any stage ran (no plan, no stage): as the device records it."""
    row = dict.fromkeys(COLUMNS)
    row.update(request_id=request_id, device="d1", strategy=strategy, n_images=4, seed=7, scheduler="ddim",
               steps=4, outcome="failed", reason=reason, t_scheduled=t, t_request_sent=t, repetition=0,
               at_s=t, warmup=False)
    return row


def ok_rows(request_id: str, strategy: str, plan: str, t: float, n_images: int = 4) -> list[dict[str, Any]]:
    """One row per stage of a request that was done, with latency parts that add up to total_s."""
    from nodes.planning.plan import parse_plan

    stages = parse_plan(plan).stages
    rows = []
    for i, stage in enumerate(stages):
        row = dict.fromkeys(COLUMNS)
        row.update(request_id=request_id, device="d1", strategy=strategy, plan=plan,
                   plan_key=parse_plan(plan).key, n_images=n_images,
                   seed=7, scheduler="ddim", steps=stages[-1].end, outcome="ok", deadline_met=None,
                   t_scheduled=t, stage_index=i, stage_count=len(stages), host=stage.host, model=stage.model,
                   start_step=stage.start, end_step=stage.end, t_request_sent=t,
                   uplink_s=0.01 if i == 0 else 0.0, planning_s=0.001 if i == 0 else 0.0, transfer_s=0.02,
                   queueing_s=0.0, compute_s=0.1, handoff_s=0.001, overrun_steps=0,
                   result_transfer_s=0.02 if i == len(stages) - 1 else 0.0, total_s=0.2 * len(stages),
                   message_bytes=5000, result_message_bytes=4000 if i == len(stages) - 1 else None,
                   repetition=0, at_s=t, warmup=False)
        rows.append(row)
    return rows


def frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=COLUMNS)


def write_run(d: Path, requests: pd.DataFrame, strategies: dict[str, Any], status: str = "completed") -> Path:
    """requests.parquet, summary.json and manifest.json as the runner leaves them."""
    d.mkdir(parents=True, exist_ok=True)
    requests.to_parquet(d / "requests.parquet", index=False)
    summary = {"scenario": "canned", "status": status, "strategies": strategies, "accuracy": {},
               "node_memory": {}}
    (d / "summary.json").write_text(json.dumps(summary, indent=1, allow_nan=False))
    (d / "manifest.json").write_text(json.dumps({"created": "2026-01-01T00:00:00+0000", "kernel": "test"}))
    return d


@pytest.fixture
def all_failed() -> pd.DataFrame:
    """Six requests over two strategies, every one failed; one without a recorded reason."""
    return frame([
        failed_row("r0", "cloud_only", "timeout: no result within 30 s", 0.0),
        failed_row("r1", "device_only", "node d1 down", 0.5),
        failed_row("r2", "cloud_only", "timeout: no result within 30 s", 1.0),
        failed_row("r3", "device_only", "node d1 down", 1.5),
        failed_row("r4", "cloud_only", "run timeout: no record of this request when the run ended", 2.0),
        failed_row("r5", "device_only", None, 2.5),
    ])


@pytest.fixture
def no_requests() -> pd.DataFrame:
    return frame([])


# a real smoke run (scenarios/smoke.toml), trimmed to what the analysis reads: see its README.md
SMOKE_RUN = Path(__file__).resolve().parents[1] / "data" / "smoke-run"
