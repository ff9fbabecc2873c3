"""summarize and write_report on canned run directories: a run where every request failed, one
with no request at all, one with done requests (real images, per-plan quality from a small n),
run directories whose summary.json is not an object, and a real smoke run (tests/data/smoke-run:
its records, captures and delivered images) checked against its requests table."""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import sys
from pathlib import Path

import matplotlib.image
import numpy as np
import pandas as pd
import pytest

from analysis.report import latency_parts_frame, write_report
from analysis.summary import NO_REASON, PLAN_FIGURES, format_table, summarize
from analysis.traffic import parse_run_traffic
from nodes.diffusion.generation import generate, request_labels
from nodes.diffusion.samples import Samples, save_samples
from nodes.planning.plan import parse_plan

from .conftest import SMOKE_RUN, frame, ok_rows, write_run

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
    assert math.isfinite(device["run_sample_pca_fd"]) and 0 <= device["run_sample_judge_agreement"] <= 1
    assert device["svm_class_accuracy"] == device["plan_quality"][0]["svm_class_accuracy"]


def test_weighted_figure_is_the_request_weighted_mean_of_the_plans(tmp_path):
    rows = ok_rows("a", "mixed", "small:0-3@d1", 0.0) + ok_rows("b", "mixed", "small:0-3@d1", 1.0)
    rows += ok_rows("c", "mixed", "small:0-1@d1,small:1-3@d1", 2.0)
    entry = summarize(frame(rows), None, tmp_path, plan_images=10, cache_dir=tmp_path / "c",
                      progress=False)["mixed"]
    plans = {p["plan"]: p for p in entry["plan_quality"]}
    assert {p: q["requests"] for p, q in plans.items()} == {"small:0-3": 2, "small:0-1,small:1-3": 1}
    for figure in PLAN_FIGURES:  # both judges' figures
        expected = (2 * plans["small:0-3"][figure] + plans["small:0-1,small:1-3"][figure]) / 3
        assert entry[figure] == pytest.approx(expected), figure
    assert "run_sample_fid" not in entry  # no samples in this run directory


def cells(line: str) -> list[str]:
    """A terminal table row's cells: columns are two spaces apart or more (`J/img (device)` has one)."""
    return re.split(r" {2,}", line.strip())


def test_table_and_report_show_n_beside_the_plan_figures(done_run):
    d, summary = done_run
    table = format_table(summary)
    header = cells(table.splitlines()[0])
    # both judges' figures side by side, then n
    assert header.index("svm_acc") == header.index("class_acc") + 1
    assert header.index("n_quality") == header.index("agree") + 1
    assert header.index("run_sample_svm_acc") == header.index("run_sample_acc") + 1
    assert "run_sample_fid" in header and "run_sample_n" in header and "quality_images" not in header
    assert header.index("J/img (device)") == header.index("wire_B/img") + 1
    device_row = cells(next(line for line in table.splitlines() if line.startswith("device_only")))
    assert device_row[header.index("n_quality")] == "16" and device_row[header.index("run_sample_n")] == "12"
    text = write_report(d).read_text()
    header_row = re.sub(r" +", " ", next(line for line in text.splitlines() if line.startswith("| strategy")))
    assert "| class accuracy | class accuracy (SVM) | FD (PCA) | judges agree | n (quality, per plan) |" \
        in header_row
    assert "| run-sample FID |" in header_row and "| run-sample class accuracy (SVM) |" in header_row
    assert "## Quality per plan" in text
    plan_row = next(line for line in text.splitlines()
                    if line.startswith("| device_only") and "small:0-3" in line)
    assert "| 16 |" in re.sub(r" +", " ", plan_row)
    assert sorted(p.name for p in (d / "plots").glob("*.png")) == [
        "latency_cdf.png", "latency_over_time.png", "latency_parts.png", "quality_vs_latency.png"]


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


# ---- a real run: tests/data/smoke-run, copied before anything is written ------------------------

ENERGY_KEYS = ("device_energy_per_image_j", "device_radio_per_image_j", "compute_energy_per_image_j")
COST_KEYS = ("requests", "done", "failed", "images", "plans", "latency_mean_s", "latency_p50_s",
             "latency_p95_s", "compute_s_mean", "transfer_s_mean", "overrun_steps", "wire_bytes",
             "wire_bytes_per_image", "report_bytes_per_image", "payload_bytes_per_image",
             "wire_bytes_by_link")
NEWER_THAN_SMOKE_RUN = {"report_bytes_per_image"}  # figures its recorded summary.json predates
FIGURES = ["latency_cdf.png", "latency_over_time.png", "latency_parts.png", "quality_vs_latency.png"]


