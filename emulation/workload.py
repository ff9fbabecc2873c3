"""The workload of a run: when each request is sent, by which device, under which strategy.

All strategies run in one run, interleaved in rounds: a round is one request (a device, its
labels, its image seed) sent through every strategy, one after the other.  Request k (of every
repetition) is slot k mod S of round k div S; the round's device is device (k div S) mod D and its
slot i goes to strategy (i + round) mod S, so the order turns by one each round: no strategy is
always the first onto the round's link or always the last, and over S rounds each is at every
place once.  So every strategy sees the same network and the same load over the whole run (no
strategy gets the quiet start or the busy end), every device sends every strategy in turn, and the
requests of a round make a paired comparison (analysis/interleaving.py: their latencies through
each strategy, and how much the strategies' requests overlapped).  With one strategy (compare's
runs) a round is one request.

Arrival times are fixed gaps of `interval_s` or a Poisson process (exponential gaps of mean
`interval_s`) drawn from `numpy.random.default_rng(seed)`; repetitions follow one another on the
same arrival process.  Image seeds: `seed * 1_000_000 + index`, with index = repetition * requests
+ the round's first k, so the requests of a round draw the same noise (and those of a run with
one strategy, as before rounds, each its own), and a run is reproducible from its scenario alone.

With `warmup = true`, one request per (device, strategy) goes first, `warmup_gap_s` apart (ids
`w-q...`, repetition -1, seeds counted down from the top of the scenario's seed range), and the
measured workload starts `warmup_settle_s` after the last of them: ZeroMQ opens a TCP connection on
the first message to a peer, so without warm-up the first requests also pay TCP and ZMTP
handshakes.  Warm-up requests are recorded like any other and left out of summaries.

Prompts (latent pipelines: `prompts` or `prompts_file`, optional `negative_prompts`, `guidance_scale`)
are cycled over the images: the requests of a round ask for the same prompts (as they draw the same
noise), round g of the run (over repetitions) starting at prompt g x images_per_request, so that the
run walks through the list; warm-ups ask for the list's first ones.
"""

from __future__ import annotations

import math

import numpy as np

from emulation.scenario import WorkloadSpec
from nodes.planning.request import Request

SEED_STRIDE = 1_000_000


def arrival_times(spec: WorkloadSpec, count: int) -> list[float]:
    """Emulated seconds from the first request: 0, then fixed or exponential gaps."""
    if spec.arrival == "fixed":
        return [round(i * spec.interval_s, 6) for i in range(count)]
    rng = np.random.default_rng(spec.seed)
    gaps = rng.exponential(spec.interval_s, size=count)
    gaps[0] = 0.0  # the first request opens the run
    return [round(float(t), 6) for t in np.cumsum(gaps)]


def labels_of(spec: WorkloadSpec) -> list[int]:
    if isinstance(spec.labels, list):
        return list(spec.labels)
    if isinstance(spec.labels, int):
        return [spec.labels] * spec.images_per_request
    return [i % 10 for i in range(spec.images_per_request)]


def prompts_of(spec: WorkloadSpec, round_: int) -> dict:
    """The prompt fields of a request of the run's `round_` (none for pixel models)."""
    prompts = spec.prompt_list()
    if prompts is None:
        return {}
    n = spec.images_per_request

    def cycled(texts: list[str]) -> list[str]:
        return [texts[(round_ * n + i) % len(texts)] for i in range(n)]

    negatives = None if spec.negative_prompts is None else cycled(list(spec.negative_prompts))
    return {"prompts": cycled(prompts), "negative_prompts": negatives, "guidance_scale": spec.guidance_scale}


def plan_workload(spec: WorkloadSpec, devices: list[str], strategies: list[str],
                  repetitions: int = 1) -> list[Request]:
    if not devices or not strategies:
        raise ValueError("a workload needs at least one device and one strategy")
    total = spec.requests * repetitions
    times = arrival_times(spec, total)
    labels = labels_of(spec)
    rounds = math.ceil(spec.requests / len(strategies))  # per repetition
    out = []
    if spec.warmup:
        for k in range(len(devices) * len(strategies)):
            out.append(Request(
                request_id=f"w-q{k:04d}", device=devices[k // len(strategies)],
                strategy=strategies[k % len(strategies)], repetition=-1, at_s=round(k * spec.warmup_gap_s, 6),
                n=spec.images_per_request, labels=labels, seed=spec.seed * SEED_STRIDE + SEED_STRIDE - 1 - k,
                deadline_s=spec.deadline_s, warmup=True, **prompts_of(spec, 0)))
        # t = 0 is the first measured request (nodes/clock.py): the warm-ups go before it, the
        # last with time to finish
        shift = len(out) * spec.warmup_gap_s + spec.warmup_settle_s
        out = [r.model_copy(update={"at_s": round(r.at_s - shift, 6)}) for r in out]
    count = len(strategies)
    for index in range(total):
        repetition, k = divmod(index, spec.requests)
        round_, slot = divmod(k, count)
        out.append(Request(
            request_id=f"r{repetition}-q{k:04d}", device=devices[round_ % len(devices)],
            strategy=strategies[(slot + round_) % count], repetition=repetition, at_s=times[index],
            n=spec.images_per_request, labels=labels, deadline_s=spec.deadline_s,
            seed=spec.seed * SEED_STRIDE + repetition * spec.requests + round_ * count,
            **prompts_of(spec, repetition * rounds + round_),
        ))
    return out


def by_device(requests: list[Request]) -> dict[str, list[Request]]:
    out: dict[str, list[Request]] = {}
    for r in requests:
        out.setdefault(r.device, []).append(r)
    return out
