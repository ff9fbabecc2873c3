"""The device thread: issue the workload's requests on time, then record how each one ended.

Every request ends exactly once, as `ok` (its result arrived: samples saved, then its records
written) or `failed` (an error came back, it timed out, or the node was stopped first). Anything
that arrives for a request that already ended is dropped and counted (`late_replies`).

A `cascade` request has two passes: when its first result comes (the device's own model), the
device's gate classifier (nodes/diffusion/gate.py) scores each image's requested label (a latent
pipeline's image: the digit its prompt names), and the images below the strategy's threshold go
back to the coordinator, with their prompts where they have some, as an escalation request
(`<request_id>.esc`, the same strategy, a seed of its own); the request ends when that result
comes, its images in place of the doubted ones.  Nothing doubted: it ends with the first result.
"""

from __future__ import annotations

import logging
import queue
import time
from dataclasses import dataclass, replace
from typing import Any

import torch

from nodes.diffusion.executor import LABELS, SAMPLE
from nodes.diffusion.samples import Samples, save_samples
from nodes.planning.plan import Plan
from nodes.planning.request import Request
from nodes.runtime.node_context import NodeContext
from nodes.runtime.protocol import (
    WIRE_VERSION,
    AcceptedMsg,
    ErrorMsg,
    ReportMsg,
    RequestMsg,
    ResultMsg,
    WirePrediction,
    WireTransfer,
    encode,
    plan_from_wire,
    wire_text,
)
from nodes.runtime.records import (
    ESCALATION_SUFFIX,
    RecordWriter,
    SentRequest,
    StageRecord,
    cascade_records,
    completed_records,
    failed_records,
)
from nodes.runtime.transport import Inbound, Outbox

log = logging.getLogger("nodes.runtime.device")


@dataclass
class FirstPass:
    """A cascade request's first result, kept while its escalation is on its way."""

    rows: list[StageRecord]
    images: torch.Tensor
    indices: list[int]  # the images sent up again
    escalation_id: str
    plan: str | None = None  # the escalation's, once the coordinator says
    prediction: WirePrediction | None = None  # the escalation's own


@dataclass
class Pending:
    sent: SentRequest
    wall_timeout_at: float
    plan: str | None = None
    first: FirstPass | None = None  # a cascade request whose escalation is out


def escalation_seed(seed: int) -> int:
    """The escalation's images are drawn anew: a seed of their own, fixed by the request's."""
    return (seed * 6364136223846793005 + 1442695040888963407) % 2**63


