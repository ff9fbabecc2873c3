"""Denoising-step times under the load a run puts on the machine: for time dilation's "auto"
(emulation/dilation.py).

    samples = paced_step_times([("large", 2, 1), ("medium", 2, 1), ("small", 2, 1)], duty=1 / 3)

Every job (model, batch, torch threads) runs in a process of its own, all at once, as the run's
node processes do: each loads its model, waits for the others, then for `duration_s` takes a
step and rests, so that it computes `duty` of its time (a profiled node computes a step and
then waits out the rest of K x its profile: at the K "auto" chooses, about 1 / its safety margin
of the time).  Each job's step times come back in seconds, warm-up steps left out.

A latent pipeline folder's job times what its node paces (nodes/runtime/pacing.py): each denoising
step (the guided UNet call and the sampler's step), the prompts' encoding and the latents' decoding,
as cycles of an encoding, CYCLE_STEPS steps and a decoding; its times come back per phase.

One step timed alone, as before, was a noisy basis (on the 2-core development machine one step
of `large` at batch 2 timed 16.7 to 27.4 ms in different runs): the other nodes' steps, the
captures and the userspace impairment share the cores with it in the run.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable

WARMUP = 3
CYCLE_STEPS = 2  # a latent job's steps between an encoding and a decoding: each phase timed often
Job = tuple[str, int, int]  # model, batch, torch threads
# a latent job's generation: (scheduler, steps, guidance scale)
Generation = tuple[str, int, float]
Times = list[float] | dict[str, list[float]]  # a pixel job's step times; a latent job's per phase
LOAD_TIMEOUT_S = 120


def paced_step_times(jobs: list[Job], duty: float, duration_s: float = 4.0,
                     generation: Generation = ("ddim", 20, 7.5)) -> list[Times]:
    """Each job's step times (seconds), the jobs running at once, each computing `duty` of its
    time; in the jobs' order.  A latent pipeline's job: {"step": [...], "encode": [...], "decode":
    [...]}, under `generation`.  RuntimeError naming the model where a job fails."""
    if not 0 < duty <= 1:
        raise ValueError(f"duty: must be in (0, 1], got {duty}")
    scheduler, steps, guidance = generation
    # processes, not multiprocessing: this may run in a daemonic process (a Dask worker's), which
    # multiprocessing refuses to give children
    procs = [subprocess.Popen([sys.executable, "-m", "nodes.diffusion.step_timing", name, str(batch),
                               str(threads), str(duty), str(duration_s), scheduler, str(steps),
                               str(guidance)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
             for name, batch, threads in jobs]
    try:
        for proc, job in zip(procs, jobs, strict=True):  # every model loaded and warmed up
            if proc.stdout.readline().strip() != "ready":
                raise RuntimeError(f"timing {job[0]}: {_why(proc)}")
        for proc in procs:  # all at once
            proc.stdin.write("go\n")
            proc.stdin.flush()
        out = []
        for proc, job in zip(procs, jobs, strict=True):
            line = proc.stdout.readline()
            if not line.strip():
                raise RuntimeError(f"timing {job[0]}: {_why(proc)}")
            times = json.loads(line)
            out.append({k: [float(v) for v in vs] for k, vs in times.items()} if isinstance(times, dict)
                       else [float(v) for v in times])
        return out
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            for stream in (proc.stdin, proc.stdout, proc.stderr):
                stream.close()


def _why(proc: subprocess.Popen) -> str:
    proc.kill()
    lines = proc.stderr.read().strip().splitlines()
    return lines[-1] if lines else f"exited with {proc.wait()}"


def time_job(name: str, batch: int, threads: int, duty: float, duration_s: float) -> list[float]:
    """One job, in this process: load, warm up, say `ready`, wait for `go` on stdin, then step and
    rest for `duration_s`; the step times."""
    import torch

    from nodes.diffusion.model_zoo import SampleShape, load_denoiser

    torch.set_num_threads(threads)
    model = load_denoiser(name)
    shape = SampleShape.of(model.config)
    x = torch.randn(shape.batch(batch))
    t = torch.full((batch,), 500)
    labels = torch.arange(batch) % shape.classes
    times: list[float] = []
    with torch.no_grad():
        for _ in range(WARMUP):
            model(x, t, class_labels=labels)
        print("ready", flush=True)
        sys.stdin.readline()
        end = time.monotonic() + duration_s
        while time.monotonic() < end or len(times) < 3:
            began = time.perf_counter()
            model(x, t, class_labels=labels)
            took = time.perf_counter() - began
            times.append(took)
            time.sleep(took * (1 / duty - 1))
    return times


def _ready_then_go() -> None:
    print("ready", flush=True)
    sys.stdin.readline()


def time_latent_job(folder: str, batch: int, threads: int, duty: float, duration_s: float,
                    generation: Generation,
                    ready: Callable[[], None] = _ready_then_go) -> dict[str, list[float]]:
    """A latent pipeline's job, in this process (as `time_job`): cycles of encoding `batch` prompts,
    CYCLE_STEPS guided steps and decoding, each part timed and rested after as a paced node does;
    `ready` between the warm-up and the timing (by default: say so, wait for `go`)."""
    import torch

    from nodes.diffusion.latent_folders import latent_space
    from nodes.diffusion.latent_pipeline import (
        LATENTS,
        decode,
        denoise,
        encode_prompt,
        initial_state,
        load_components,
    )

    torch.set_num_threads(threads)
    scheduler, steps, guidance = generation
    parts, space = load_components(folder), latent_space(folder)
    prompts = ["a digit 0"] * batch  # the tokenizer pads every prompt to one length: its text does not matter
    times: dict[str, list[float]] = {"step": [], "encode": [], "decode": []}
    keep = [False]

    def rest(phase: str, began: float) -> None:
        took = time.perf_counter() - began
        if keep[0]:
            times[phase].append(took)
        time.sleep(took * (1 / duty - 1))

    def cycle() -> None:
        began = time.perf_counter()
        embeddings = encode_prompt(parts, prompts, guidance_scale=guidance)
        rest("encode", began)
        mark = [time.perf_counter()]

        def on_step(_: int) -> None:
            rest("step", mark[0])
            mark[0] = time.perf_counter()

        state = initial_state(space, batch, 0, scheduler, steps, guidance_scale=guidance)
        state = denoise(parts.unet, parts.scheduler, state, embeddings, guidance, 0, min(CYCLE_STEPS, steps),
                        on_step)
        began = time.perf_counter()
        decode(parts.vae, state.tensors[LATENTS])
        rest("decode", began)

    with torch.no_grad():
        cycle()  # warm-up
        ready()
        keep[0] = True
        end = time.monotonic() + duration_s
        while time.monotonic() < end or len(times["encode"]) < 3:
            cycle()
    return times


if __name__ == "__main__":
    model_name, batch_size, thread_count, duty_share, seconds = sys.argv[1:6]
    scheduler_name, step_count, scale = sys.argv[6:9]
    from nodes.diffusion.model_zoo import is_pipeline_folder

    if is_pipeline_folder(model_name):
        result: object = time_latent_job(model_name, int(batch_size), int(thread_count), float(duty_share),
                                         float(seconds), (scheduler_name, int(step_count), float(scale)))
    else:
        result = time_job(model_name, int(batch_size), int(thread_count), float(duty_share), float(seconds))
    print(json.dumps(result), flush=True)
