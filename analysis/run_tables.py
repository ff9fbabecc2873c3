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
from pathlib import Path
from typing import Annotated, Any, get_args, get_origin

import pandas as pd

from analysis.load import load_run as load_run  # one loader: analysis/load.py; scripts import it here too
from analysis.load import load_runs as load_runs
from analysis.schema import write_parquet
from analysis.traffic import COLUMNS as TRAFFIC_PARSED_COLUMNS
from nodes.clock import Clock, wall_fields
from nodes.planning.request import Request
from nodes.runtime.records import SentRequest, StageRecord, failed_records, read_records

PLANNED_COLUMNS = ["request_id", "repetition", "at_s", "warmup"]
RECORD_WALL_FIELDS = wall_fields(StageRecord)
# requests.parquet's columns: the records' fields, each wall field's emulated twin, the workload's
REQUEST_COLUMNS = [*StageRecord.model_fields, *(f.removeprefix("wall_") for f in RECORD_WALL_FIELDS),
                   *PLANNED_COLUMNS[1:]]
TRAFFIC_WALL_FIELDS = {"wall_t_first": "time", "wall_t_last": "time"}  # analysis/traffic.py, pcap epochs
# traffic.parquet's columns: the parsed table's, each wall field's emulated twin (analysis/pipeline.py)
TRAFFIC_COLUMNS = [*TRAFFIC_PARSED_COLUMNS, *(f.removeprefix("wall_") for f in TRAFFIC_WALL_FIELDS)]


def _floats(annotation: object) -> bool:
    """Whether a field holds a float: `float`, `float | None`, or either annotated."""
    if get_origin(annotation) is Annotated:
        return _floats(get_args(annotation)[0])
    return annotation is float or any(_floats(a) for a in get_args(annotation))


RECORD_FLOATS = [f for f, info in StageRecord.model_fields.items() if _floats(info.annotation)]


def requests_frame(run_dir: Path, planned: list[dict[str, Any]], clock: Clock | None = None) -> pd.DataFrame:
    """Every record of the run, one row per request per stage, with the workload's columns, in
    emulated time on the run's clock (see `with_emulated`)."""
    records: list[StageRecord] = []
    for path in sorted((Path(run_dir) / "records").glob("*.jsonl")):
        records += read_records(path)
    frame = records_table(records, clock)
    workload = pd.DataFrame([{k: r.get(k) for k in PLANNED_COLUMNS} for r in planned],
                            columns=PLANNED_COLUMNS)
    frame = frame.merge(workload, on="request_id", how="left")
    return frame.sort_values(["t_scheduled", "request_id", "stage_index"], na_position="first",
                             kind="stable").reset_index(drop=True)


def records_table(records: list[StageRecord], clock: Clock | None = None) -> pd.DataFrame:
    """Records as rows, each wall field with its emulated twin on `clock` (default: origin 0, K 1)."""
    frame = pd.DataFrame([r.model_dump() for r in records], columns=list(StageRecord.model_fields))
    frame[RECORD_FLOATS] = frame[RECORD_FLOATS].astype(float)  # a column of None stays numeric
    return with_emulated(frame, clock or Clock(wall_origin=0.0), RECORD_WALL_FIELDS)


def with_emulated(frame: pd.DataFrame, clock: Clock, fields: dict[str, str]) -> pd.DataFrame:
    """`frame` with the emulated twin of each wall-clock column in `fields` (`wall_<name>` ->
    `<name>`): an epoch (`time`) becomes seconds from the clock's origin, a duration (`seconds`)
    is divided by K.  The wall columns stay beside them."""
    out = frame.copy()
    for wall, kind in fields.items():
        values = frame[wall].astype(float)
        out[wall.removeprefix("wall_")] = (values.map(clock.at, na_action="ignore") if kind == "time"
                                           else values / clock.dilation)
    return out


def run_clock(manifest: dict[str, Any]) -> Clock:
    """A run's clock from its manifest (nodes/clock.py); a run stopped before its clock started
    counts from the moment it was started."""
    clock = manifest.get("clock") or {}
    origin = clock.get("wall_origin") or manifest.get("wall_started_at") or 0.0
    return Clock(wall_origin=origin, dilation=clock.get("time_dilation") or 1.0)


def unrecorded_failures(seen: set[str], planned: list[Request], scheduler: str, steps: int,
                        clock: Clock, reason: str) -> list[StageRecord]:
    """Failed rows for the planned requests whose id is not in `seen`, stamped as the nodes stamp
    theirs (wall clock)."""
    rows: list[StageRecord] = []
    for request in planned:
        if request.request_id in seen:
            continue
        # when (or whether) it was sent is unknown: the device that knew is gone or never started
        scheduled = clock.wall_at(request.at_s)
        rows += failed_records(SentRequest(request, scheduler, steps, scheduled, scheduled), reason, None)
    return rows


def write_requests(run_dir: Path, frame: pd.DataFrame) -> None:
    """requests.parquet, replaced whole, with the schema version (analysis/schema.py)."""
    write_parquet(frame, Path(run_dir) / "requests.parquet")


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
