"""Run directories into pandas: one run, many runs, or every run under a directory (a compare's,
a sweep's, a campaign's), as tidy frames that concatenate.

    from analysis.load import load_runs

    tables = load_runs("runs/compare-burst")        # or a run directory, or a list of either
    tables.runs                                     # one row per run: id, scenario, status, K, ...
    tables.requests                                 # requests.parquet's rows, one per request per stage
    tables.traffic                                  # traffic.parquet's rows
    first = tables.requests.drop_duplicates(["run_id", "request_id"])
    first.merge(tables.runs, on="run_id").groupby("strategy")["total_s"].median()

A campaign's runs (emulation/campaign.py) carry what varies between them as columns of every
frame, `runs`, `requests` and `traffic` alike: each grid field (named by its dotted path),
`campaign_strategy` (the strategy the run ran alone, or empty) and `campaign_repetition`
(`repetition` is already the workload's own, within a run), from the campaign's campaign.json.

Every frame has a `run_id` column: the run directory's path relative to what was loaded (its name
where a run directory itself was given), or relative to the inputs' common parent where two runs
given apart would otherwise share an id.  The runs table's `run_dir` is the absolute path.
Warm-up requests (`warmup` True: they only open connections) are left out of `requests`, and their
messages out of `traffic`, unless `warmup=True`; a campaign's runs that overran (its index says
`overran`) are left out unless `overran=True`, and hidden folders are never searched.
Each file's schema version is checked (analysis/schema.py): a newer one than this code knows is
refused with a ValueError, an older one is upgraded.  Columns, units and clocks:
docs/results-columns.md.  Imports neither torch, diffusers nor Mininet: a notebook needs pandas and
pyarrow only.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from analysis.schema import document_version, parquet_version

_TABLES = ("requests", "traffic")
_DOCUMENTS = ("summary", "accuracy", "manifest")
# what a compare, a sweep or a campaign writes beside its runs
_INDEXES = ("compare.json", "sweep.json", "campaign.json")


@dataclass(frozen=True)
class RunTables:
    """Loaded runs: `runs` (one row per run), `requests` and `traffic` (one row per observation),
    each with `run_id`.  `tables["requests"]` works too."""

    runs: pd.DataFrame
    requests: pd.DataFrame
    traffic: pd.DataFrame

    def __getitem__(self, name: str) -> pd.DataFrame:
        if name not in ("runs", *_TABLES):
            raise KeyError(name)
        return getattr(self, name)


def load_run(run_dir: str | Path) -> dict[str, Any]:
    """One run directory's files as written: `requests`, `traffic` (DataFrames, warm-ups
    included), `summary`, `accuracy`, `manifest` (dicts); what the run did not write is absent.
    ValueError if a file's schema version is newer than this code reads."""
    d = Path(run_dir)
    out: dict[str, Any] = {}
    for name in _TABLES:
        path = d / f"{name}.parquet"
        if path.is_file():
            version = parquet_version(path)
            frame = pd.read_parquet(path)
            out[name] = _upgrade_traffic(frame, version) if name == "traffic" else frame
    for name in _DOCUMENTS:
        path = d / f"{name}.json"
        if path.is_file():
            document = json.loads(path.read_text())
            if isinstance(document, dict):
                document_version(document, path)
            out[name] = document
    return out


def load_runs(paths: str | Path | Iterable[str | Path], warmup: bool = False,
              overran: bool = False) -> RunTables:
    """Every run in `paths` (a run directory, or a directory with run directories anywhere under
    it, or a list of either) as tidy frames with a `run_id` column; see the module docstring.
    A campaign's run whose index says `overran` (twice run, twice overrun: emulation/campaign.py)
    is left out unless `overran`.
    ValueError if `paths` holds no run, or a file's schema version is newer than this code reads."""
    inputs = [Path(p).resolve() for p in ([paths] if isinstance(paths, str | Path) else paths)]
    found = {run: base for base, runs in _located(inputs) for run in runs
             if overran or _campaign_status(run) != "overran"}
    if not found:
        raise ValueError(f"no run directory (one with a manifest.json) in {', '.join(map(str, inputs))}")
    rows, parts = [], {name: [] for name in _TABLES}
    for run_dir, base in found.items():
        run_id = run_dir.relative_to(base).as_posix()
        run = load_run(run_dir)
        rows.append({"run_id": run_id, **run_row(run_dir, run)})
        columns = {k: _cell(v) for k, v in campaign_fields(run_dir).items()}
        for name, frame in _measured(run, warmup).items():
            parts[name].append(frame.assign(run_id=run_id, **columns))
    return RunTables(_runs_frame(rows), *(_concat(parts[name]) for name in _TABLES))


def find_runs(root: str | Path) -> list[Path]:
    """The run directories at or under `root` (each holds a manifest.json), sorted; a run
    directory is not searched for runs inside it."""
    root = Path(root)
    if (root / "manifest.json").is_file():
        return [root]
    found = []
    for here, dirs, files in os.walk(root):
        if "manifest.json" in files:
            found.append(Path(here))
            dirs.clear()  # a run's own folders (records, pcap, samples) hold no runs
        # hidden folders hold what is not a result: a campaign's runs set aside (.overran)
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
    return sorted(found)


