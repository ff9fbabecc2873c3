"""A latent pipeline's plan across real node processes on loopback (issue 19, step 2): the tiny scale
model's `large` and `small` pipelines (tests/nodes/conftest.py) split over a cloud, an edge and the
device, DDIM and DPM-Solver++, guidance on.  The first stage's host encodes the prompts, every
boundary carries the latents, the sampler's state and the embeddings, the last stage's host decodes;
the device's images must equal the same stages run locally in one process (latent_pipeline's
functions, no bytes crossed), and a plan split with the same pipeline on both sides the unsplit run.
A pixel request in the same cluster still runs as before; a request that does not fit its plan (no
prompts for a latent plan, prompts for a pixel one, a plan mixing both kinds) fails with one line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from nodes.diffusion.latent_folders import check_compatible
from nodes.diffusion.latent_pipeline import (
    LATENTS,
    decode,
    denoise,
    encode_prompt,
    initial_state,
    load_components,
)
from nodes.diffusion.samples import load_samples
from nodes.planning.plan import parse_plan
from nodes.runtime.local_cluster import LocalCluster, Probe, loopback_configs
from nodes.runtime.records import read_records

STEPS = 8
N = 2
GUIDANCE = 5.0
PROMPTS = ["a photo of a cat", "a red square"]
NEGATIVE = ["blurry", ""]
TOLERANCE = 1e-4  # fp32, the bound; measured 0.0 (the same operations in the same order)
CASCADE_PROMPTS = ["a digit 3", "a bold left-slanted digit 7"]
CASCADE_NEGATIVE = ["", "blurry"]
CASCADE_THRESHOLD = 0.999  # the tiny scale model's images are noise: the gate doubts most of them


def _split(large: str, small: str) -> dict:
    """The strategies: two pipelines on two hosts, one pipeline on three (the device's last), a
    pixel model, and a plan that mixes a pixel and a latent model."""
    return {
        "split2": {"kind": "fixed_split", "split": [{"model": large, "tier": "cloud", "share": 0.5},
                                                    {"model": small, "tier": "edge", "share": 0.5}]},
        "split3": {"kind": "fixed_split", "split": [{"model": large, "tier": "cloud", "share": 0.25},
                                                    {"model": large, "tier": "edge", "share": 0.5},
                                                    {"model": large, "tier": "device", "share": 0.25}]},
        "pixel": {"kind": "edge_only", "model": "small"},
        "mixed": {"kind": "fixed_split", "split": [{"model": "small", "tier": "cloud", "share": 0.5},
                                                   {"model": small, "tier": "edge", "share": 0.5}]},
        "cloud_last": {"kind": "fixed_split", "split": [{"model": large, "tier": "edge", "share": 0.5},
                                                        {"model": large, "tier": "cloud", "share": 0.5}]},
        # split2 with the prompts encoded and the latents decoded on the device, then on every host
        "placed": {"kind": "fixed_split", "encode": "device", "decode": "device",
                   "split": [{"model": large, "tier": "cloud", "share": 0.5},
                             {"model": small, "tier": "edge", "share": 0.5}]},
        "each": {"kind": "fixed_split", "encode": "each",
                 "split": [{"model": large, "tier": "cloud", "share": 0.5},
                           {"model": small, "tier": "edge", "share": 0.5}]},
        # the cloud loads no VAE here: the escalation goes to the edge
        "cascade": {"kind": "cascade", "model": small, "threshold": CASCADE_THRESHOLD,
                    "escalate_model": large, "escalate_tier": "edge"},
    }


def _workload() -> list[dict]:
    latent = {"n": N, "prompts": PROMPTS, "guidance_scale": GUIDANCE}
    return [
        {"request_id": "split2", "at_s": 0.0, "seed": 5, "strategy": "split2", **latent},
        {"request_id": "split2-neg", "at_s": 0.1, "seed": 6, "strategy": "split2", **latent,
         "negative_prompts": NEGATIVE},
        {"request_id": "split3", "at_s": 0.2, "seed": 7, "strategy": "split3", **latent},
        {"request_id": "pixel", "at_s": 0.3, "seed": 8, "strategy": "pixel", "n": N},
        {"request_id": "no-prompts", "at_s": 0.4, "seed": 9, "strategy": "split2", "n": N},
        {"request_id": "prompts-pixel", "at_s": 0.5, "seed": 9, "strategy": "pixel", **latent},
        {"request_id": "mixed", "at_s": 0.6, "seed": 9, "strategy": "mixed", **latent},
        {"request_id": "no-vae", "at_s": 0.7, "seed": 9, "strategy": "cloud_last", **latent},
        {"request_id": "placed", "at_s": 0.8, "seed": 5, "strategy": "placed", **latent},
        {"request_id": "each", "at_s": 0.9, "seed": 5, "strategy": "each", **latent},
        {"request_id": "casc", "at_s": 1.0, "seed": 11, "strategy": "cascade", **latent,
         "prompts": CASCADE_PROMPTS, "negative_prompts": CASCADE_NEGATIVE},
        {"request_id": "casc-no-digit", "at_s": 1.1, "seed": 12, "strategy": "cascade", **latent},
    ]


# DPM-Solver++ (its hand-off carries the sampler's history); DDIM across nodes is
# tests/emulation/test_latent_run.py's, over the emulated network
@pytest.fixture(scope="module", params=["dpm"])
def cluster(request, tiny_pipelines, tmp_path_factory):
    scheduler = request.param
    run_dir = tmp_path_factory.mktemp(f"latent-{scheduler}")
    large, small = str(tiny_pipelines["large"]), str(tiny_pipelines["small"])
    hosts = {
        "d1": {"role": "device", "models": [large, small], "workload": _workload()},
        "edge": {"role": "edge", "models": [small, large, "small"]},
        "cloud": {"role": "cloud", "models": [large, "small"],
                  "latent_components": ["tokenizer", "text_encoder"]},  # it encodes, never decodes
        "probe": {"role": "device"},
    }
    configs = loopback_configs(run_dir, hosts, steps=STEPS, scheduler=scheduler, request_timeout_s=60,
                               strategies=_split(large, small))
    configs.pop("probe")  # played by the test itself
    with LocalCluster(configs, shared_imports=True) as local:
        local.wait_workload(timeout=120)
        local.scheduler = scheduler
        local.run_dir = run_dir
        local.large = large
        local.probe = (configs["d1"].peers["probe"].endpoint, configs["edge"].bind)
        yield local


@pytest.fixture(scope="module")
def records(cluster) -> dict[str, list]:
    rows = read_records(cluster.run_dir / "records" / "d1.jsonl")
    out: dict[str, list] = {}
    for row in rows:
        out.setdefault(row.request_id, []).append(row)
    return out


def _local(folders: dict[str, Path], plan: str, scheduler: str, seed: int,
           negative: list[str] | None, prompts: list[str] = PROMPTS) -> torch.Tensor:
    """The plan's stages one after the other in this process, no bytes crossing: encode with the
    first stage's pipeline, denoise each stage with its own UNet, decode with the last's VAE."""
    stages = parse_plan(plan).stages
    first, last = folders[stages[0].model], folders[stages[-1].model]
    space = check_compatible([folders[s.model] for s in stages])
    embeddings = encode_prompt(load_components(first, ["tokenizer", "text_encoder"]), prompts, negative,
                               GUIDANCE)
    state = initial_state(space, len(prompts), seed, scheduler, STEPS)
    for stage in stages:
        parts = load_components(folders[stage.model], ["unet", "scheduler"])
        state = denoise(parts.unet, parts.scheduler, state, embeddings, GUIDANCE, stage.start, stage.end)
    return decode(load_components(last, ["vae"]).vae, state.tensors[LATENTS])


def test_latent_plans_across_nodes_equal_the_local_run(cluster, records, tiny_pipelines):
    folders = {"L": tiny_pipelines["large"], "S": tiny_pipelines["small"]}
    names = {str(path): key for key, path in folders.items()}
    differences = {}
    for request_id, negative, expected_plan in [
        ("split2", None, "L:0-4@cloud,S:4-8@edge"),
        ("split2-neg", NEGATIVE, "L:0-4@cloud,S:4-8@edge"),
        ("split3", None, "L:0-2@cloud,L:2-6@edge,L:6-8@d1"),
    ]:
        rows = records[request_id]
        assert all(r.outcome == "ok" for r in rows), rows[0].reason
        plan = parse_plan(rows[0].plan)
        short = ",".join(f"{names[s.model]}:{s.start}-{s.end}@{s.host}" for s in plan.stages)
        assert short == expected_plan
        samples = load_samples(cluster.run_dir / "samples" / f"{request_id}.npz")
        assert samples.labels is None and samples.prompts == tuple(PROMPTS)
        assert samples.negative_prompts == (None if negative is None else tuple(NEGATIVE))
        assert samples.guidance_scale == GUIDANCE and samples.scheduler == cluster.scheduler
        assert samples.images.shape == (N, 3, 32, 32)
        local = _local({str(p): p for p in folders.values()}, rows[0].plan, cluster.scheduler,
                       samples.seed, negative)
        differences[request_id] = (samples.images - local).abs().max().item()
        assert differences[request_id] <= TOLERANCE
    # the same pipeline on every host: the split run equals the unsplit one
    unsplit = _local({str(p): p for p in folders.values()}, f"{folders['L']}:0-{STEPS}",
                     cluster.scheduler, 7, None)
    split3 = load_samples(cluster.run_dir / "samples" / "split3.npz").images
    differences["split3 vs unsplit"] = (split3 - unsplit).abs().max().item()
    assert differences["split3 vs unsplit"] <= TOLERANCE
    print(f"{cluster.scheduler}: max abs differences {differences}")


def test_the_hand_off_carries_latents_history_and_embeddings(cluster, records, tiny_pipelines):
    """Bytes per boundary: the tiny pipeline's latents are 4 x 8 x 8, its embeddings 16 x 32, both
    fp32; DPM-Solver++ carries two latents-sized history tensors, DDIM none; the result is the
    images (3 x 32 x 32) alone."""
    latents, embeddings = N * 4 * 8 * 8 * 4, 2 * N * 16 * 32 * 4
    history = 2 if cluster.scheduler == "dpm" else 0
    for request_id in ("split2", "split3"):
        rows = records[request_id]
        assert rows[0].payload_bytes == 0  # the first stage gets the prompts' text, no tensor
        for row in rows[1:]:
            assert row.payload_bytes == latents * (1 + history) + embeddings < row.message_bytes
        assert rows[-1].result_payload_bytes == N * 3 * 32 * 32 * 4


def test_the_first_host_encodes_and_the_last_decodes(cluster, records):
    """Each hop of the result says what its host spent encoding and decoding (None: it did not), and
    so does each record.  The probe (a device played by the test) asks for split2 with its first
    request's seed."""
    for request_id, hosts in (("split2", ["cloud", "edge"]), ("split3", ["cloud", "edge", "d1"])):
        rows = records[request_id]
        assert [r.host for r in rows] == hosts
        assert [(r.wall_encode_s is not None, r.wall_decode_s is not None) for r in rows] == [
            (i == 0, i == len(rows) - 1) for i in range(len(rows))]
        assert all(0 < s < r.wall_compute_s for r in rows for s in (r.wall_encode_s, r.wall_decode_s) if s)
    assert records["pixel"][0].wall_encode_s is None and records["pixel"][0].wall_decode_s is None
    status = json.loads((cluster.run_dir / "nodes" / "d1.json").read_text())
    assert status["workload"]["ok"] == 7 and status["workload"]["failed"] == 5
    probe = Probe("probe", *cluster.probe)
    try:
        reply, _ = probe.request("probe-1", "split2", [0, 1], seed=5, prompts=PROMPTS,
                                 guidance_scale=GUIDANCE)
        assert reply.envelope.kind == "result", getattr(reply.envelope, "reason", "")
        hops = reply.envelope.hops
        assert [(h.host, h.encode_s is not None, h.decode_s is not None) for h in hops] == [
            ("cloud", True, False), ("edge", False, True)]
        spent = [(s, h.compute_end - h.compute_start) for h in hops for s in (h.encode_s, h.decode_s) if s]
        assert all(0 < s < compute for s, compute in spent)
        assert set(reply.state.tensors) == {"sample"} and reply.state.meta["guidance_scale"] == GUIDANCE
        expected = load_samples(cluster.run_dir / "samples" / "split2.npz").images  # same seed and prompts
        assert (reply.state.tensors["sample"] - expected).abs().max().item() == 0.0
    finally:
        probe.close()


def test_the_pixel_path_still_works_beside_it(records):
    (row,) = records["pixel"]
    assert row.outcome == "ok" and row.plan == "small:0-8@edge"


def test_requests_that_do_not_fit_their_plan_fail_with_one_line(records):
    reasons = {rid: records[rid][0].reason for rid in ("no-prompts", "prompts-pixel", "mixed", "no-vae")}
    assert all(records[rid][0].outcome == "failed" for rid in reasons)
    assert "runs latent pipelines, and the request has no prompts" in reasons["no-prompts"]
    assert "runs pixel models, and the request has prompts" in reasons["prompts-pixel"]
    assert "a plan cannot mix pixel and latent models" in reasons["mixed"]
    # a host that loaded no VAE (cloud: latent_components = ["tokenizer", "text_encoder"]) refuses a
    # stage that decodes
    assert "stage 1 rejected: cloud has no VAE of" in reasons["no-vae"]
    assert all("\n" not in reason for reason in reasons.values())


def test_incompatible_pipelines_are_refused_in_one_line(tiny_pipelines, tmp_path):
    from nodes.diffusion.model_zoo import plan_kind

    other = tmp_path / "other"
    shutil.copytree(tiny_pipelines["small"], other)
    config = other / "scheduler" / "scheduler_config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "beta_end": 0.02}))
    large = str(tiny_pipelines["large"])
    assert plan_kind([large, str(tiny_pipelines["small"])]) == "latent"
    assert plan_kind(["small", "large"]) == "pixel"
    with pytest.raises(ValueError, match="have different noise schedules: scheduler beta_end"):
        plan_kind([large, str(other)])
    with pytest.raises(ValueError, match="cannot mix pixel and latent models"):
        plan_kind(["small", large])


def test_placed_encoding_and_decoding_compute_the_same_images(cluster, records, tiny_pipelines):
    """split2's stages with the prompts encoded on the device (a zero-step stage first) and decoded
    there (one last), then with every denoising host encoding the prompts itself: the same seed and
    prompts as split2, so the same images, bit for bit; and each boundary carries only what the next
    stage needs (issue 19: what crosses a link is a design choice)."""
    latents, embeddings = N * 4 * 8 * 8 * 4, 2 * N * 16 * 32 * 4
    history = 2 if cluster.scheduler == "dpm" else 0
    expected = load_samples(cluster.run_dir / "samples" / "split2.npz").images
    placed, each = records["placed"], records["each"]
    assert all(r.outcome == "ok" for r in placed + each), (placed[0].reason, each[0].reason)
    for request_id in ("placed", "each"):
        images = load_samples(cluster.run_dir / "samples" / f"{request_id}.npz").images
        assert (images - expected).abs().max().item() == 0.0
    assert [r.host for r in placed] == ["d1", "cloud", "edge", "d1"]
    assert parse_plan(placed[0].plan).stages[0].steps == 0 and placed[0].plan.endswith(f"-{STEPS}@d1")
    assert [(r.wall_encode_s is not None, r.wall_decode_s is not None) for r in placed] == [
        (True, False), (False, False), (False, False), (False, True)]
    assert [r.payload_bytes for r in placed] == [0, embeddings, latents * (1 + history) + embeddings, latents]
    assert placed[-1].result_payload_bytes == N * 3 * 32 * 32 * 4
    assert each[0].plan.endswith(";encode=each") and [r.host for r in each] == ["cloud", "edge"]
    assert [(r.wall_encode_s is not None, r.wall_decode_s is not None) for r in each] == [
        (True, False), (True, True)]
    assert [r.payload_bytes for r in each] == [0, latents * (1 + history)]


def test_a_latent_cascade_gates_on_the_prompted_digit_and_escalates_those_prompts(cluster, records):
    """The device's gate scores each image against the digit its prompt names, as the gate does
    locally; the doubted images' prompts (and negative prompts) go up as the escalation, whose images
    are the large pipeline's local run of them from the escalation's seed.  A prompt that names no
    digit fails the request with one line."""
    from nodes.diffusion.gate import gate_confidence
    from nodes.runtime.device import escalation_seed

    rows = records["casc"]
    assert all(r.outcome == "ok" for r in rows), rows[0].reason
    small = parse_plan(rows[0].plan).stages[0].model
    assert rows[0].cascade == f"{small}>{cluster.large}@{CASCADE_THRESHOLD:g}"
    first = load_samples(cluster.run_dir / "samples" / "casc.npz")
    confidence = gate_confidence(first.images, torch.tensor([3, 7]))
    doubted = [i for i, c in enumerate(confidence) if c < CASCADE_THRESHOLD]
    assert doubted and rows[0].escalated_images == len(doubted)
    assert [(r.host, r.plan) for r in rows] == [("d1", f"{small}:0-{STEPS}@d1"),
                                                ("edge", f"{cluster.large}:0-{STEPS}@edge")]
    again = load_samples(cluster.run_dir / "samples" / "casc.esc.npz")
    prompts = [CASCADE_PROMPTS[i] for i in doubted]
    negative = [CASCADE_NEGATIVE[i] for i in doubted]
    assert list(again.prompts) == prompts and list(again.negative_prompts) == negative
    assert again.seed == escalation_seed(11)
    folders = {cluster.large: Path(cluster.large)}
    local = _local(folders, f"{cluster.large}:0-{STEPS}", cluster.scheduler, again.seed, negative, prompts)
    assert (again.images - local).abs().max().item() <= TOLERANCE
    (failed,) = records["casc-no-digit"]
    assert failed.outcome == "failed" and "names no digit" in failed.reason and "\n" not in failed.reason
