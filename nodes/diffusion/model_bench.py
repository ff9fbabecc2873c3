"""`edgestage bench models`: per-step latency of each denoiser and the memory of holding one.

Latency: one denoising step (a UNet forward pass) at batch 1, 16 and 64, median of repeats after
warm-up, in the calling process with torch's default thread count. Memory: resident set size of a
fresh process that imports the stack, loads one model and runs one step (and of one that only
imports, for the baseline).
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time

import torch
from tqdm import tqdm

from nodes.diffusion.architectures import DENOISER_NAMES, count_parameters
from nodes.diffusion.model_zoo import SampleShape, load_denoiser

BATCHES = (1, 16, 64)
WARMUP = 3

_RSS_PROBE = """
import json, sys, psutil, torch
from nodes.diffusion.model_zoo import SampleShape
from nodes.diffusion.model_zoo import load_denoiser
name = sys.argv[1]
if name != "-":
    model = load_denoiser(name)
    with torch.no_grad():
        model(torch.zeros(SampleShape.of(model.config).batch(1)), torch.tensor([500]),
              class_labels=torch.tensor([0]))
print(json.dumps({"rss_bytes": psutil.Process().memory_info().rss}))
"""


@torch.no_grad()
def step_latency_s(name: str, batch: int, repeats: int) -> float:
    model = load_denoiser(name)
    shape = SampleShape.of(model.config)
    x = torch.randn(shape.batch(batch))
    t = torch.full((batch,), 500)
    labels = torch.arange(batch) % shape.classes
    times = []
    for i in range(WARMUP + repeats):
        started = time.perf_counter()
        model(x, t, class_labels=labels)
        if i >= WARMUP:
            times.append(time.perf_counter() - started)
    return statistics.median(times)


def resident_bytes(name: str) -> int:
    done = subprocess.run(
        [sys.executable, "-c", _RSS_PROBE, name], capture_output=True, text=True, check=True
    )
    return int(json.loads(done.stdout.strip().splitlines()[-1])["rss_bytes"])


def bench_models(repeats: int = 15, names: tuple[str, ...] = DENOISER_NAMES) -> list[dict]:
    baseline = resident_bytes("-")
    rows = []
    for name in tqdm(names, desc="bench models", unit="model"):
        row: dict = {"model": name, "parameters": count_parameters(load_denoiser(name))}
        for batch in BATCHES:
            row[f"step_ms_b{batch}"] = round(step_latency_s(name, batch, repeats) * 1000, 3)
        rss = resident_bytes(name)
        row["rss_mb"] = round(rss / 2**20, 1)
        row["rss_over_baseline_mb"] = round((rss - baseline) / 2**20, 1)
        rows.append(row)
    if rows and rows[0]["model"] == "small":
        for row in rows:
            for batch in BATCHES:
                row[f"x_small_b{batch}"] = round(row[f"step_ms_b{batch}"] / rows[0][f"step_ms_b{batch}"], 2)
    for row in rows:
        row["baseline_rss_mb"] = round(baseline / 2**20, 1)
        row["torch_threads"] = torch.get_num_threads()
        row["repeats"] = repeats
    return rows
