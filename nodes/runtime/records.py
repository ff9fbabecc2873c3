"""Per-request, per-stage records: what the requesting device writes when a request ends.

One JSON line per request per stage in `<run_dir>/records/<device>.jsonl`, flushed per line, so
that an interrupted run keeps what it did; `pandas.read_json(path, lines=True)` (or
`read_records`) gives the tidy table `requests.parquet` is made of.

A record is on the wall clock (nodes/clock.py): its timestamps and durations are named `wall_...`
and typed `WallTime` / `WallSeconds`, and `requests.parquet` gives each its emulated twin without
the prefix; `deadline_s` and the predictions are emulated already.  Below, the `wall_` prefixes
are left out.  How the latency parts add up (they telescope over the request's timeline, so the
sum is exact up to float rounding):

    total_s = t_result_received - t_request_sent
            = sum over the request's stage rows of
              uplink_s + planning_s                     (stage 0 row only, else 0)
              + transfer_s + queueing_s + compute_s + handoff_s
              + result_transfer_s                       (last stage row only, else 0)
    where, for stage i:
      uplink_s          = t_coordinator_received - t_request_sent    (request crosses to the edge)
      planning_s        = t_dispatched - t_coordinator_received      (strategy + dispatch)
      transfer_s        = t_received - (t_dispatched if i == 0 else t_sent of stage i-1)
      queueing_s        = t_compute_start - t_received               (decode + waiting for the worker)
      compute_s         = t_compute_end - t_compute_start            (paced time in profiled mode)
      handoff_s         = t_sent - t_compute_end                     (encoding the state, send call)
      result_transfer_s = t_result_received - t_sent of the last stage
`transfer_s` of stage 0 moves only the small dispatch envelope (the first stage draws the noise);
`payload_bytes` / `message_bytes` are the tensor bytes / all bytes of the message that stage i
received, `result_*_bytes` those of the result message (last row).
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal

from pydantic import BaseModel, ConfigDict

from nodes.clock import Clock, WallSeconds, WallTime
from nodes.planning.plan import parse_plan
from nodes.planning.request import Request
from nodes.runtime.protocol import Hop, RequestTimes, WirePrediction

Outcome = Literal["ok", "failed"]


@dataclass
class SentRequest:
    """A request (nodes/planning/request.py) as its device sent it: what its records add to it.
    The device makes one when it sends (nodes/runtime/device.py), the runner one for a request
    nobody recorded (analysis/run_tables.py); the coordinator's prediction is added when its plan
    comes."""

    request: Request
    scheduler: str
    steps: int
    wall_t_scheduled: float
    wall_t_request_sent: float
    prediction: WirePrediction | None = None


class StageRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # the request
    request_id: str
    device: str
    strategy: str
    plan: str | None
    plan_key: str | None  # the plan without its hosts: what its quality is looked up by
    n_images: int
    seed: int
    scheduler: str
    steps: int
    deadline_s: float | None  # emulated, as the workload gave it
    outcome: Outcome
    reason: str | None
    deadline_met: bool | None
    wall_t_scheduled: WallTime  # when the workload said to send it (its at_s on the run's clock)
    # the stage (None where the request failed before a plan was known)
    stage_index: int | None
    stage_count: int | None
    host: str | None
    model: str | None
    start_step: int | None
    end_step: int | None
    # timestamps, wall clock (time.time() seconds)
    wall_t_request_sent: WallTime
    wall_t_coordinator_received: WallTime | None
    wall_t_dispatched: WallTime | None
    wall_t_received: WallTime | None
    wall_t_compute_start: WallTime | None
    wall_t_compute_end: WallTime | None
    wall_t_sent: WallTime | None
    wall_t_result_received: WallTime | None
    # latency parts, wall seconds (see the module docstring for how they add up to total_s)
    wall_uplink_s: WallSeconds | None
    wall_planning_s: WallSeconds | None
    wall_transfer_s: WallSeconds | None
    wall_queueing_s: WallSeconds | None
    wall_compute_s: WallSeconds | None
    wall_handoff_s: WallSeconds | None
    wall_result_transfer_s: WallSeconds | None
    wall_total_s: WallSeconds | None
    # bytes
    payload_bytes: int | None
    message_bytes: int | None
    result_payload_bytes: int | None
    result_message_bytes: int | None
    # compute mode and pacing: an overrun is a step that really took longer than its profile
    compute_mode: str | None
    hardware: str | None
    wall_real_compute_s: WallSeconds | None
    wall_profiled_compute_s: WallSeconds | None
    overrun_steps: int | None
    wall_overrun_s: WallSeconds | None
    # what the coordinator predicted for the plan it chose (nodes/planning/planner.py), emulated; None
    # before a plan came back, or where the coordinator predicts nothing
    predicted_total_s: float | None = None
    predicted_fid: float | None = None
    predicted_class_accuracy: float | None = None
    predicted_device_energy_j: float | None = None
    plan_note: str | None = None  # why the planner chose as it did, where its objective was not met
    # a cascade request (nodes/planning/strategies.py Cascade): "small>large@0.9" (device model > escalation
    # model @ threshold), how many of its images its device's gate escalated and which (comma
    # separated); its escalation's stages follow its first pass's as stage_index len(first)...
    cascade: str | None = None
    escalated_images: int | None = None
    escalated_indices: str | None = None
    wall_gate_s: WallSeconds | None = None  # from the first result to the escalation's send: the gate's time
    # a latent pipeline's stage (docs/latent-pipelines.md): what its host spent encoding the prompts and
    # decoding the latents, inside compute_s; None where it did not (every pixel model's stage)
    wall_encode_s: WallSeconds | None = None
    wall_decode_s: WallSeconds | None = None
    # a latent pipeline's request: the classifier-free guidance scale it asked for (its quality is
    # looked up at it); None for a pixel model's
    guidance_scale: float | None = None


def _request_fields(sent: SentRequest, outcome: Outcome, reason: str | None, plan: str | None) -> dict:
    predicted, request = sent.prediction, sent.request
    return {
        "predicted_total_s": predicted.latency_s if predicted else None,
        "predicted_fid": predicted.fid if predicted else None,
        "predicted_class_accuracy": predicted.class_accuracy if predicted else None,
        "predicted_device_energy_j": predicted.device_energy_j if predicted else None,
        "plan_note": predicted.note if predicted else None,
        "request_id": request.request_id, "device": request.device, "strategy": request.strategy,
        "plan": plan, "plan_key": parse_plan(plan).key if plan else None, "n_images": request.n,
        "seed": request.seed, "scheduler": sent.scheduler, "steps": sent.steps,
        "deadline_s": request.deadline_s, "outcome": outcome, "reason": reason,
        "guidance_scale": request.guidance_scale,
        "wall_t_scheduled": sent.wall_t_scheduled, "wall_t_request_sent": sent.wall_t_request_sent,
    }


def deadline_met(deadline_s: float | None, wall_total_s: float, clock: Clock) -> bool | None:
    """Whether a request took no longer than its (emulated) deadline; None without one."""
    return None if deadline_s is None else clock.emulated(wall_total_s) <= deadline_s


def completed_records(
    sent: SentRequest, plan: str, times: RequestTimes, hops: list[Hop], wall_t_result_received: float,
    result_payload_bytes: int, result_message_bytes: int, clock: Clock,
) -> list[StageRecord]:
    """Rows of a request whose result arrived; the wire's timestamps are the wall clock's."""
    total = wall_t_result_received - times.request_sent
    base = _request_fields(sent, "ok", None, plan)
    rows, previous_sent = [], times.dispatched
    last = len(hops) - 1
    for hop in hops:
        first = hop.stage == 0
        stage = parse_plan(plan).stages[hop.stage]
        rows.append(StageRecord(
            **base, deadline_met=deadline_met(sent.request.deadline_s, total, clock), stage_index=hop.stage,
            stage_count=len(hops), host=hop.host, model=hop.model, start_step=stage.start, end_step=stage.end,
            wall_t_coordinator_received=times.coordinator_received, wall_t_dispatched=times.dispatched,
            wall_t_received=hop.received, wall_t_compute_start=hop.compute_start,
            wall_t_compute_end=hop.compute_end, wall_t_sent=hop.sent,
            wall_t_result_received=wall_t_result_received,
            wall_uplink_s=(times.coordinator_received - times.request_sent) if first else 0.0,
            wall_planning_s=(times.dispatched - times.coordinator_received) if first else 0.0,
            wall_transfer_s=hop.received - previous_sent,
            wall_queueing_s=hop.compute_start - hop.received,
            wall_compute_s=hop.compute_end - hop.compute_start,
            wall_handoff_s=hop.sent - hop.compute_end,
            wall_result_transfer_s=(wall_t_result_received - hop.sent) if hop.stage == last else 0.0,
            wall_total_s=total,
            payload_bytes=hop.payload_bytes, message_bytes=hop.message_bytes,
            result_payload_bytes=result_payload_bytes if hop.stage == last else 0,
            result_message_bytes=result_message_bytes if hop.stage == last else 0,
            compute_mode=hop.compute_mode, hardware=hop.hardware, wall_real_compute_s=hop.real_compute_s,
            wall_profiled_compute_s=hop.profiled_compute_s, overrun_steps=hop.overrun_steps,
            wall_overrun_s=hop.overrun_s, wall_encode_s=hop.encode_s, wall_decode_s=hop.decode_s,
        ))
        previous_sent = hop.sent
    return rows


_EMPTY_STAGE = dict.fromkeys(
    (
        "deadline_met", "stage_index", "stage_count", "host", "model", "start_step", "end_step",
        "wall_t_coordinator_received", "wall_t_dispatched", "wall_t_received", "wall_t_compute_start",
        "wall_t_compute_end", "wall_t_sent", "wall_t_result_received", "wall_uplink_s", "wall_planning_s",
        "wall_transfer_s", "wall_queueing_s", "wall_compute_s", "wall_handoff_s", "wall_result_transfer_s",
        "wall_total_s", "payload_bytes", "message_bytes", "result_payload_bytes", "result_message_bytes",
        "compute_mode", "hardware", "wall_real_compute_s", "wall_profiled_compute_s", "overrun_steps",
        "wall_overrun_s",
    )
)


def failed_records(sent: SentRequest, reason: str, plan: str | None) -> list[StageRecord]:
    """Rows of a failed request: one per planned stage, or a single stage-less row if no plan came."""
    base = _request_fields(sent, "failed", reason, plan)
    if plan is None:
        return [StageRecord(**base, **_EMPTY_STAGE)]
    stages = parse_plan(plan).stages
    return [
        StageRecord(**{**base, **_EMPTY_STAGE, "stage_index": i, "stage_count": len(stages),
                       "host": s.host, "model": s.model, "start_step": s.start, "end_step": s.end})
        for i, s in enumerate(stages)
    ]


ESCALATION_SUFFIX = ".esc"  # a cascade's escalation travels as its own request: <request_id>.esc


def request_of(wire_id: str) -> str:
    """The request a message belongs to: an escalation's is its cascade request's."""
    return wire_id.removesuffix(ESCALATION_SUFFIX)


def cascade_records(first: list[StageRecord], second: list[StageRecord], cascade: str,
                    indices: list[int], clock: Clock) -> list[StageRecord]:
    """One cascade request's rows: its first pass's stages, then (if any image was escalated) its
    escalation's, renumbered after them.  total_s runs to the last result; the escalation's first
    uplink_s runs from the first result's arrival (the gate's time included) to the coordinator's
    receipt of the escalation, so the parts still add up to total_s; gate_s is the part of it
    before the escalation was sent (the gate classifying, the message made)."""
    head = first[0]
    end = (second or first)[-1].wall_t_result_received
    assert end is not None and head.wall_t_result_received is not None
    total = end - head.wall_t_request_sent
    common = {"wall_total_s": total, "deadline_met": deadline_met(head.deadline_s, total, clock),
              "stage_count": len(first) + len(second), "cascade": cascade, "escalated_images": len(indices),
              "escalated_indices": ",".join(map(str, indices)) or None}
    if second:
        received, uplink = second[0].wall_t_coordinator_received, second[0].wall_uplink_s
        assert received is not None and uplink is not None
        common["wall_gate_s"] = received - uplink - head.wall_t_result_received
        # a prediction made for the first pass alone is not one of the request
        common.update(dict.fromkeys(("predicted_total_s", "predicted_fid", "predicted_class_accuracy",
                                     "predicted_device_energy_j")),
                      plan_note="escalated: no prediction covers a cascade's escalation")
    rows = [r.model_copy(update=common) for r in first]
    for i, r in enumerate(second):
        assert r.stage_index is not None and r.wall_t_coordinator_received is not None
        rows.append(r.model_copy(update={
            **common, "request_id": head.request_id, "n_images": head.n_images, "seed": head.seed,
            "wall_t_request_sent": head.wall_t_request_sent, "wall_t_scheduled": head.wall_t_scheduled,
            "stage_index": len(first) + r.stage_index,
            "wall_uplink_s": (r.wall_t_coordinator_received - head.wall_t_result_received) if i == 0
            else 0.0}))
    return rows


class RecordWriter:
    """Appends records as JSON lines; flushed per line so a killed run keeps every finished request."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._handle: IO[str] = self.path.open("a", encoding="utf-8")
        self._lock = threading.Lock()

    def write(self, records: list[StageRecord]) -> None:
        with self._lock:
            for record in records:
                self._handle.write(record.model_dump_json() + "\n")
                self._handle.flush()

    def close(self) -> None:
        with self._lock:
            self._handle.close()


def read_records(path: Path) -> list[StageRecord]:
    """Every complete line of a records file (a torn last line from a killed process is skipped)."""
    text = Path(path).read_text(encoding="utf-8")
    lines = text.splitlines()
    if lines and not text.endswith("\n"):
        lines.pop()  # torn by a kill mid-write: every other line was flushed whole
    return [StageRecord.model_validate(json.loads(line)) for line in lines]
