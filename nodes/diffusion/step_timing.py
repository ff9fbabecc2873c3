"""Denoising-step times under the load a run puts on the machine: for time dilation's "auto"
(emulation/dilation.py).

    samples = paced_step_times([("large", 2, 1), ("medium", 2, 1), ("small", 2, 1)], duty=1 / 3)

Every job (model, batch, torch threads) runs in a process of its own, all at once, as the run's
node processes do: each loads its model, waits for the others, then for `duration_s` takes a
step and rests, so that it computes `duty` of its time (a profiled node computes a step and
then waits out the rest of K x its profile: at the K "auto" chooses, about 1 / its safety margin
of the time).  Each job's step times come back in seconds, warm-up steps left out.

One step timed alone, as before, was a noisy basis (on the 2-core development machine one step
of `large` at batch 2 timed 16.7 to 27.4 ms in different runs): the other nodes' steps, the
captures and the userspace impairment share the cores with it in the run.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

WARMUP = 3
Job = tuple[str, int, int]  # model, batch, torch threads
LOAD_TIMEOUT_S = 120


def paced_step_times(jobs: list[Job], duty: float, duration_s: float = 4.0) -> list[list[float]]:
    """Each job's step times (seconds), the jobs running at once, each computing `duty` of its
    time; in the jobs' order.  RuntimeError naming the model where a job fails."""
    if not 0 < duty <= 1:
        raise ValueError(f"duty: must be in (0, 1], got {duty}")
    # processes, not multiprocessing: this may run in a daemonic process (a Dask worker's), which
    # multiprocessing refuses to give children
    procs = [subprocess.Popen([sys.executable, "-m", "nodes.diffusion.step_timing", name, str(batch),
                               str(threads), str(duty), str(duration_s)],
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
            out.append([float(v) for v in json.loads(line)])
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


if __name__ == "__main__":
    model_name, batch_size, thread_count, duty_share, seconds = sys.argv[1:6]
    print(json.dumps(time_job(model_name, int(batch_size), int(thread_count), float(duty_share),
                              float(seconds))), flush=True)