class Device:
    def __init__(self, node: NodeContext) -> None:
        self.node = node
        config = node.config
        self.writer = RecordWriter(config.records_file)
        first = min((r.at_s for r in config.workload), default=0.0)
        # no origin given (a node outside a runner's run): its first request goes now
        self.clock = config.clock.started(time.time() - config.clock.wall(first))
        self.samples_dir = config.run_dir / "samples"
        self.schedule = sorted(
            ((r.at_s, r.request_id, r) for r in config.workload), key=lambda entry: entry[0],
        )
        self.pending: dict[str, Pending] = {}
        self.escalations: dict[str, str] = {}  # escalation id -> its cascade request
        self.ended: set[str] = set()
        self.outcomes = {"ok": 0, "failed": 0}
        self.done = False

    def progress(self) -> dict[str, Any]:
        """For the status file: `done` once every request of the workload has been recorded."""
        return {"done": self.done, "requests": len(self.schedule), **self.outcomes,
                "pending": len(self.pending)}

    def close(self) -> None:
        self.writer.close()

    def run(self) -> None:
        outbox = Outbox(self.node.context, self.node.endpoints, self.node.curve)
        outbox.connect(self.node.config.coordinator)  # now: the first request pays no handshakes
        due = self.clock.wall_at
        upcoming = list(self.schedule)
        done_reported = False
        try:
            while not self.node.stop.is_set():
                outbox.poll_events()  # a dead coordinator is known before a request goes to it
                now = time.time()
                while upcoming and due(upcoming[0][0]) <= now:
                    at_s, request_id, request = upcoming.pop(0)
                    self.issue(outbox, request_id, request, due(at_s))
                self.expire(time.time())
                if not upcoming and not self.pending and not done_reported:
                    done_reported = True
                    self.done = True
                    log.info("workload done: %d ok, %d failed", self.outcomes["ok"], self.outcomes["failed"])
                    self.node.write_status("running")
                wake = [0.1]
                if upcoming:
                    wake.append(due(upcoming[0][0]) - time.time())
                if self.pending:
                    wake.append(min(p.wall_timeout_at for p in self.pending.values()) - time.time())
                try:
                    item = self.node.replies.get(timeout=max(0.0, min(wake)))
                except queue.Empty:
                    continue
                self.handle(item, outbox)
        finally:
            for request_id in list(self.pending):
                self.fail(request_id, "node stopped before the result arrived")
            outbox.close()

    def issue(self, outbox: Outbox, request_id: str, request: Request, wall_scheduled: float) -> None:
        config = self.node.config
        sent = time.time()
        note = SentRequest(request, config.scheduler, config.steps, wall_scheduled, sent)
        self.pending[request_id] = Pending(note, sent + self.clock.wall(config.request_timeout_s))
        message = RequestMsg.of(request, sent)
        try:
            outbox.send(config.coordinator, encode(message))
        except RuntimeError as exc:
            self.fail(request_id, f"sending the request to {config.coordinator} failed: {exc}")
            return
        self.node.stats.count("requests_sent")

    def expire(self, now: float) -> None:
        for request_id, pending in list(self.pending.items()):
            if now >= pending.wall_timeout_at:
                where = f"plan {pending.plan}" if pending.plan else "no plan came back from the coordinator"
                limit = self.node.config.request_timeout_s
                self.fail(request_id, f"timeout: no result within {limit:g} s ({where})")  # emulated

    def handle(self, item: Inbound, outbox: Outbox) -> None:
        envelope = item.message.envelope
        request_id = self.escalations.get(envelope.request_id, envelope.request_id)
        pending = self.pending.get(request_id)
        escalation = request_id != envelope.request_id
        if pending is None or (pending.first is not None) != escalation:
            seen = "already ended" if envelope.request_id in self.ended else "unknown"
            self.node.stats.drop("late_replies", f"{envelope.kind} for {seen} request {envelope.request_id}")
            if isinstance(envelope, ResultMsg) and envelope.request_id in self.ended:
                self.report(outbox, item, late=True)  # the path it took is up again
            return
        if isinstance(envelope, AcceptedMsg):
            if pending.first is not None:
                pending.first.plan = wire_text(envelope.plan)
                pending.first.prediction = envelope.prediction
            else:
                pending.plan = wire_text(envelope.plan)
                pending.sent.prediction = envelope.prediction
        elif isinstance(envelope, ErrorMsg):
            why = "escalation: " if escalation else ""
            self.fail(request_id, f"{why}{envelope.host}: {envelope.reason}", wire_text(envelope.plan))
        elif isinstance(envelope, ResultMsg):
            self.report(outbox, item)
            try:
                self.complete(item, pending, outbox)
            except Exception as exc:  # e.g. the samples cannot be written: the request fails, with why
                log.exception("recording the result of %s failed", envelope.request_id)
                if request_id in self.pending:
                    self.fail(request_id, f"recording the result failed: {exc}", wire_text(envelope.plan))

    def report(self, outbox: Outbox, item: Inbound, late: bool = False) -> None:
        """Tell the coordinator how the result came (its estimate of the path to this device); a
        `late` one (a re-planned request's first plan's result) only that its path delivers again."""
        result: ResultMsg = item.message.envelope  # type: ignore[assignment]
        last = result.hops[-1]
        transfer = None
        if last.host != self.node.host:
            transfer = WireTransfer(source=last.host, kind="result", sent=last.sent, received=item.received,
                                    message_bytes=item.message.message_bytes)
        message = ReportMsg(v=WIRE_VERSION, kind="report", request_id=result.request_id, origin=result.origin,
                            host=self.node.host, n=result.n, transfer=None if late else transfer, late=late)
        try:
            outbox.send(self.node.config.coordinator, encode(message))
        except RuntimeError as exc:  # the estimates miss one report; the request is not affected
            log.warning("could not report the result of %s: %s", result.request_id, exc)

    def complete(self, item: Inbound, pending: Pending, outbox: Outbox) -> None:
        result: ResultMsg = item.message.envelope  # type: ignore[assignment]
        first = pending.first
        request = pending.sent.request
        request_id = request.request_id
        if first is not None:  # the escalation: the images sent up again
            request = _subset(request, first.indices)
        labels = list(request.labels)
        try:
            plan, images = self._checked(item, None if request.latent else labels)
        except (ValueError, KeyError) as exc:
            self.fail(request_id, f"inconsistent result: {exc}", wire_text(result.plan))
            return
        note = pending.sent
        if first is not None:  # the escalation: its images, its own prediction
            note = replace(note, request=request, prediction=first.prediction)
        if result.prediction is not None:  # its own plan's (a re-planned request had two, or the
            note.prediction = result.prediction  # result overtook the `accepted` message)
        seed = request.seed if first is None else escalation_seed(request.seed)
        if request.latent:  # a latent pipeline's images: their prompts in place of labels
            samples = Samples(images=images, labels=None, plan=plan, seed=seed, scheduler=note.scheduler,
                              steps=note.steps, prompts=request.prompts,
                              negative_prompts=request.negative_prompts,
                              guidance_scale=request.guidance_scale)
        else:
            samples = Samples(images=images, labels=torch.tensor(labels), plan=plan, seed=seed,
                              scheduler=note.scheduler, steps=note.steps)
        name = request_id if first is None else request_id + ESCALATION_SUFFIX
        save_samples(self.samples_dir / f"{name}.npz", samples)  # before the ok records
        rows = completed_records(note, str(plan), result.timestamps, list(result.hops), item.received,
                                 item.message.payload_bytes, item.message.message_bytes, self.clock)
        spec = self.node.config.strategies.get(request.strategy)
        if first is not None:
            rows = cascade_records(first.rows, rows, _cascade_name(spec, plan), first.indices, self.clock)
        elif spec is not None and spec.kind == "cascade":
            if self._escalate(outbox, pending, spec, images, rows):
                return
            rows = cascade_records(rows, [], _cascade_name(spec), [], self.clock)
        self.writer.write(rows)
        self._end(request_id, "ok")

    def _checked(self, item: Inbound, labels: list[int] | None) -> tuple[Plan, torch.Tensor]:
        """The result's plan and images, once they are seen to be what was asked; ValueError if not.
        `labels` None: a latent pipeline's result, images alone (n x 3 x H x W)."""
        result: ResultMsg = item.message.envelope  # type: ignore[assignment]
        state = item.message.state
        assert state is not None  # the protocol refuses a result without state
        plan = plan_from_wire(result.plan, self.node.config.steps)
        if [(h.stage, h.host, h.model) for h in result.hops] != [
            (i, s.host, s.model) for i, s in enumerate(plan.stages)
        ]:
            raise ValueError("its hops do not follow the plan's stages")
        if labels is None:
            if set(state.tensors) != {SAMPLE}:
                raise ValueError(f"a latent pipeline's result holds {', '.join(sorted(state.tensors))}, "
                                 "not the images alone")
        elif state.tensors[LABELS].tolist() != labels:
            raise ValueError("its labels are not the requested ones")
        images = state.tensors[SAMPLE]
        if images.dtype != torch.float32 or images.ndim != 4 or not torch.isfinite(images).all():
            raise ValueError("its images are not finite float32 N x C x H x W")
        return plan, images.clamp(-1.0, 1.0)

    def _escalate(self, outbox: Outbox, pending: Pending, spec: Any, images: torch.Tensor,
                  rows: list[StageRecord]) -> bool:
        """A cascade's first result: send the images the gate doubts up again; False if none."""
        from nodes.diffusion.gate import escalated

        request = pending.sent.request
        indices = escalated(images, torch.tensor(_gate_digits(request)), spec.threshold)
        if not indices:
            return False
        escalation_id = request.request_id + ESCALATION_SUFFIX
        pending.first = FirstPass(rows, images, indices, escalation_id)
        self.escalations[escalation_id] = request.request_id
        escalation = _subset(request, indices).model_copy(update={
            "request_id": escalation_id, "seed": escalation_seed(request.seed),
            "escalation_of": request.request_id})
        try:
            outbox.send(self.node.config.coordinator, encode(RequestMsg.of(escalation, time.time())))
        except RuntimeError as exc:
            coordinator = self.node.config.coordinator
            self.fail(request.request_id, f"sending the escalation to {coordinator} failed: {exc}")
        return True

    def fail(self, request_id: str, reason: str, plan: str | None = None) -> None:
        pending = self.pending[request_id]
        plan = plan or pending.plan
        try:
            rows = failed_records(pending.sent, reason, plan)
        except ValueError:  # a plan we cannot parse: keep the reason, drop the stages
            rows = failed_records(pending.sent, f"{reason} (unparsable plan {plan!r})", None)
        self.writer.write(rows)
        log.info("request %s failed: %s", request_id, reason)
        self._end(request_id, "failed")

    def _end(self, request_id: str, outcome: str) -> None:
        pending = self.pending.pop(request_id)
        if pending.first is not None:
            self.escalations.pop(pending.first.escalation_id, None)
            self.ended.add(pending.first.escalation_id)
        self.ended.add(request_id)
        self.outcomes[outcome] += 1
        self.node.stats.count(f"requests_{outcome}")


