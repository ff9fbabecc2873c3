"""A run's requests table from its durable source: the per-device records files.

Every device appends one JSON line per request per stage to `records/<device>.jsonl` the moment a
request ends (flushed per line), and the runner adds its own rows for requests nobody recorded
(`records/_runner.jsonl`).  `requests.parquet` is made from those files: while the run goes, at
its end, and again for a run that was killed before it could write it
(`emulation.runner.finish_killed_run`, which `edgestage report RUN_DIR` calls).  A planned
request (the manifest's `workload`) with no record at all becomes a `failed` row that says so.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pandas as pd

from nodes.runtime.records import StageRecord, failed_records, read_records

PLANNED_COLUMNS = ["request_id", "repetition", "at_s", "warmup"]


def requests_frame(run_dir: Path, planned: list[dict[str, Any]]) -> pd.DataFrame:
    """Every record of the run, one row per request per stage, with the workload's columns."""
    rows: list[dict] = []
    for path in sorted((Path(run_dir) / "records").glob("*.jsonl")):
        rows += [r.model_dump() for r in read_records(path)]
    frame = pd.DataFrame(rows, columns=list(StageRecord.model_fields))
    workload = pd.DataFrame([{k: r.get(k) for k in PLANNED_COLUMNS} for r in planned],
                            columns=PLANNED_COLUMNS)
    frame = frame.merge(workload, on="request_id", how="left")
    return frame.sort_values(["t_scheduled", "request_id", "stage_index"], na_position="first",
                             kind="stable").reset_index(drop=True)


def unrecorded_failures(seen: set[str], planned: list[dict[str, Any]], scheduler: str, steps: int,
                        t0: float | None, reason: str) -> list[StageRecord]:
    """Failed rows for the planned requests (workload rows) whose id is not in `seen`."""
    rows: list[StageRecord] = []
    for r in planned:
        if r["request_id"] in seen:
            continue
        # when (or whether) it was sent is unknown: the device that knew is gone or never started
        scheduled = (t0 or 0.0) + r["at_s"]
        note = {"request_id": r["request_id"], "device": r["device"], "strategy": r["strategy"],
                "n": r["n"], "seed": r["seed"], "scheduler": scheduler, "steps": steps,
                "deadline_s": r["deadline_s"], "t_scheduled": scheduled, "t_request_sent": scheduled}
        rows += failed_records(note, reason, None)
    return rows


def write_requests(run_dir: Path, frame: pd.DataFrame) -> None:
    """requests.parquet, replaced whole (a reader never sees half a file)."""
    tmp = Path(run_dir) / ".requests.parquet.tmp"
    frame.to_parquet(tmp, index=False)
    os.replace(tmp, Path(run_dir) / "requests.parquet")


def load_run(run_dir: str | Path) -> dict[str, Any]:
    """A run directory's tables and documents, for scripts: requests, traffic (DataFrames),
    summary, accuracy and manifest (dicts); what a run did not write is absent."""
    d = Path(run_dir)
    out: dict[str, Any] = {}
    for name in ("requests", "traffic"):
        if (d / f"{name}.parquet").is_file():
            out[name] = pd.read_parquet(d / f"{name}.parquet")
    for name in ("summary", "accuracy", "manifest"):
        if (d / f"{name}.json").is_file():
            out[name] = json.loads((d / f"{name}.json").read_text())
    return out