@pytest.fixture
def smoke_run(tmp_path) -> Path:
    d = tmp_path / "smoke-run"
    shutil.copytree(SMOKE_RUN, d)
    return d


@pytest.fixture(scope="module")
def smoke_requests() -> pd.DataFrame:
    return pd.read_parquet(SMOKE_RUN / "requests.parquet")


@pytest.fixture(scope="module")
def smoke_traffic() -> pd.DataFrame:
    return parse_run_traffic(SMOKE_RUN / "pcap", json.loads((SMOKE_RUN / "network.json").read_text()))


def first_rows(requests: pd.DataFrame) -> pd.DataFrame:
    """One row per request, computed here rather than with analysis.summary.per_request."""
    return requests[requests["stage_index"] == 0].set_index("request_id")


def crossing_bytes(stages: pd.DataFrame) -> int:
    """The nodes' count of the bytes they sent from one host to another (a device_only result
    stays on its device)."""
    total = 0
    for _, group in stages.groupby("request_id"):
        rows = group.sort_values("stage_index").to_dict("records")
        for k, row in enumerate(rows):
            total += row["message_bytes"] if row["host"] != ("edge" if k == 0 else rows[k - 1]["host"]) else 0
        total += rows[-1]["result_message_bytes"] if rows[-1]["host"] != rows[0]["device"] else 0
    return total


def markdown_table(text: str, heading: str) -> dict[str, dict[str, str]]:
    """The first table under `## heading`, as {first cell: {column: cell}}."""
    lines = text.splitlines()
    start = lines.index(f"## {heading}")
    table = []
    for line in lines[start + 1:]:
        if line.startswith("|"):
            table.append([c.strip() for c in line.strip("|").split("|")])
        elif table:
            break
    header, body = table[0], table[2:]
    return {row[0]: dict(zip(header, row, strict=True)) for row in body}


def test_the_reports_bytes_are_the_part_of_the_wire_bytes_that_reports_take(smoke_requests, smoke_traffic):
    # the smoke run predates reports: relabel one packet group of a result as a report
    traffic = smoke_traffic.copy()
    first = first_rows(smoke_requests)
    request_id = first.index[first["outcome"] == "ok"][0]
    rows = traffic.index[(traffic["request_id"] == request_id) & (traffic["kind"] == "result")][:1]
    traffic.loc[rows, "kind"] = "report"
    summary = summarize(smoke_requests, traffic, SMOKE_RUN / "samples", quality=False)
    strategy = first.loc[request_id, "strategy"]
    entry = summary[strategy]
    relabelled = traffic.loc[rows, "wire_bytes"].sum()
    assert entry["report_bytes_per_image"] == pytest.approx(relabelled / entry["images"])
    assert 0 < entry["report_bytes_per_image"] < entry["wire_bytes_per_image"]
    assert all(e["report_bytes_per_image"] == 0 for name, e in summary.items() if name != strategy)


def test_summary_of_a_real_run_agrees_with_its_requests_and_captures(smoke_requests, smoke_traffic):
    summary = summarize(smoke_requests, smoke_traffic, SMOKE_RUN / "samples", quality=False)
    firsts = first_rows(smoke_requests)
    assert list(summary) == ["cloud_only", "edge_only", "device_only", "fixed_split"]
    attributed = smoke_traffic.dropna(subset=["request_id"])
    for strategy, group in firsts.groupby("strategy"):
        entry = summary[strategy]
        ok = group[group["outcome"] == "ok"]
        totals = ok["total_s"].to_numpy()
        images = int(ok["n_images"].sum())
        assert (entry["requests"], entry["done"], entry["failed"], entry["images"]) == (2, 2, 0, 8)
        assert entry["latency_p50_s"] == pytest.approx(np.median(totals))
        assert entry["latency_mean_s"] == pytest.approx(totals.mean())
        assert entry["latency_p95_s"] == pytest.approx(np.percentile(totals, 95))
        assert entry["plans"] == ok["plan"].value_counts().to_dict()
        stages = smoke_requests[smoke_requests["request_id"].isin(ok.index)]
        compute = stages.groupby("request_id")["compute_s"].sum()
        assert entry["compute_s_mean"] == pytest.approx(compute.mean())
        sent = stages["message_bytes"].sum() + stages["result_message_bytes"].sum()
        assert entry["payload_bytes_per_image"] == pytest.approx(sent / images)
        # every packet of the strategy's requests on every link, ACKs included, per image delivered
        mine = attributed[attributed["request_id"].isin(ok.index)]
        assert entry["wire_bytes"] == pytest.approx(mine["wire_bytes"].sum())
        assert entry["wire_bytes_per_image"] == pytest.approx(mine["wire_bytes"].sum() / images)
        assert entry["report_bytes_per_image"] == 0  # recorded before the nodes sent reports
        by_link = mine.groupby("link")["wire_bytes"].sum()
        assert entry["wire_bytes_by_link"] == pytest.approx(by_link.to_dict())
        assert entry["wire_bytes"] > crossing_bytes(stages)  # plus headers, ACKs, one copy per hop
        assert not {"fid", "n_quality", "run_sample_fid"} & set(entry)  # quality disabled
        assert (entry["overrun_steps"], entry["overrun_s"], entry["overrun_requests"]) == (0, 0.0, 0)
        # native compute everywhere, no network given: no energy figure is known, and none is made up
        assert all(entry[key] is None for key in ENERGY_KEYS)
    # the latency ranking the run shows: the device's own small model first, the cloud's large last
    p50 = {s: e["latency_p50_s"] for s, e in summary.items()}
    assert min(p50, key=p50.get) == "device_only" and max(p50, key=p50.get) == "cloud_only"
    # the runner's summary.json, from the same records and captures, agrees on every cost figure
    written = json.loads((SMOKE_RUN / "summary.json").read_text())["strategies"]
    for strategy, entry in summary.items():
        for key in set(COST_KEYS) - NEWER_THAN_SMOKE_RUN:
            assert entry[key] == pytest.approx(written[strategy][key]), (strategy, key)


