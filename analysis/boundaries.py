"""What crosses each stage boundary of a request, by kind, from the packet captures (traffic.parquet)
and the plans (requests.parquet): one row per message of a plan's path.

A latent pipeline's plan (docs/latent-pipelines.md) exchanges, per boundary:

    prompt               the dispatch to the first host: the prompts' text (stage 0's message)
    embeddings           from a host that only encoded (a zero-step first stage) to the first denoiser
    latents+embeddings   a denoising hand-off that carries the embeddings on (latents, the sampler's
                         history, embeddings)
    latents              a denoising hand-off to a host that encodes the prompts itself
                         (`encode=each`), or the last denoiser's latents to a decoding stage
    pixels               the result: the decoded images to the device

A pixel model's plan has `dispatch`, `state` and `result`.  `message_bytes` is the message's length
(its envelope and tensor frames, as ZeroMQ carries them), counted once; `wire_bytes` what its packets
and their ACKs put on every link it crossed; `links` how many links that is (0: it stayed on one
host, as a device's decoded images to itself do, and was never captured).  A re-planned request
is left out: its captures hold the messages of the plan it was re-planned away from too, which
the records do not describe.  A cascade's escalation travels as a request of its own
(`<request_id>.esc`): its messages are rows of that id, with its own plan and images.
"""

from __future__ import annotations

import pandas as pd

from nodes.diffusion.model_zoo import is_pipeline_folder
from nodes.planning.plan import Plan, parse_plan
from nodes.runtime.records import ESCALATION_SUFFIX

KINDS = ("prompt", "embeddings", "latents+embeddings", "latents", "pixels", "dispatch", "state", "result")
COLUMNS = ["request_id", "strategy", "plan", "message", "stage", "boundary", "n_images", "message_bytes",
           "wire_bytes", "links"]


def boundary_kind(plan: Plan, message: str, stage: int | None) -> str | None:
    """What a plan's message carries (the module docstring); None for a message that is no stage
    boundary (a request, an acceptance, a report, an error)."""
    latent = is_pipeline_folder(plan.stages[0].model)
    if message == "result":
        return "pixels" if latent else "result"
    if message != "stage" or stage is None:
        return None
    if stage == 0:
        return "prompt" if latent else "dispatch"
    if not latent:
        return "state"
    if plan.stages[stage - 1].steps == 0:
        return "embeddings"
    if plan.stages[stage].steps == 0 or plan.encodes_at(stage):
        return "latents"
    return "latents+embeddings"


def boundary_table(requests: pd.DataFrame, traffic: pd.DataFrame | None) -> pd.DataFrame:
    """One row per boundary message of each request (COLUMNS); empty without captures."""
    if traffic is None or traffic.empty or requests.empty:
        return pd.DataFrame(columns=COLUMNS)
    first = _paths(requests)
    data = traffic.dropna(subset=["request_id"])
    data = data[data["kind"].isin(["stage", "result"]) & data["request_id"].isin(first.index)]
    if data.empty:
        return pd.DataFrame(columns=COLUMNS)
    stage = data["stage"].where(data["kind"] == "stage")
    keys = [data["request_id"], data["kind"], stage.fillna(-1).astype(int)]
    grouped = data.groupby(keys, sort=False)
    sent = data[data["part"] == "data"].groupby(keys, sort=False)
    rows = pd.DataFrame({
        "wire_bytes": grouped["wire_bytes"].sum(),
        "message_bytes": sent["message_bytes"].max(),  # the message's length, on every link it crossed
        "links": sent["link"].nunique(),
    }).reset_index()
    rows.columns = ["request_id", "message", "stage", "wire_bytes", "message_bytes", "links"]
    plans = {rid: parse_plan(text) for rid, text in first["plan"].items() if isinstance(text, str)}
    rows = rows[rows["request_id"].isin(plans)]
    rows["boundary"] = [boundary_kind(plans[r], m, None if s < 0 else int(s))
                        for r, m, s in zip(rows["request_id"], rows["message"], rows["stage"], strict=True)]
    rows["stage"] = rows["stage"].where(rows["stage"] >= 0)
    rows["strategy"] = rows["request_id"].map(first["strategy"])
    rows["plan"] = rows["request_id"].map(first["plan"])
    rows["n_images"] = rows["request_id"].map(first["n_images"])
    return rows.dropna(subset=["boundary"])[COLUMNS].reset_index(drop=True)


def _paths(requests: pd.DataFrame) -> pd.DataFrame:
    """Per request id on the wire, its plan, strategy and images: each request's first row, and a
    cascade's escalation (`<id>.esc`) its last row with the images it escalated; re-planned ones
    left out."""
    ordered = requests.sort_values("stage_index").groupby("request_id", sort=False)
    first, last = ordered.first(), ordered.last()
    if "escalated_images" in last:
        escalated = last[last["escalated_images"].fillna(0) > 0].copy()
        escalated["n_images"] = escalated["escalated_images"].astype(int)
        escalated.index = escalated.index + ESCALATION_SUFFIX
        first = pd.concat([first, escalated])
    if "plan_note" in first:  # a re-planned request's captures hold messages of two plans: left out
        first = first[~first["plan_note"].fillna("").astype(str).str.contains("re-planned")]
    return first


def bytes_by_boundary(table: pd.DataFrame) -> dict[str, dict[str, float]]:
    """Per strategy, the mean message bytes per image of each kind of boundary its requests
    crossed (a request with two hand-offs of one kind counts both)."""
    if table.empty:
        return {}
    per_request = table.groupby(["strategy", "request_id", "boundary"], sort=False).agg(
        message_bytes=("message_bytes", "sum"), n_images=("n_images", "first")).reset_index()
    per_request["per_image"] = per_request["message_bytes"] / per_request["n_images"]
    means = per_request.groupby(["strategy", "boundary"], sort=False)["per_image"].mean()
    return {str(s): {str(k): float(v) for k, v in group.droplevel(0).items()}
            for s, group in means.groupby(level=0, sort=False)}
