"""The end of a run, one pipeline: records -> requests.parquet -> traffic -> summary -> accuracy ->
report, read from a run directory and its manifest.

    finished = finish_run_dir("runs/x", manifest, quality=True, traffic=True)

A normal run's end (emulation/runner.py), a killed run's finish (`edgestage report RUN_DIR` on a
run whose runner died) and deploy mode all end this way; compare and sweep are runs, so theirs do
too.  What the pipeline reads of the manifest: `workload` (the planned requests), `clock` and
`t0` (the run's clock), `network` (links and radios), `scenario` (name, profiles file), `status`,
`error`, `memory` and `warnings`.  Each step after the requests table stands on its own: one that
fails is named in `errors` (the manifest's `finish_errors`), and the next ones still run, so a
failed figure never loses the run's records.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from analysis.run_tables import (
    TRAFFIC_WALL_FIELDS,
    read_link_events,
    requests_frame,
    run_clock,
    with_emulated,
    write_requests,
)
from analysis.schema import SCHEMA_VERSION, write_parquet

log = logging.getLogger(__name__)


@dataclass
class Finished:
    requests: pd.DataFrame
    traffic: pd.DataFrame
    summary: dict[str, Any]  # summary.json
    accuracy: dict[str, Any]
    errors: dict[str, str] = field(default_factory=dict)  # step -> what went wrong
    timings: dict[str, float] = field(default_factory=dict)  # step -> wall seconds


def requests_table(run_dir: Path, manifest: dict[str, Any]) -> pd.DataFrame:
    """requests.parquet from the records, written (also while a run goes); the table."""
    frame = requests_frame(run_dir, manifest.get("workload") or [], run_clock(manifest))
    write_requests(run_dir, frame)
    return frame


def finish_run_dir(run_dir: str | Path, manifest: dict[str, Any], quality: bool = True,
                   traffic: bool = True) -> Finished:
    """Every step of the pipeline on `run_dir` (see the module docstring).  Sets the manifest's
    `schema_version` (the caller writes the manifest), as every file written here carries it."""
    d = Path(run_dir)
    manifest["schema_version"] = SCHEMA_VERSION
    finished = Finished(requests_table(d, manifest), pd.DataFrame(), {}, {"headline": {}})
    steps = _Steps(d, finished)
    finished.traffic = steps.run("traffic", _traffic, d, manifest, traffic)
    if finished.traffic is None:
        finished.traffic = _empty_traffic()
    measured = finished.requests[finished.requests["warmup"].ne(True)]  # warm-ups only open connections
    strategies = steps.run("summary", _strategies, d, manifest, measured, finished.traffic, quality) or {}
    finished.accuracy = steps.run("accuracy", _accuracy, d, manifest, measured, finished.traffic) or {
        "headline": {}}
    paired = steps.run("paired", _paired, measured) or []
    finished.summary = summary_document(manifest, finished.requests, strategies, finished.accuracy, paired)
    (d / "summary.json").write_text(json.dumps(finished.summary, indent=1, default=json_default))
    steps.run("report", _report, d)
    return finished


def summary_document(manifest: dict[str, Any], requests: pd.DataFrame, strategies: dict[str, Any],
                     accuracy: dict[str, Any], paired: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    memory = manifest.get("memory") or {}
    ok = requests.loc[requests["outcome"] == "ok", "request_id"]
    return {"schema_version": SCHEMA_VERSION,
            "scenario": (manifest.get("scenario") or {}).get("name"), "status": manifest.get("status"),
            "error": manifest.get("error"),
            "requests": {"planned": len(manifest.get("workload") or []),
                         "recorded": int(requests["request_id"].nunique()), "ok": int(ok.nunique())},
            "strategies": strategies, "paired": paired or [], "accuracy": accuracy.get("headline", {}),
            "node_memory": {k: v for k, v in memory.items() if k not in ("nodes", "launcher")},
            "warnings": manifest.get("warnings") or []}


class _Steps:
    def __init__(self, run_dir: Path, finished: Finished) -> None:
        self.run_dir = run_dir
        self.finished = finished

    def run(self, name: str, fn: Callable[..., Any], *args: Any) -> Any:
        began = time.monotonic()
        try:
            return fn(*args)
        except Exception as exc:  # the run's records are written; a failed figure must not lose them
            log.warning("%s not written: %s: %s (edgestage report %s)", name, type(exc).__name__, exc,
                        self.run_dir)
            self.finished.errors[name] = f"{type(exc).__name__}: {exc}"
            return None
        finally:
            self.finished.timings[f"{name}_s"] = round(time.monotonic() - began, 3)


def _traffic(run_dir: Path, manifest: dict[str, Any], traffic: bool) -> pd.DataFrame:
    from analysis.traffic import parse_run_traffic

    if not traffic or not (run_dir / "pcap").is_dir():
        return _empty_traffic()
    frame = parse_run_traffic(run_dir / "pcap", manifest.get("network") or {})
    frame = with_emulated(frame, run_clock(manifest), TRAFFIC_WALL_FIELDS)
    write_parquet(frame, run_dir / "traffic.parquet")
    return frame


def _strategies(run_dir: Path, manifest: dict[str, Any], measured: pd.DataFrame, traffic: pd.DataFrame,
                quality: bool) -> dict[str, Any]:
    from analysis.summary import summarize
    from nodes.planning.hardware import load_power

    profiles = ((manifest.get("scenario") or {}).get("nodes") or {}).get("profiles_file")
    return summarize(measured, traffic, run_dir / "samples", quality=quality,
                     network=manifest.get("network") or {}, power=load_power(profiles))


def _paired(measured: pd.DataFrame) -> list[dict[str, Any]]:
    """Each strategy against cloud_only (or the first) on the run's rounds: analysis/interleaving.py."""
    from analysis.interleaving import paired_rounds
    from analysis.summary import json_safe, per_request

    if measured.empty:
        return []
    return json_safe(paired_rounds(per_request(measured)).to_dict("records"))


def _accuracy(run_dir: Path, manifest: dict[str, Any], measured: pd.DataFrame,
              traffic: pd.DataFrame) -> dict[str, Any]:
    from analysis.accuracy import accuracy_report

    report = accuracy_report(measured, traffic, manifest.get("network") or {}, read_link_events(run_dir))
    accuracy = {"schema_version": SCHEMA_VERSION, **report}
    (run_dir / "accuracy.json").write_text(json.dumps(accuracy, indent=1, default=json_default))
    return accuracy


def _report(run_dir: Path) -> None:
    from analysis.report import write_report

    write_report(run_dir)


def _empty_traffic() -> pd.DataFrame:
    from analysis.traffic import empty_traffic

    return empty_traffic()


def json_default(value: object) -> object:
    """json.dumps' `default` for what a run's documents hold: paths and numpy scalars."""
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
