"""The cascade's figures: the shipped cascade table (nodes/pretrained/cascade), what the summary
reports for a cascade strategy from it, and the report's section and figure."""

from pathlib import Path

import pandas as pd
import pytest

from analysis.report import cascade_lines, cascade_tables, plan_quality_frame, plot_cascade
from analysis.run_tables import records_table
from analysis.summary import summarize
from nodes.clock import Clock
from nodes.planning.cascade_table import THRESHOLDS, cascade_figures, parse_cascade, read_cascade_table
from nodes.planning.request import Request
from nodes.runtime.protocol import Hop, RequestTimes
from nodes.runtime.records import SentRequest, cascade_records, completed_records

CLOCK = Clock(wall_origin=0.0)


def test_the_shipped_table_covers_every_threshold_and_escalating_more_never_hurts_accuracy():
    rows = pd.DataFrame(read_cascade_table("dpm", 30))
    for (device, escalate), group in rows.groupby(["device_model", "escalate_model"]):
        group = group.sort_values("threshold")
        assert device == "small" and tuple(group["threshold"]) == THRESHOLDS and (group["n"] >= 500).all()
        # a higher threshold escalates a superset of the images (the same confidences, one cut)
        assert group["escalation_rate"].is_monotonic_increasing
        assert group["class_accuracy"].is_monotonic_increasing, escalate
        # the second judge's figures in every row (an SVM may count an escalated image wrong that the
        # device's was right by, so its accuracy need not rise with every threshold)
        assert group[["svm_class_accuracy", "judge_agreement"]].stack().between(0, 1).all()
        assert (group["pca_fd"] > 0).all()


def test_the_latent_cascade_table_lifts_the_small_pipeline_toward_the_large_one():
    """Issue 19: latent-small on the device, latent-large behind its gate (analysis/
    latent_cascade_quality.py), 540 images per row; read by the cascade's device model's kind."""
    from nodes.planning.cascade_table import escalation_models

    rows = pd.DataFrame(read_cascade_table("ddim", 20, latent=True)).sort_values("threshold")
    rows = rows[rows["guidance_scale"] == 4.0]
    assert tuple(rows["threshold"]) == THRESHOLDS and (rows["n"] == 540).all()
    assert set(rows["device_model"]) == {"latent-small"} and set(rows["escalate_model"]) == {"latent-large"}
    assert rows["escalation_rate"].is_monotonic_increasing
    assert rows[["weight_agreement", "slant_agreement", "both_agreement"]].stack().between(0, 1).all()
    row = cascade_figures("latent-small", "latent-large", 0.95, "ddim", 20, guidance_scale=4.0)
    # latent-small alone: 0.894 (the latent quality table, n = 180); the cascade escalates a tenth
    assert row["escalation_rate"] < 0.2 and row["class_accuracy"] > 0.95
    assert escalation_models("latent-small", 0.95, "ddim", 20) == ["latent-large"]
    with pytest.raises(ValueError, match="latent-ddim-7.csv is missing .* analysis.latent_cascade_quality"):
        read_cascade_table("ddim", 7, latent=True)


def test_a_cascade_s_row_and_the_error_naming_what_the_table_has():
    assert parse_cascade("small>large@0.95") == ("small", "large", 0.95)
    assert cascade_figures("small", "large", 0.95, "dpm", 30)["escalation_rate"] == pytest.approx(0.302)
    with pytest.raises(ValueError, match=r"no row for small -> large at threshold 0.96 \(it has: 0.5, 0.7"):
        cascade_figures("small", "large", 0.96, "dpm", 30)
    with pytest.raises(ValueError, match="not a cascade"):
        parse_cascade("small@0.9")


def _request(request_id: str, escalated: list[int], t0: float) -> list:
    times = RequestTimes(request_sent=t0, coordinator_received=t0 + 0.01, dispatched=t0 + 0.02)
    hop = Hop(stage=0, host="d1", model="small", received=t0 + 0.03, compute_start=t0 + 0.04,
              compute_end=t0 + 0.3, sent=t0 + 0.31, payload_bytes=0, message_bytes=300, real_compute_s=0.2)
    request = Request(request_id=request_id, device="d1", strategy="cascade", n=4, seed=9)
    first = completed_records(SentRequest(request, "dpm", 30, 100.0, t0), "small:0-30@d1", times, [hop],
                              t0 + 0.35, 1000, 1200, CLOCK)
    second = []
    if escalated:
        times = RequestTimes(request_sent=t0 + 0.4, coordinator_received=t0 + 0.41, dispatched=t0 + 0.42)
        hop = Hop(stage=0, host="cloud", model="large", received=t0 + 0.43, compute_start=t0 + 0.44,
                  compute_end=t0 + 0.5, sent=t0 + 0.51, payload_bytes=0, message_bytes=300,
                  real_compute_s=0.05)
        escalation = request.model_copy(update={"request_id": request_id + ".esc", "n": len(escalated),
                                                "labels": tuple(escalated)})
        sent = SentRequest(escalation, "dpm", 30, 100.0, 100.0)
        second = completed_records(sent, "large:0-30@cloud", times, [hop], t0 + 0.6, 500, 700, CLOCK)
    return cascade_records(first, second, "small>large@0.95", escalated, CLOCK)


def test_the_summary_reports_the_cascade_s_escalations_and_its_table_s_quality(tmp_path: Path):
    rows = _request("r1", [1, 3], 100.0) + _request("r2", [], 101.0)
    requests = records_table(rows)
    entry = summarize(requests, None, tmp_path, quality=True)["cascade"]
    table = cascade_figures("small", "large", 0.95, "dpm", 30)
    assert (entry["escalated_images"], entry["images"], entry["escalated_requests"]) == (2, 8, 1)
    assert entry["escalation_rate"] == 0.25
    assert entry["class_accuracy"] == table["class_accuracy"] and entry["fid"] == table["fid"]
    for figure in ("svm_class_accuracy", "pca_fd", "judge_agreement"):  # the second judge beside the first
        assert entry[figure] == pytest.approx(table[figure]), figure
    assert entry["n_quality"] == 500 and entry["plan_quality"][0]["plan"] == "cascade small>large@0.95"
    assert entry["latency_mean_s"] == pytest.approx((0.6 + 0.35) / 2)
    cascades = cascade_tables({"cascade": entry})
    lines = "\n".join(cascade_lines({"cascade": entry}))
    assert "escalated 2 of 8 images (25.0%) in 1 requests" in lines, lines
    assert "|       0.95  |             0.302 |" in lines, lines
    assert "svm_class_accuracy" in lines and "judge_agreement" in lines and "both judges" in lines
    assert plot_cascade(cascades, tmp_path / "cascade.png").stat().st_size > 10_000
    shown = plan_quality_frame({"cascade": entry})  # the report's quality table takes it like a plan's
    assert shown.loc["cascade", "PSNR vs large (dB)"] == f"{table['psnr_vs_large_db']:.2f}"
