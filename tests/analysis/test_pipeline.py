"""The end-of-run pipeline (analysis/pipeline.py) on a real run's files (tests/data/smoke-run), and a
killed run finished by it (emulation.runner.finish_killed_run, which `edgestage report` calls)."""

from __future__ import annotations

import json
import shutil

import pandas as pd

from analysis.pipeline import finish_run_dir
from analysis.schema import SCHEMA_VERSION, parquet_version
from emulation.runner import finish_killed_run

from .conftest import SMOKE_RUN


def _copy(tmp_path, status: str):
    d = tmp_path / "run"
    shutil.copytree(SMOKE_RUN, d)
    manifest = json.loads((d / "manifest.json").read_text())
    manifest.update(status=status, runner={"pid": 999_999_999, "start_ticks": 1})  # a runner long gone
    (d / "manifest.json").write_text(json.dumps(manifest))
    for name in ("requests.parquet", "summary.json"):
        (d / name).unlink()
    return d, manifest


def test_every_step_writes_its_file_from_the_records_and_the_captures(tmp_path):
    d, manifest = _copy(tmp_path, "completed")
    finished = finish_run_dir(d, manifest, quality=False, traffic=True)
    assert finished.errors == {}
    assert set(finished.timings) == {"traffic_s", "summary_s", "paired_s", "accuracy_s", "report_s"}
    pd.testing.assert_frame_equal(pd.read_parquet(d / "requests.parquet"), pd.read_parquet(
        SMOKE_RUN / "requests.parquet"))
    assert len(pd.read_parquet(d / "traffic.parquet")) == len(finished.traffic) > 0
    summary = json.loads((d / "summary.json").read_text())
    assert summary["requests"] == {"planned": 8, "recorded": 8, "ok": 8}
    assert summary["status"] == "completed" and set(summary["strategies"]) == set(
        finished.requests["strategy"])
    assert (d / "accuracy.json").is_file() and (d / "report.md").is_file()


def test_every_file_the_pipeline_writes_carries_the_schema_version(tmp_path):
    d, manifest = _copy(tmp_path, "completed")
    finish_run_dir(d, manifest, quality=False, traffic=True)
    assert manifest["schema_version"] == SCHEMA_VERSION  # the runner writes the manifest after
    for name in ("summary.json", "accuracy.json"):
        assert json.loads((d / name).read_text())["schema_version"] == SCHEMA_VERSION
    for name in ("requests.parquet", "traffic.parquet"):
        assert parquet_version(d / name) == SCHEMA_VERSION


def test_a_failed_step_is_named_and_the_next_ones_still_run(tmp_path):
    d, manifest = _copy(tmp_path, "completed")
    manifest["scenario"]["nodes"]["profiles_file"] = str(tmp_path / "no-such-profiles.toml")
    finished = finish_run_dir(d, manifest, quality=False, traffic=False)
    assert list(finished.errors) == ["summary"] and "no-such-profiles.toml" in finished.errors["summary"]
    assert (d / "summary.json").is_file() and (d / "accuracy.json").is_file() and (d / "report.md").is_file()


def test_a_killed_run_is_finished_from_its_records(tmp_path):
    d, _ = _copy(tmp_path, "running")
    (d / "records" / "d2.jsonl").unlink()  # d2 was killed before it could write a line
    result = finish_killed_run(d, quality=False)
    manifest = json.loads((d / "manifest.json").read_text())
    assert manifest["status"] == "killed" and "finish_killed_run" in manifest["error"]
    assert result.summary["requests"] == {"planned": 8, "recorded": 8, "ok": 4}
    failed = result.requests[result.requests["device"] == "d2"]
    assert (failed["reason"] == "the run was killed before this request was recorded").all()
    assert (d / "report.md").is_file()
