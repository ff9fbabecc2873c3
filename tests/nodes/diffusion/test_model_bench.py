from nodes.diffusion.model_bench import bench_models


def test_bench_reports_latency_and_memory_figures():
    (row,) = bench_models(repeats=2, names=("small",))
    assert row["model"] == "small" and row["parameters"] > 0
    assert all(row[f"step_ms_b{b}"] > 0 for b in (1, 16, 64))
    assert row["rss_mb"] > row["baseline_rss_mb"] > 50