def test_report_of_a_real_run_shows_its_figures(smoke_run, smoke_requests):
    path = write_report(smoke_run)
    assert path == smoke_run / "report.md" and not (SMOKE_RUN / "report.md").exists()
    text = path.read_text()
    assert text.startswith("# smoke: completed\n")
    assert "impairment backend userspace" in text
    assert sorted(p.name for p in (smoke_run / "plots").glob("*.png")) == FIGURES
    for name in FIGURES:
        png = smoke_run / "plots" / name
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        height, width, _ = matplotlib.image.imread(png).shape
        assert height >= 300 and width >= 600
        assert f"](plots/{name})" in text
    written = json.loads((smoke_run / "summary.json").read_text())["strategies"]
    table = markdown_table(text, "Per strategy")
    firsts = first_rows(smoke_requests)
    assert list(table) == list(written)
    for strategy, group in firsts.groupby("strategy"):
        row = table[strategy]
        totals = group["total_s"].to_numpy()
        assert row["done"] == str(len(group)) and row["failed"] == "0"
        assert row["p50 latency (s)"] == f"{np.median(totals):.3f}"
        assert row["p95 latency (s)"] == f"{np.percentile(totals, 95):.3f}"
        assert row["wire bytes / image"] == f"{written[strategy]['wire_bytes_per_image']:,.0f}"
        assert row["FID"] == f"{written[strategy]['fid']:.2f}" and row["n (quality, per plan)"] == "500"
        assert row["run-sample n"] == str(int(group["n_images"].sum()))
    plans = markdown_table(text, "Quality per plan")
    for strategy, group in firsts.groupby("strategy"):
        hostless = {re.sub(r"@[^,]+", "", p) for p in group["plan"]}
        assert {plans[strategy]["plan"]} == hostless
        assert plans[strategy]["requests"] == str(len(group))
    accuracy = markdown_table(text, "How far the figures hold")
    assert accuracy["latency_parts_within_2pct"]["value"] == f"{len(firsts)}/{len(firsts)}"


def test_where_the_time_goes_adds_up_to_the_measured_latency(smoke_requests):
    """The stacked bars of latency_parts.png: per strategy, the parts' means add up to the mean
    measured latency of its requests (within 2 %)."""
    parts = latency_parts_frame(smoke_requests)
    firsts = first_rows(smoke_requests)
    mean_total = firsts.groupby("strategy")["total_s"].mean()
    assert set(parts.index) == set(mean_total.index)
    for strategy, row in parts.iterrows():
        assert row.sum() == pytest.approx(mean_total[strategy], rel=0.02), strategy
        assert row["compute"] > 0
    # only a split plan moves state between hosts
    assert parts.loc["fixed_split", "state transfer"] > parts.loc["device_only", "state transfer"]


def test_report_of_a_real_run_summarized_without_quality(smoke_run, smoke_requests, smoke_traffic):
    summary = summarize(smoke_requests, smoke_traffic, smoke_run / "samples", quality=False)
    document = json.loads((smoke_run / "summary.json").read_text())
    (smoke_run / "summary.json").write_text(json.dumps({**document, "strategies": summary}, allow_nan=False))
    text = write_report(smoke_run).read_text()
    assert "## Quality per plan" not in text and "run-sample" in text  # the heading, no figure
    table = markdown_table(text, "Per strategy")
    firsts = first_rows(smoke_requests)
    for strategy, group in firsts.groupby("strategy"):
        row = table[strategy]
        assert row["FID"] == "-" and row["run-sample FID"] == "-" and row["n (quality, per plan)"] == "-"
        assert row["p50 latency (s)"] == f"{group['total_s'].median():.3f}"
        assert row["wire bytes / image"] == f"{summary[strategy]['wire_bytes_per_image']:,.0f}"
    assert sorted(p.name for p in (smoke_run / "plots").glob("*.png")) == FIGURES


