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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from nodes.runtime.records import StageRecord, failed_records, read_records

PLANNED_COLUMNS = ["request_id", "repetition", "at_s", "warmup"]


RECORD_TIMES = [f for f in StageRecord.model_fields if f.startswith("t_")]
RECORD_DURATIONS = [f for f in StageRecord.model_fields if f.endswith("_s")]
TRAFFIC_TIMES = ["t_first", "t_last"]


def requests_frame(run_dir: Path, planned: list[dict[str, Any]], clock: Clock | None = None) -> pd.DataFrame:
    """Every record of the run, one row per request per stage, with the workload's columns, in
    emulated time on the run's clock (see `Clock`)."""
    rows: list[dict] = []
    for path in sorted((Path(run_dir) / "records").glob("*.jsonl")):
        rows += [r.model_dump() for r in read_records(path)]
    frame = pd.DataFrame(rows, columns=list(StageRecord.model_fields))
    frame = (clock or Clock()).emulated(frame, RECORD_TIMES, RECORD_DURATIONS)
    workload = pd.DataFrame([{k: r.get(k) for k in PLANNED_COLUMNS} for r in planned],
                            columns=PLANNED_COLUMNS)
    frame = frame.merge(workload, on="request_id", how="left")
    return frame.sort_values(["t_scheduled", "request_id", "stage_index"], na_position="first",
                             kind="stable").reset_index(drop=True)


@dataclass(frozen=True)
class Clock:
    """A run's clock: t = 0 at `origin` (epoch seconds: the first measured request), and emulated
    time running `dilation` (K) times slower than wall time.  The nodes and the captures stamp
    wall-clock epoch seconds; the tables give emulated seconds, with the raw figures kept beside
    them as `wall_<column>`."""

    origin: float = 0.0
    dilation: float = 1.0

    @classmethod
    def of(cls, manifest: dict[str, Any]) -> Clock:
        """A run's clock from its manifest; a run stopped before its clock started counts from t0."""
        clock = manifest.get("clock") or {}
        return cls(clock.get("origin") or manifest.get("t0") or 0.0, clock.get("time_dilation") or 1.0)

    def emulated(self, frame: pd.DataFrame, times: list[str], durations: list[str]) -> pd.DataFrame:
        out = frame.copy()
        for col in times:
            out[f"wall_{col}"] = frame[col]
            out[col] = (frame[col].astype(float) - self.origin) / self.dilation
        for col in durations:
            out[f"wall_{col}"] = frame[col]
            out[col] = frame[col].astype(float) / self.dilation
        return out


def unrecorded_failures(seen: set[str], planned: list[dict[str, Any]], scheduler: str, steps: int,
                        t0: float | None, reason: str, dilation: float = 1.0) -> list[StageRecord]:
    """Failed rows for the planned requests (workload rows, emulated time) whose id is not in
    `seen`, stamped as the nodes stamp theirs (wall clock)."""
    rows: list[StageRecord] = []
    for r in planned:
        if r["request_id"] in seen:
            continue
        # when (or whether) it was sent is unknown: the device that knew is gone or never started
        scheduled = (t0 or 0.0) + r["at_s"] * dilation
        note = {"request_id": r["request_id"], "device": r["device"], "strategy": r["strategy"],
                "n": r["n"], "seed": r["seed"], "scheduler": scheduler, "steps": steps,
                "deadline_s": None if r["deadline_s"] is None else r["deadline_s"] * dilation,
                "t_scheduled": scheduled, "t_request_sent": scheduled}
        rows += failed_records(note, reason, None)
    return rows


def write_requests(run_dir: Path, frame: pd.DataFrame) -> None:
    """requests.parquet, replaced whole (a reader never sees half a file)."""
    tmp = Path(run_dir) / ".requests.parquet.tmp"
    frame.to_parquet(tmp, index=False)
    os.replace(tmp, Path(run_dir) / "requests.parquet")


def read_link_events(run_dir: str | Path) -> list[dict]:
    """link_events.jsonl: every link change of the run (a line torn by a kill is left out)."""
    path = Path(run_dir) / "link_events.jsonl"
    events = []
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return events


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


def load_runs(run_dirs: list[str | Path]) -> dict[str, pd.DataFrame]:
    """Many runs' requests and traffic tables, each concatenated with a `run` column (the run
    directory's name) to group and compare by.  Imports no torch, diffusers or Mininet."""
    frames: dict[str, list[pd.DataFrame]] = {"requests": [], "traffic": []}
    for run_dir in run_dirs:
        run = load_run(run_dir)
        for name, parts in frames.items():
            if name in run:
                parts.append(run[name].assign(run=Path(run_dir).name))
    return {name: pd.concat(parts, ignore_index=True) for name, parts in frames.items() if parts}
