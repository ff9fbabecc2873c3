"""summarize and write_report on canned run directories: a run where every request failed, one
with no request at all, one with done requests (real images, per-plan quality from a small n),
and run directories whose summary.json is not an object."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

from analysis.report import write_report
from analysis.summary import NO_REASON, format_table, summarize
from nodes.generation import generate, request_labels
from nodes.plan import parse_plan
from nodes.samples import Samples, save_samples

from .conftest import frame, ok_rows, write_run

ROOT = Path(__file__).resolve().parents[2]


# ---- every request failed, or none was made -----------------------------------------------------

def test_summary_of_an_all_failed_run_has_every_failure_and_its_reason(all_failed, tmp_path):
    summary = summarize(all_failed, None, tmp_path / "samples")
    assert set(summary) == {"cloud_only", "device_only"}
    for entry in summary.values():
        assert entry["done"] == 0 and entry["failed"] == entry["requests"] == 3 and entry["images"] == 0
        assert entry["latency_p50_s"] is None and entry["wire_bytes_per_image"] is None
        assert "fid" not in entry and "run_sample_fid" not in entry  # nothing to judge
    assert summary["cloud_only"]["failure_reasons"] == {
        "timeout: no result within 30 s": 2, "run timeout: no record of this request when the run ended": 1}
    assert summary["device_only"]["failure_reasons"] == {"node d1 down": 2, NO_REASON: 1}
    failures = [f["request_id"] for e in summary.values() for f in e["failures"]]
    assert sorted(failures) == [f"r{i}" for i in range(6)]
    json.dumps(summary, allow_nan=False)  # what the runner writes to summary.json
    table = format_table(summary, title="canned: completed")
    assert "device_only failures: node d1 down (2); (no reason recorded) (1)" in table


def test_summary_of_no_request_is_empty_and_says_so(no_requests, tmp_path):
    assert summarize(no_requests, None, tmp_path) == {}
    assert "no request was recorded" in format_table({}, title="t")


def test_report_of_an_all_failed_run_says_nothing_was_done_and_why(all_failed, tmp_path):
    d = write_run(tmp_path / "run", all_failed, summarize(all_failed, None, tmp_path / "samples"))
    text = write_report(d).read_text()
    assert "Nothing was done: all 6 requests failed" in text
    for reason in ("timeout: no result within 30 s", "node d1 down", NO_REASON,
                   "run timeout: no record of this request when the run ended"):
        assert reason in text, reason
    assert "| cloud_only " in text and "| device_only " in text
    assert "![" not in text and not (d / "plots").exists()  # no figure of nothing, no empty folder


def test_report_of_a_run_without_requests(no_requests, tmp_path):
    d = write_run(tmp_path / "run", no_requests, {})
    text = write_report(d).read_text()
    assert "Nothing was done: no request was recorded" in text
    assert not (d / "plots").exists()


# ---- summary.json that is not an object ----------------------------------------------------------

@pytest.mark.parametrize(("content", "problem"), [
    (b"[1, 2]", "expected a JSON object, found list"),
    (b'"completed"', "expected a JSON object, found str"),
    (b'{"strategies": {"cloud_only": {"done": 1', "not valid JSON"),
    (b"\xff\xfe\x00garbage", "not valid JSON"),
    (b'{"strategies": [1, 2]}', "'strategies' must map each strategy to an object"),
])
def test_report_refuses_a_summary_that_is_not_an_object(all_failed, tmp_path, content, problem):
    d = write_run(tmp_path / "run", all_failed, {})
    (d / "summary.json").write_bytes(content)
    with pytest.raises(ValueError, match=re.escape(problem)) as caught:
        write_report(d)
    assert str(d / "summary.json") in str(caught.value)
    assert not (d / "plots").exists() and not (d / "report.md").exists()


def test_edgestage_report_on_garbage_summary_is_one_line_exit_2(all_failed, tmp_path):
    d = write_run(tmp_path / "run", all_failed, {})
    (d / "summary.json").write_text("[]")
    done = subprocess.run([sys.executable, "-m", "emulation.cli", "report", str(d)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert lines == [f"edgestage: error: {d / 'summary.json'}: expected a JSON object, found list"]
    assert not (d / "plots").exists()


# ---- done requests: per-plan quality next to the run's own sample --------------------------------

PLANS = {"r0": ("device_only", "small:0-3@d1"), "r1": ("device_only", "small:0-3@d2"),
         "r2": ("split", "small:0-2@edge,small:2-3@d1"), "r3": ("device_only", "small:0-3@d1")}


@pytest.fixture(scope="module")
def done_run(tmp_path_factory) -> tuple[Path, dict]:
    """Four done requests with their real samples (small model, 3 DDIM steps), quality from 16
    images per plan."""
    d = tmp_path_factory.mktemp("done")
    rows = []
    for i, (rid, (strategy, plan)) in enumerate(PLANS.items()):
        rows += ok_rows(rid, strategy, plan, t=float(i))
        labels = request_labels(4)
        images = generate(parse_plan(plan), labels, seed=7, scheduler="ddim")
        save_samples(d / "samples" / f"{rid}.npz", Samples(images, labels, parse_plan(plan), 7, "ddim", 3))
    requests = frame(rows)
    summary = summarize(requests, None, d / "samples", plan_images=16, cache_dir=d / "cache", progress=False)
    write_run(d, requests, summary)
    return d, summary


def test_summary_judges_each_plan_on_its_own_images_and_weights_by_requests(done_run):
    d, summary = done_run
    device = summary["device_only"]
    used = [(p["plan"], p["requests"], p["n_images"]) for p in device["plan_quality"]]
    assert used == [("small:0-3", 3, 16)]  # three requests on two hosts: one plan
    assert device["n_quality"] == 16 and device["fid"] == device["plan_quality"][0]["fid"]
    assert Path(device["plan_quality"][0]["cache_file"]).parent == d / "cache"
    split = summary["split"]["plan_quality"]
    assert [p["plan"] for p in split] == ["small:0-2,small:2-3"]
    # the run's own images under their own name, never as the strategy's quality
    assert device["run_sample_images"] == 12 and summary["split"]["run_sample_images"] == 4
    assert math.isfinite(device["run_sample_fid"]) and "quality_images" not in device


def test_weighted_figure_is_the_request_weighted_mean_of_the_plans(tmp_path):
    rows = ok_rows("a", "mixed", "small:0-3@d1", 0.0) + ok_rows("b", "mixed", "small:0-3@d1", 1.0)
    rows += ok_rows("c", "mixed", "small:0-1@d1,small:1-3@d1", 2.0)
    entry = summarize(frame(rows), None, tmp_path, plan_images=10, cache_dir=tmp_path / "c",
                      progress=False)["mixed"]
    plans = {p["plan"]: p for p in entry["plan_quality"]}
    assert {p: q["requests"] for p, q in plans.items()} == {"small:0-3": 2, "small:0-1,small:1-3": 1}
    for figure in ("fid", "kid", "class_accuracy", "psnr_vs_large_db"):
        expected = (2 * plans["small:0-3"][figure] + plans["small:0-1,small:1-3"][figure]) / 3
        assert entry[figure] == pytest.approx(expected), figure
    assert "run_sample_fid" not in entry  # no samples in this run directory


def test_table_and_report_show_n_beside_the_plan_figures(done_run):
    d, summary = done_run
    table = format_table(summary)
    header = table.splitlines()[0].split()
    assert header.index("n_quality") == header.index("class_acc") + 1
    assert "run_sample_fid" in header and "run_sample_n" in header and "quality_images" not in header
    device_row = next(line for line in table.splitlines() if line.startswith("device_only")).split()
    assert device_row[header.index("n_quality")] == "16" and device_row[header.index("run_sample_n")] == "12"
    text = write_report(d).read_text()
    header_row = re.sub(r" +", " ", next(line for line in text.splitlines() if line.startswith("| strategy")))
    assert "| class accuracy | n (quality, per plan) |" in header_row and "| run-sample FID |" in header_row
    assert "## Quality per plan" in text
    plan_row = next(line for line in text.splitlines()
                    if line.startswith("| device_only") and "small:0-3" in line)
    assert "| 16 |" in re.sub(r" +", " ", plan_row)
    assert sorted(p.name for p in (d / "plots").iterdir()) == ["cost_and_quality.png", "latency_cdf.png",
                                                              "latency_parts.png"]


def test_report_of_an_old_summary_labels_its_pooled_figures_as_the_run_sample(done_run, tmp_path):
    d, _ = done_run
    old = {"device_only": {"done": 3, "failed": 0, "requests": 3, "fid": 11.3, "kid": 0.5,
                           "class_accuracy": 0.76, "quality_images": 12}}
    run = write_run(tmp_path / "old", frame(ok_rows("r0", "device_only", "small:0-3@d1", 0.0)), old)
    text = write_report(run).read_text()
    row = re.sub(r" +", " ", next(line for line in text.splitlines() if line.startswith("| device_only")))
    cells = [c.strip() for c in row.strip("|").split("|")]
    header = [c.strip() for c in re.sub(r" +", " ", next(
        line for line in text.splitlines() if line.startswith("| strategy"))).strip("|").split("|")]
    assert cells[header.index("FID")] == "-" and cells[header.index("run-sample FID")] == "11.30"
    assert cells[header.index("run-sample n")] == "12"



def test_a_plan_whose_model_is_not_here_leaves_the_rest_of_the_summary(tmp_path):
    rows = ok_rows("a", "elsewhere", "huge:0-3@cloud", 0.0) + ok_rows("b", "local", "small:0-3@d1", 1.0)
    summary = summarize(frame(rows), None, tmp_path, plan_images=10, cache_dir=tmp_path / "c", progress=False)
    assert "unknown model 'huge'" in summary["elsewhere"]["quality_error"]
    assert summary["elsewhere"]["done"] == 1 and summary["elsewhere"]["latency_p50_s"] == pytest.approx(0.2)
    assert summary["local"]["n_quality"] == 10 and "quality_error" not in summary["local"]
    d = write_run(tmp_path / "run", frame(rows), summary)
    text = write_report(d).read_text()
    assert "Quality of `elsewhere` not measured: huge:0-3: unknown model 'huge'" in text