@pytest.fixture(scope="module")
def smoke_quality(smoke_requests, tmp_path_factory) -> tuple[dict, Path]:
    cache = tmp_path_factory.mktemp("plan-quality")
    summary = summarize(smoke_requests, None, SMOKE_RUN / "samples", plan_images=8, cache_dir=cache,
                        progress=False)
    return summary, cache


def test_quality_of_a_real_run_from_a_small_plan_sample(smoke_quality, smoke_requests):
    """Per-plan quality on 8 images a plan, and the run's own delivered images (committed in
    samples/) judged as the runner judged them."""
    summary, cache = smoke_quality
    firsts = first_rows(smoke_requests)
    written = json.loads((SMOKE_RUN / "summary.json").read_text())["strategies"]
    for strategy, group in firsts.groupby("strategy"):
        entry = summary[strategy]
        hostless = {re.sub(r"@[^,]+", "", p) for p in group["plan"]}
        assert [(p["plan"], p["requests"], p["n_images"]) for p in entry["plan_quality"]] == [
            (hostless.pop(), 2, 8)]
        assert entry["n_quality"] == 8 and Path(entry["plan_quality"][0]["cache_file"]).parent == cache
        assert 0.0 <= entry["class_accuracy"] <= 1.0 and math.isfinite(entry["fid"])
        assert (entry["psnr_vs_large_db"] is None) == (entry["plan_quality"][0]["plan"] == "large:0-10")
        # the run-sample figures depend only on the delivered images: the runner's own
        assert entry["run_sample_images"] == int(group["n_images"].sum())
        assert entry["run_sample_class_accuracy"] == written[strategy]["run_sample_class_accuracy"]
        # FID of 8 images: a near-singular covariance, so allow for another CPU's rounding
        assert entry["run_sample_fid"] == pytest.approx(written[strategy]["run_sample_fid"], rel=0.01)
        assert entry["wire_bytes"] is None  # no traffic given


def test_energy_of_a_real_run_where_it_is_known(smoke_requests):
    """The smoke run computes natively and its network.json names no radio: a device that only sends
    and receives has 0 J of its own energy; one that computed natively has an unknown figure, never 0."""
    network = json.loads((SMOKE_RUN / "network.json").read_text())
    summary = summarize(smoke_requests, None, SMOKE_RUN / "samples", quality=False, network=network)
    for strategy in ("cloud_only", "edge_only"):
        assert summary[strategy]["device_energy_per_image_j"] == 0.0
        assert summary[strategy]["compute_energy_per_image_j"] is None
    assert summary["device_only"]["device_energy_per_image_j"] is None
    json.dumps(summary, allow_nan=False)
    assert "J/img (device)" in format_table(summary).splitlines()[0]


def test_an_overrun_is_flagged_in_the_summary_the_table_and_the_report(smoke_run, smoke_requests):
    requests = smoke_requests.copy()
    cloud = requests.index[requests["strategy"] == "cloud_only"]
    requests.loc[cloud, "overrun_steps"] = [7, 5]
    requests.loc[cloud, "overrun_s"] = [0.5, 0.34]
    summary = summarize(requests, None, smoke_run / "samples", quality=False)
    entry = summary["cloud_only"]
    assert (entry["overrun_steps"], entry["overrun_requests"]) == (12, 2)
    assert entry["overrun_s"] == pytest.approx(0.84)
    assert summary["edge_only"]["overrun_steps"] == 0
    lines = format_table(summary).splitlines()
    assert any(line.startswith("cloud_only! ") for line in lines)
    assert not any(line.startswith("edge_only!") for line in lines)
    assert "overran: cloud_only 12 steps in 2 requests, +0.84 s" in lines
    document = json.loads((smoke_run / "summary.json").read_text())
    (smoke_run / "summary.json").write_text(json.dumps({**document, "strategies": summary}, allow_nan=False))
    text = write_report(smoke_run).read_text()
    warning = next(line for line in text.splitlines() if line.startswith("**Warning: profiled compute"))
    assert "cloud_only 12 steps in 2 requests, +0.84 s" in warning
    assert text.index(warning) < text.index("## Per strategy")
    assert markdown_table(text, "Per strategy")["cloud_only"]["overrun steps"] == "12"