def _gate_digits(request: Request) -> list[int]:
    """The digit the gate checks each image against: its label, or for a latent pipeline's image the
    digit its prompt names (a scenario whose cascade serves prompts naming none is refused)."""
    if not request.latent:
        return list(request.labels)
    from nodes.diffusion.digit_attributes import prompt_digit

    assert request.prompts is not None
    digits = [prompt_digit(p) for p in request.prompts]
    if None in digits:
        raise ValueError(f"prompt {request.prompts[digits.index(None)]!r} names no digit ('digit D') for "
                         "the cascade's gate to check")
    return digits  # type: ignore[return-value]


def _subset(request: Request, indices: list[int]) -> Request:
    """The request for some of its images only: their labels, prompts and negative prompts."""
    def pick(values: tuple | None) -> tuple | None:
        return None if values is None else tuple(values[i] for i in indices)

    return request.model_copy(update={"n": len(indices), "labels": pick(request.labels),
                                      "prompts": pick(request.prompts),
                                      "negative_prompts": pick(request.negative_prompts)})


def _cascade_name(spec: Any, escalation: Plan | None = None) -> str:
    """How a cascade request's records name its cascade: device model > escalation model @ threshold,
    the escalation model being the one its escalation's plan used (the coordinator routes it, and
    may route it to another model than the scenario's when no host of that one is available)."""
    from nodes.planning.strategies import DEFAULT_MODEL

    escalate_model = spec.escalate_model if escalation is None else escalation.stages[-1].model
    return f"{spec.model or DEFAULT_MODEL['cascade']}>{escalate_model}@{spec.threshold:g}"
