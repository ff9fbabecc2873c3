"""The stage worker thread of a node: check a stage message against this node, run the stage, and
hand the state to the next stage's host (or the images to the requesting device).

A stage of a latent pipeline's plan (docs/latent-pipelines.md) runs the same way, with the folder's
components (nodes/diffusion/latent_pipeline.py): the first stage's host encodes the prompts it
receives in the stage message and draws the initial latents from the seed; every stage denoises its
steps with classifier-free guidance and hands on the latents, the sampler's state and the
embeddings (a tensor of their own); the last stage's host decodes the latents with the VAE and
sends the images to the device.  Each hop records the seconds it spent encoding and decoding.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

import torch

from nodes.diffusion.executor import LABELS, SAMPLE, initial_state, run_stage
from nodes.diffusion.latent_folders import LatentSpace, latent_space
from nodes.diffusion.model_zoo import (
    SampleShape,
    is_pipeline_folder,
    load_denoiser,
    load_noise_schedule,
    plan_models_kind,
)
from nodes.diffusion.schedulers import SCHEDULE_KEYS
from nodes.diffusion.state import DenoisingMeta, StateBundle
from nodes.planning.hardware import load_profiles, profile_for
from nodes.planning.plan import Plan, Stage
from nodes.runtime.compute_device import moved, torch_device
from nodes.runtime.node_context import NodeContext
from nodes.runtime.pacing import Pacer
from nodes.runtime.protocol import (
    WIRE_VERSION,
    Hop,
    ReportMsg,
    ResultMsg,
    StageMsg,
    WireTransfer,
    encode,
    plan_from_wire,
)
from nodes.runtime.transport import Inbound, Outbox, Stopping, serve

log = logging.getLogger("nodes.runtime.worker")


class Rejected(ValueError):
    """A well-formed stage message this node cannot run; the reason goes back to the device.
    `part`: what is wrong with it, "plan" (its plan, stage, model or hops) or "state" (its tensors)."""

    def __init__(self, reason: str, part: str = "plan") -> None:
        super().__init__(reason)
        self.part = part


class LatentModel:
    """A latent pipeline folder as a host holds it: the components it loaded, its latent space."""

    def __init__(self, name: str, extra: list[str] | None, device: torch.device) -> None:
        from nodes.diffusion.latent_pipeline import load_components

        wanted = ["unet", "scheduler", *(["tokenizer", "text_encoder", "vae"] if extra is None else extra)]
        self.space: LatentSpace = latent_space(name)
        self.components = load_components(name, wanted)
        for part in ("unet", "text_encoder", "vae"):
            if (module := getattr(self.components, part)) is not None:
                module.to(device)
        self.encodes = self.components.text_encoder is not None and self.components.tokenizer is not None
        self.decodes = self.components.vae is not None


class StageWorker:
    def __init__(self, node: NodeContext) -> None:
        self.node = node
        self.config = node.config
        torch.set_num_threads(self.config.compute.threads)
        self.device = torch_device(self.config.compute.device)
        started = time.perf_counter()
        self.models = {}
        self.latent: dict[str, LatentModel] = {}
        reference = None
        for name in self.config.models:
            if is_pipeline_folder(name):
                self.latent[name] = LatentModel(name, self.config.latent_components, self.device)
                continue
            denoiser, schedule = load_denoiser(name).to(self.device), load_noise_schedule(name)
            current = {key: schedule.config.get(key) for key in SCHEDULE_KEYS}
            if reference is not None and current != reference[1]:
                raise ValueError(f"models {reference[0]!r} and {name!r} were trained on different noise "
                                 "schedules")
            reference = reference or (name, current)
            self.models[name] = (denoiser, schedule)
        self.shapes = {name: SampleShape.of(denoiser.config) for name, (denoiser, _) in self.models.items()}
        self.load_s = time.perf_counter() - started
        self.profiles = {}
        if self.config.compute.mode == "profiled":
            table = load_profiles(self.config.compute.profiles_file)
            hardware = self.config.compute.hardware or ""
            self.profiles = {name: profile_for(table, hardware, name) for name in self.config.models}
            for name, model in self.latent.items():  # a profiled host paces what it may compute
                for phase, loaded in (("encode", model.encodes), ("decode", model.decodes)):
                    if loaded and getattr(self.profiles[name], phase) is None:
                        raise ValueError(f"profile {hardware!r} of {name!r} has no {phase}_ms and "
                                         f"{phase}_per_image_ms, and {self.config.host} may {phase} with it")

    def status(self) -> dict[str, Any]:
        return {"models_loaded": sorted([*self.models, *self.latent]), "model_load_s": round(self.load_s, 3)}

    def run(self) -> None:
        # polling the outbox's events: a dead next host is known by the time we forward
        serve(self.node, self.peers_to_open(), self.node.work, self.handle, Outbox.poll_events, wait_s=0.1)

    def peers_to_open(self) -> list[str]:
        """Whom this worker may send to, connected at start so that no measured message pays TCP
        and ZMTP handshakes (ZeroMQ connects on first use otherwise), and no planner estimate
        holds them: a server any host (states, results, reports); a device the coordinator and
        itself (its stages' results stay on it)."""
        config = self.config
        if config.role == "device":
            return list(dict.fromkeys([config.coordinator, config.host]))
        return list(self.node.endpoints)

    def handle(self, item: Inbound, outbox) -> None:
        envelope: StageMsg = item.message.envelope  # type: ignore[assignment]
        node = self.node
        try:  # the receiver checked it before queueing (Node._admit); check anything that was not
            plan, stage = item.checked or self.check(envelope, item.message.state)
        except Exception as exc:  # Rejected, or a checker bug: either way the message goes, not the node
            category = f"rejected_{exc.part}" if isinstance(exc, Rejected) else "checker_error"
            node.stats.drop(category, f"stage {envelope.stage} of {envelope.request_id}: {exc}")
            self._error(outbox, envelope, f"stage {envelope.stage} rejected: {exc}")
            return
        try:
            state, hop = self.compute(envelope, item, stage)
        except Stopping:
            return
        except Exception as exc:  # anything a state can make the executor raise: the request fails
            log.warning("stage %d of %s failed: %s", envelope.stage, envelope.request_id, exc)
            node.stats.count("stage_failures")
            self._error(outbox, envelope, f"stage {envelope.stage} failed: {exc.__class__.__name__}: {exc}")
            return
        node.stats.count("stages_run")
        try:
            self.forward(outbox, envelope, plan, state, hop)
        except Exception as exc:  # e.g. an envelope that no longer validates: the request fails
            log.exception("forwarding stage %d of %s failed", envelope.stage, envelope.request_id)
            self._error(outbox, envelope, f"forwarding stage {envelope.stage} failed: {exc}")
        self.report(outbox, envelope, item, stage, hop)

    def report(self, outbox, envelope: StageMsg, item: Inbound, stage: Stage, hop: Hop) -> None:
        """Tell the coordinator how the work came here and when it computed (its live estimates)."""
        if envelope.stage == 0:
            source, kind, sent = self.config.coordinator, "dispatch", envelope.timestamps.dispatched
        else:
            source, kind, sent = envelope.hops[-1].host, "state", envelope.hops[-1].sent
        transfer = None
        if sent is not None and source != self.config.host:
            transfer = WireTransfer(source=source, kind=kind, sent=sent, received=item.received,
                                    message_bytes=item.message.message_bytes)
        message = ReportMsg(v=WIRE_VERSION, kind="report", request_id=envelope.request_id,
                            origin=envelope.origin, host=self.config.host, n=envelope.n, transfer=transfer,
                            stage=envelope.stage, model=stage.model, steps=stage.steps,
                            compute_start=hop.compute_start, compute_end=hop.compute_end)
        try:
            outbox.send(self.config.coordinator, encode(message))
        except RuntimeError as exc:  # the estimates miss one report; the request is not affected
            log.warning("could not report stage %d of %s: %s", envelope.stage, envelope.request_id, exc)

    def check(self, envelope: StageMsg, state: StateBundle | None) -> tuple[Plan, Stage]:
        try:
            plan = plan_from_wire(envelope.plan, self.config.steps)
        except ValueError as exc:
            raise Rejected(str(exc)) from None
        if envelope.stage >= len(plan.stages):
            raise Rejected(f"the plan has {len(plan.stages)} stages, no stage {envelope.stage}")
        stage = plan.stages[envelope.stage]
        if (stage.start, stage.end) != (envelope.start, envelope.end):
            raise Rejected(f"step range [{envelope.start}, {envelope.end}) is not the plan's {stage}")
        if stage.host != self.config.host:
            raise Rejected(f"the plan runs this stage on {stage.host!r}, not here")
        if stage.model not in self.models and stage.model not in self.latent:
            raise Rejected(f"model {stage.model!r} is not loaded on {self.config.host}")
        for index, hop in enumerate(envelope.hops):
            earlier = plan.stages[index]
            if hop.stage != index or hop.host != earlier.host or hop.model != earlier.model:
                raise Rejected(f"hop {index} ({hop.host}, {hop.model}) does not match the plan's {earlier}")
        try:
            kind = plan_models_kind(plan)
        except ValueError as exc:
            raise Rejected(str(exc)) from None
        if kind == "latent":
            self._check_latent(envelope, plan, stage, state)
            return plan, stage
        if envelope.prompts is not None or envelope.guidance_scale is not None:
            raise Rejected("prompts or a guidance scale for a plan of pixel models")
        if state is not None:
            self._check_state(envelope, state, self.shapes[stage.model])
        return plan, stage

    def _check_latent(self, envelope: StageMsg, plan: Plan, stage: Stage, state: StateBundle | None) -> None:
        """A latent pipeline's stage (nodes/planning/plan.py places its encoding and decoding): the
        guidance scale; where it encodes, the prompts and a text encoder here, and nowhere else
        prompts; where it decodes (the last stage) a VAE here; its state of the pipeline's shapes,
        holding what this stage needs and nothing else (embeddings only into the first denoising
        stage after an encoding one, the latents into any later stage, the embeddings into a
        denoising stage that does not encode itself)."""
        from nodes.diffusion.latent_pipeline import EMBEDDINGS, LATENTS, guided

        model = self.latent[stage.model]
        guidance = envelope.guidance_scale
        index = envelope.stage
        if guidance is None:
            raise Rejected("a latent pipeline's stage without its guidance scale")
        encodes = plan.encodes_at(index)
        if encodes and envelope.prompts is None:
            raise Rejected(f"stage {index} of {plan} encodes the prompts, and its message comes without them")
        if not encodes and envelope.prompts is not None:
            raise Rejected(f"stage {index} of {plan} does not encode, and its message brings prompts")
        if encodes and not model.encodes:
            raise Rejected(f"{self.config.host} has no text encoder of {stage.model} loaded to encode "
                           "the prompts")
        if plan.decodes_at(index) and not model.decodes:
            raise Rejected(f"{self.config.host} has no VAE of {stage.model} loaded to decode the latents")
        if state is None:
            if index > 0:
                raise Rejected(f"stage {index} of {plan} comes without a state", "state")
            return
        if index == 0:
            raise Rejected("the first stage of a plan takes no state", "state")
        try:
            meta = DenoisingMeta.of(state)
        except ValueError as exc:
            raise Rejected(str(exc), "state") from None
        expected = {"scheduler": self.config.scheduler, "steps": self.config.steps,
                    "next_step": envelope.start, "seed": envelope.seed, "guidance_scale": guidance}
        for key, value in expected.items():
            if getattr(meta, key) != value:
                raise Rejected(f"state {key} is {getattr(meta, key)!r}, expected {value!r}", "state")
        space, n = model.space, envelope.n
        latents = space.latents_shape(n)
        embeddings = ((2 if guided(guidance) else 1) * n, space.text_tokens, space.text_dim)
        needs = {LATENTS} if envelope.start > 0 else set()
        if stage.steps and not encodes:
            needs.add(EMBEDDINGS)
        for name, tensor in state.tensors.items():
            if name == LATENTS or (name.startswith("history_") and stage.steps and envelope.start > 0):
                shape = latents
            elif name == EMBEDDINGS and EMBEDDINGS in needs:
                shape = embeddings
            else:
                raise Rejected(f"unexpected tensor {name!r}", "state")
            if tensor.dtype != torch.float32 or tuple(tensor.shape) != shape:
                found = f"{tensor.dtype} {tuple(tensor.shape)}"
                raise Rejected(f"tensor {name} is {found}, expected float32 {shape}", "state")
            if not torch.isfinite(tensor).all():
                raise Rejected(f"tensor {name} holds non-finite values", "state")
        missing = sorted(needs - set(state.tensors))
        if missing:
            raise Rejected(f"state lacks {missing[0]}", "state")
        if LATENTS in state.tensors and envelope.start == 0:
            raise Rejected(f"state holds {LATENTS} before step 0 (they come from the seed)", "state")

    def _check_state(self, envelope: StageMsg, state: StateBundle, sample: SampleShape) -> None:
        try:
            meta = DenoisingMeta.of(state)
        except ValueError as exc:
            raise Rejected(str(exc), "state") from None
        expected = {"scheduler": self.config.scheduler, "steps": self.config.steps,
                    "next_step": envelope.start, "seed": envelope.seed}
        for key, value in expected.items():
            if getattr(meta, key) != value:
                raise Rejected(f"state {key} is {getattr(meta, key)!r}, expected {value!r}", "state")
        shape = sample.batch(envelope.n)
        for name, tensor in state.tensors.items():
            if name == LABELS:
                if (tensor.dtype != torch.int64 or tensor.shape != (envelope.n,)
                        or tensor.tolist() != envelope.labels):
                    raise Rejected("state labels differ from the request's", "state")
            elif name == SAMPLE or name.startswith("history_"):
                if tensor.dtype != torch.float32 or tuple(tensor.shape) != shape:
                    found = f"{tensor.dtype} {tuple(tensor.shape)}"
                    raise Rejected(f"tensor {name} is {found}, expected float32 {shape}", "state")
                if not torch.isfinite(tensor).all():
                    raise Rejected(f"tensor {name} holds non-finite values", "state")
            else:
                raise Rejected(f"unexpected tensor {name!r}", "state")
        if SAMPLE not in state.tensors or LABELS not in state.tensors:
            raise Rejected("state lacks sample or labels", "state")

    def compute(self, envelope: StageMsg, item: Inbound, stage: Stage) -> tuple[StateBundle, Hop]:
        profile = self.profiles.get(stage.model)
        # under time dilation K a profiled step takes K times its profile in wall time
        step_s = self.config.clock.wall(profile.step_s(envelope.n)) if profile else None
        pacer = Pacer(step_s, stage.steps)
        stop = self.node.stop

        cuda = self.device.type == "cuda"

        def on_step(index: int) -> None:
            if stop.is_set():
                raise Stopping
            if cuda:  # a step has computed when its kernels have, not when they were queued
                torch.cuda.synchronize(self.device)
            pacer.on_step(index)

        compute_start = time.time()
        pacer.start()
        state = item.message.state
        encode_s = decode_s = None
        if stage.model in self.latent:
            plan = plan_from_wire(envelope.plan, self.config.steps)  # checked on receipt
            state, encode_s, decode_s = self._latent_stage(envelope, plan, stage, state, on_step, pacer,
                                                           profile)
        else:
            denoiser, schedule = self.models[stage.model]
            if state is None:  # stage 0: the noise comes from the request's seed, not the wire
                state = initial_state(torch.tensor(envelope.labels), envelope.seed, self.config.scheduler,
                                      self.config.steps, self.shapes[stage.model])
            state = run_stage(denoiser, schedule, moved(state, self.device), stage.start, stage.end,
                              on_step=on_step)
        state = moved(state, torch.device("cpu"))  # what goes on the wire
        compute_end = time.time()
        report = pacer.report
        hop = Hop(
            stage=envelope.stage, host=self.config.host, model=stage.model, received=item.received,
            compute_start=compute_start, compute_end=compute_end, sent=compute_end,  # `sent` set on send
            payload_bytes=item.message.payload_bytes, message_bytes=item.message.message_bytes,
            real_compute_s=report.real_compute_s, profiled_compute_s=report.profiled_compute_s,
            overrun_steps=report.overrun_steps, overrun_s=report.overrun_s,
            compute_mode=self.config.compute.mode, hardware=self.config.compute.hardware,
            encode_s=encode_s, decode_s=decode_s,
        )
        if not math.isfinite(report.real_compute_s):
            raise ValueError("non-finite compute time")
        return state, hop

    def _latent_stage(self, envelope: StageMsg, plan: Plan, stage: Stage, state: StateBundle | None,
                      on_step, pacer: Pacer, profile) -> tuple[StateBundle, float | None, float | None]:
        """A latent pipeline's stage: encode (where the plan has this stage encode), denoise its
        steps (none: a zero-step stage), decode (the last stage: the state that goes on is the
        images, as `sample`).  What goes on to the next stage is what it needs (`_handoff`).  A
        profiled host paces encoding and decoding to its profile as it paces a step.  Returns the
        state and the wall seconds spent encoding and decoding, None where it did not."""
        from nodes.diffusion import latent_pipeline as lp

        model = self.latent[stage.model]
        guidance = envelope.guidance_scale
        assert guidance is not None  # checked
        n, clock = envelope.n, self.config.clock
        encode_s = decode_s = None
        state = None if state is None else moved(state, self.device)
        embeddings = None if state is None else state.tensors.get(lp.EMBEDDINGS)
        if envelope.prompts is not None:
            began = time.perf_counter()
            embeddings = lp.encode_prompt(model.components, envelope.prompts, envelope.negative_prompts,
                                          guidance)
            encode_s = time.perf_counter() - began
            pacer.on_phase(clock.wall(profile.encode_s(n)) if profile else None)
        if state is None or lp.LATENTS not in state.tensors:  # the latents come from the request's seed
            state = moved(lp.initial_state(model.space, n, envelope.seed, self.config.scheduler,
                                           self.config.steps, guidance_scale=guidance), self.device)
        if stage.steps:
            carried = StateBundle(meta=state.meta, tensors={k: v for k, v in state.tensors.items()
                                                            if k != lp.EMBEDDINGS})
            components = model.components
            state = lp.denoise(components.unet, components.scheduler, carried, embeddings, guidance,
                               stage.start, stage.end, on_step=on_step)
        index = envelope.stage
        if not plan.decodes_at(index):
            return self._handoff(plan, index, state, embeddings), encode_s, None
        began = time.perf_counter()
        images = lp.decode(model.components.vae, state.tensors[lp.LATENTS])
        decode_s = time.perf_counter() - began
        pacer.on_phase(clock.wall(profile.decode_s(n)) if profile else None)
        return StateBundle(meta=state.meta, tensors={SAMPLE: images.contiguous()}), encode_s, decode_s

    @staticmethod
    def _handoff(plan: Plan, index: int, state: StateBundle, embeddings) -> StateBundle:
        """What stage `index` hands on: to an encoding stage's next, the embeddings alone (it draws
        the latents from the seed); to a decoding stage, the latents alone; to another denoising
        stage the latents, the sampler's history and, unless it encodes itself, the embeddings."""
        from nodes.diffusion.latent_pipeline import EMBEDDINGS, LATENTS

        following = plan.stages[index + 1]
        if not plan.stages[index].steps:
            return StateBundle(meta=state.meta, tensors={EMBEDDINGS: embeddings})
        if not following.steps:
            return StateBundle(meta=state.meta, tensors={LATENTS: state.tensors[LATENTS]})
        if plan.encodes_at(index + 1):
            return state
        return StateBundle(meta=state.meta, tensors={**state.tensors, EMBEDDINGS: embeddings})

    def forward(self, outbox, envelope: StageMsg, plan: Plan, state: StateBundle, hop: Hop) -> None:
        last = envelope.stage == len(plan.stages) - 1
        if last and LABELS in state.tensors:  # the device needs the images only, not the solver's history
            state = StateBundle(meta=state.meta, tensors={SAMPLE: state.tensors[SAMPLE],
                                                           LABELS: state.tensors[LABELS]})
        state_frames = state.to_frames()
        sent = time.time()  # just before the envelope is made and the frames go to the socket
        hops = [*envelope.hops, hop.model_copy(update={"sent": sent})]
        common = {"v": WIRE_VERSION, "request_id": envelope.request_id, "origin": envelope.origin,
                  "strategy": envelope.strategy, "plan": envelope.plan, "timestamps": envelope.timestamps,
                  "hops": hops, "prediction": envelope.prediction}
        if last:
            target = envelope.origin
            message = ResultMsg(kind="result", n=envelope.n, **common)
        else:
            following = plan.stages[envelope.stage + 1]
            target = following.host or ""
            prompts = {"prompts": envelope.prompts, "negative_prompts": envelope.negative_prompts} \
                if plan.encodes_at(envelope.stage + 1) else {}  # encode=each: a denoising host encodes
            message = StageMsg(kind="stage", stage=envelope.stage + 1, start=following.start,
                               end=following.end, n=envelope.n, labels=envelope.labels, seed=envelope.seed,
                               guidance_scale=envelope.guidance_scale, **prompts, **common)
        frames = [encode(message)[0], *state_frames]
        try:
            outbox.send(target, frames)
        except RuntimeError as exc:
            reason = f"handing stage {envelope.stage}'s output to {target} failed: {exc}"
            self._error(outbox, envelope, reason)

    def _error(self, outbox, envelope: StageMsg, reason: str) -> None:
        try:
            outbox.send(envelope.origin, self.node.error_frames(envelope.origin, envelope.request_id, reason,
                                                               envelope.plan, envelope.stage))
            self.node.stats.count("errors_sent")
        except RuntimeError as exc:
            log.warning("could not tell %s that %s failed: %s", envelope.origin, envelope.request_id, exc)
