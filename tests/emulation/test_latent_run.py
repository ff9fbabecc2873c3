"""A latent pipeline's plans through the emulated network (root; issue 19): the tiny scale model,
its text encoding and decoding placed four ways (on the device; on every denoising host; both of
these; by `elastic`), the embedded latent default placed two ways, and the SD 1.5 scale model once
(the device encodes, the last host decodes: its prompt, embeddings, latents + embeddings and pixels
cross the network at SD 1.5's sizes).  Every boundary's captured
message is the tensors the docs state plus its envelope, and the placements of one pipeline give
the same images (the same round: the same seed and prompts)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from analysis.boundaries import boundary_table
from nodes.diffusion.samples import load_samples
from tests.emulation.emulated_runs import REPO

pytestmark = [pytest.mark.root]
N = 2
STEPS = 4
LATENTS, EMBEDDINGS, PIXELS = N * 4 * 8 * 8 * 4, 2 * N * 16 * 32 * 4, N * 3 * 32 * 32 * 4  # fp32, guided
# the embedded default (latent-large, latent-small): latents 4x4x4, 12 tokens x 64, 3x16x16 images
DEFAULT = {"latents": N * 4 * 4 * 4 * 4, "embeddings": 2 * N * 12 * 64 * 4, "pixels": N * 3 * 16 * 16 * 4}
# the SD 1.5 scale model: latents 4x64x64, 77 tokens x 768, 3x512x512 images
SD15 = {"latents": N * 4 * 64 * 64 * 4, "embeddings": 2 * N * 77 * 768 * 4, "pixels": N * 3 * 512 * 512 * 4}
ENVELOPE = (300, 2_500)  # JSON envelope and state header of a stage or result message, bytes
SPLIT = '[{ model = "tiny-scale-large", tier = "cloud", share = 0.5 }, ' \
        '{ model = "tiny-scale-small", tier = "edge", share = 0.5 }]'
DEFAULT_SPLIT = SPLIT.replace("tiny-scale-", "latent-")
SD15_SPLIT = SPLIT.replace("tiny-scale-", "sd15-scale-")
SCENARIO = f"""
[topology]
kind = "two_tier"
[[topology.devices]]
name = "d1"
bw_mbit = 20
delay_ms = 5
[nodes.cloud]
models = ["tiny-scale-large", "latent-large", "sd15-scale-large"]
[nodes.edge]
models = ["tiny-scale-small", "latent-small", "sd15-scale-small"]
[nodes.device]
models = ["tiny-scale-large", "tiny-scale-small", "latent-large", "latent-small", "sd15-scale-large"]
[workload]
requests = 7
images_per_request = {N}
prompts = ["a red square", "a cat"]
guidance_scale = 5.0
request_timeout_s = 30
[strategies.placed]
kind = "fixed_split"
encode = "device"
decode = "device"
split = {SPLIT}
[strategies.each]
kind = "fixed_split"
encode = "each"
split = {SPLIT}
[strategies.each_device]
kind = "fixed_split"
encode = "each"
decode = "device"
split = {SPLIT}
[strategies.elastic]
kind = "elastic"
plans = ["tiny-scale-large:0-2,tiny-scale-small:2-{STEPS}"]
[strategies.default_placed]
kind = "fixed_split"
encode = "device"
decode = "device"
split = {DEFAULT_SPLIT}
[strategies.default_each]
kind = "fixed_split"
encode = "each"
split = {DEFAULT_SPLIT}
[strategies.sd15]
kind = "fixed_split"
encode = "device"
split = {SD15_SPLIT}
[generation]
scheduler = "ddim"
steps = {STEPS}
[capture]
enabled = true
[run]
timeout_s = 30
"""


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("latent-run")
    (root / "latent.toml").write_text(SCENARIO)
    out = root / "run"
    command = [sys.executable, "-m", "emulation.cli", "run", str(root / "latent.toml"), "--out", str(out),
               "--no-quality", "-q", "--json"]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout)["summary"]["status"] == "completed"
    return out


def test_every_boundary_carries_the_tensors_the_docs_state(run_dir):
    requests = pd.read_parquet(run_dir / "requests.parquet")
    assert (requests["outcome"] == "ok").all(), requests["reason"].dropna().tolist()
    table = boundary_table(requests, pd.read_parquet(run_dir / "traffic.parquet"))
    columns = table[["strategy", "boundary", "message_bytes"]]
    crossed = {(s, b): m for s, b, m in columns.itertuples(index=False)}
    tensors = {("placed", "embeddings"): EMBEDDINGS, ("placed", "latents+embeddings"): LATENTS + EMBEDDINGS,
               ("placed", "latents"): LATENTS, ("each", "latents"): LATENTS, ("each", "pixels"): PIXELS}
    tensors.update({("default_placed", "embeddings"): DEFAULT["embeddings"],
                    ("default_placed", "latents+embeddings"): DEFAULT["latents"] + DEFAULT["embeddings"],
                    ("default_placed", "latents"): DEFAULT["latents"],
                    ("default_each", "latents"): DEFAULT["latents"],
                    ("default_each", "pixels"): DEFAULT["pixels"],
                    ("sd15", "embeddings"): SD15["embeddings"],
                    ("sd15", "latents+embeddings"): SD15["latents"] + SD15["embeddings"],
                    ("sd15", "pixels"): SD15["pixels"]})
    for key, size in tensors.items():
        assert ENVELOPE[0] <= crossed[key] - size <= ENVELOPE[1], (key, crossed[key], size)
    # the device decodes its own: no pixels cross a link; the prompts go in the dispatch's envelope
    assert ("placed", "pixels") not in crossed and crossed[("placed", "prompt")] < ENVELOPE[1]
    summary = json.loads((run_dir / "summary.json").read_text())
    each = summary["strategies"]["each"]["boundary_bytes_per_image"]
    assert each["pixels"] == crossed[("each", "pixels")] / N


def test_the_placements_compute_the_same_images(run_dir):
    requests = pd.read_parquet(run_dir / "requests.parquet")
    first = requests[requests["stage_index"] == 0].set_index("strategy")
    assert first.loc["placed", "plan"].startswith("tiny-scale-large:0-0@d1,")
    assert first.loc["each", "plan"].endswith(";encode=each")
    images = {s: load_samples(run_dir / "samples" / f"{rid}.npz").images
              for s, rid in first["request_id"].items()}
    assert (images["placed"] - images["each"]).abs().max().item() == 0.0
    assert (images["elastic"] - images["each"]).abs().max().item() == 0.0
    # every denoising host encodes, the device decodes: the decoding stage gets no prompts
    assert first.loc["each_device", "plan"].endswith("-4@d1;encode=each")
    assert (images["each_device"] - images["each"]).abs().max().item() == 0.0
    assert (images["default_placed"] - images["default_each"]).abs().max().item() == 0.0