def run_row(run_dir: Path, run: dict[str, Any]) -> dict[str, Any]:
    """The runs table's row of one run: what identifies it and what a campaign varies."""
    manifest, summary = run.get("manifest") or {}, run.get("summary") or {}
    scenario = manifest.get("scenario") or {}
    seeds = manifest.get("seeds") or {}
    planned = summary.get("requests") or {}
    row = {"run_dir": str(run_dir), "scenario": scenario.get("name") or summary.get("scenario"),
           "status": manifest.get("status") or summary.get("status"),
           "time_dilation": (manifest.get("clock") or {}).get("time_dilation"),
           "strategies": ",".join(scenario.get("strategies") or {}) or None,
           "commit": (manifest.get("versions") or {}).get("edgestage_commit"),
           "created": manifest.get("created"), "seed_topology": seeds.get("topology"),
           "seed_workload": seeds.get("workload"), "requests_planned": planned.get("planned"),
           "requests_ok": planned.get("ok"),
           "schema_version": document_version(manifest or summary, run_dir / "manifest.json")}
    return {**row, **varied_fields(run_dir)}


def varied_fields(run_dir: Path) -> dict[str, Any]:
    """What the run's parent directory says varies between its runs: a compare's run name (the
    strategy, or an oracle candidate and its plan), a sweep's field and value (a column named by
    the field), a campaign's run name and campaign_fields."""
    parent, name = run_dir.parent, run_dir.name
    out: dict[str, Any] = {}
    for index in _INDEXES:
        meta = _index(parent / index)
        if index == "campaign.json":
            if _campaign_entry(meta, name) is not None:
                out.update(campaign="campaign", campaign_run=name, **campaign_fields(run_dir))
            continue
        runs = (meta.get("runs") or []) if isinstance(meta, dict) else []
        if name not in runs:
            continue
        if index == "compare.json":
            plans = [p for p, n in (meta.get("oracle_candidates") or {}).items() if n == name]
            out.update(campaign="compare", compare_run=name, oracle_plan=plans[0] if plans else None)
        else:
            values = meta.get("values") or []
            value = values[runs.index(name)] if len(values) == len(runs) else None
            out.update({"campaign": "sweep", "sweep_field": meta.get("field"), meta.get("field"): value})
    return out


def campaign_fields(run_dir: Path) -> dict[str, Any]:
    """What a campaign varies for this run, as its campaign.json records it: each grid field's
    value, `campaign_strategy` and `campaign_repetition`; empty for a run of no campaign."""
    entry = _campaign_entry(_index(run_dir.parent / "campaign.json"), run_dir.name)
    if entry is None:
        return {}
    fields = entry.get("fields") if isinstance(entry.get("fields"), dict) else {}
    return {**fields, "campaign_strategy": entry.get("strategy"),
            "campaign_repetition": entry.get("repetition")}


def _campaign_status(run_dir: Path) -> str | None:
    entry = _campaign_entry(_index(run_dir.parent / "campaign.json"), run_dir.name)
    return None if entry is None else entry.get("status")


def _index(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _campaign_entry(meta: Any, name: str) -> dict[str, Any] | None:
    """The run `name`'s entry of a campaign.json's runs, or None."""
    runs = meta.get("runs") if isinstance(meta, dict) else None
    entries = [r for r in runs or [] if isinstance(r, dict) and r.get("run_dir", r.get("name")) == name]
    return entries[0] if entries else None


def _cell(value: Any) -> Any:
    """A value one column of a frame can hold on every row: a list or table as its JSON text."""
    return json.dumps(value) if isinstance(value, list | dict) else value


def _located(inputs: list[Path]) -> list[tuple[Path, list[Path]]]:
    """(the base run ids are relative to, the runs found) for each input: the input itself (its
    parent for a run directory); the inputs' common parent where that would give two runs one id."""
    found = [find_runs(p) for p in inputs]
    own = [(p.parent if runs == [p] else p, runs) for p, runs in zip(inputs, found, strict=True)]
    ids = [run.relative_to(base) for base, runs in own for run in runs]
    if len(set(ids)) == len(ids):
        return own
    common = Path(os.path.commonpath([p.parent for p in inputs]))
    return [(common, runs) for runs in found]


def _measured(run: dict[str, Any], warmup: bool) -> dict[str, pd.DataFrame]:
    """The run's tables, without its warm-up requests' rows unless `warmup`."""
    tables = {name: run[name] for name in _TABLES if name in run}
    requests = tables.get("requests")
    if warmup or requests is None or "warmup" not in requests.columns:
        return tables
    warm = requests["warmup"].fillna(False).astype(bool)
    tables["requests"] = requests[~warm].reset_index(drop=True)
    if "traffic" in tables:
        traffic = tables["traffic"]
        tables["traffic"] = traffic[~traffic["request_id"].isin(set(requests.loc[warm, "request_id"]))]
        tables["traffic"] = tables["traffic"].reset_index(drop=True)
    return tables


def _upgrade_traffic(frame: pd.DataFrame, version: int) -> pd.DataFrame:
    """Version 1 repeated a message's bytes on the rows of its ACKs: keep them on its data rows
    only, as version 2 writes them."""
    if version >= 2 or "part" not in frame.columns:
        return frame
    out = frame.copy()
    acks = out["part"] == "ack"
    for column in ("message_bytes", "zmtp_bytes"):
        if column in out.columns:
            out[column] = out[column].astype(float).mask(acks)
    return out


def _runs_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    frame = pd.DataFrame(rows)
    return frame.sort_values("run_id", kind="stable").reset_index(drop=True)


def _concat(parts: list[pd.DataFrame]) -> pd.DataFrame:
    """The runs' rows, `run_id` first; empty (with only `run_id`) when no run has the table."""
    if not parts:
        return pd.DataFrame({"run_id": pd.Series(dtype=str)})
    frame = pd.concat([p for p in parts if not p.empty] or parts[:1], ignore_index=True)
    return frame[["run_id", *(c for c in frame.columns if c != "run_id")]]
