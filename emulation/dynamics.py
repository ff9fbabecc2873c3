"""Links that change while the network runs: trace replay, wireless channel with mobility,
scheduled down/up.  One background thread applies every change at its time through
`EmulatedNetwork.set_link` / `link_down` / `link_up`, which change the link in place (HTB rate,
netem or NFQUEUE parameters, interface state) and log each change with a timestamp.

Channel model (`ChannelModel`): distance d -> path loss PL = ref_loss_db + 10 n log10(d / 1 m)
-> SNR = tx_power_dbm - PL - noise_dbm -> rate = clamp(efficiency x B x log2(1 + SNR), min, max)
and loss = 100 / (1 + exp(steepness x (SNR - snr_half_loss_db))) percent.
Mobility (`RandomWaypoint`): each device walks to a random point of the area at a random speed,
pauses, and picks the next; a seeded RNG makes it reproducible.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
import random
import threading
import time
from collections.abc import Iterator

from topologies.spec import ChannelSpec
from topologies.traces import load_trace

log = logging.getLogger(__name__)


class ChannelModel:
    def __init__(self, spec: ChannelSpec) -> None:
        self.spec = spec

    def snr_db(self, distance_m: float) -> float:
        s = self.spec
        d = max(distance_m, 1.0)
        return s.tx_power_dbm - (s.ref_loss_db + 10 * s.exponent * math.log10(d)) - s.noise_dbm

    def rate_mbit(self, snr_db: float) -> float:
        s = self.spec
        shannon = s.efficiency * s.bandwidth_mhz * math.log2(1 + 10 ** (snr_db / 10))
        return min(s.max_rate_mbit, max(s.min_rate_mbit, shannon))

    def loss_pct(self, snr_db: float) -> float:
        s = self.spec
        x = s.steepness * (snr_db - s.snr_half_loss_db)
        return 100.0 / (1.0 + math.exp(min(x, 700.0)))

    def link(self, distance_m: float) -> tuple[float, float, float]:
        """(rate Mbit/s, loss %, SNR dB) at a distance."""
        snr = self.snr_db(distance_m)
        return self.rate_mbit(snr), self.loss_pct(snr), snr


class RandomWaypoint:
    """Random-waypoint mobility for a set of devices inside a rectangle."""

    def __init__(self, names: list[str], spec: ChannelSpec, seed: int,
                 start: dict[str, tuple[float, float] | None] | None = None) -> None:
        self.spec = spec
        self.rng = random.Random(seed)
        start = start or {}
        self.pos = {n: start.get(n) or self._point() for n in names}
        self.target = {n: self._point() for n in names}
        self.speed = {n: self._speed() for n in names}
        self.pause = dict.fromkeys(names, 0.0)

    def _point(self) -> tuple[float, float]:
        w, h = self.spec.area
        return (self.rng.uniform(0, w), self.rng.uniform(0, h))

    def _speed(self) -> float:
        lo, hi = self.spec.speed
        return self.rng.uniform(lo, hi)

    def step(self, dt: float) -> None:
        for n in self.pos:
            if self.pause[n] > 0:
                self.pause[n] = max(0.0, self.pause[n] - dt)
                continue
            (x, y), (tx, ty) = self.pos[n], self.target[n]
            dist = math.hypot(tx - x, ty - y)
            move = self.speed[n] * dt
            if move >= dist:
                self.pos[n] = (tx, ty)
                self.target[n], self.speed[n] = self._point(), self._speed()
                self.pause[n] = self.spec.pause_s
            else:
                self.pos[n] = (x + (tx - x) * move / dist, y + (ty - y) * move / dist)


class LinkDynamics(threading.Thread):
    """Applies scheduled link changes of one EmulatedNetwork until stopped.

    Times (events, trace steps, channel updates) count from the clock's origin, a wall-clock
    time given by `set_origin`: a run sets it to its first measured request, so an event at
    `at = 12` happens 12 s into the measured workload whatever the start-up and warm-up took.
    Until the origin is set nothing changes and the links are as configured."""

    def __init__(self, net: object) -> None:
        super().__init__(name="edgestage-link-dynamics", daemon=True)
        self.net = net
        self._stop_event = threading.Event()
        self._origin_set = threading.Event()
        self.origin: float | None = None  # time.time() of t = 0
        self._heap: list[tuple[float, int, str, object]] = []
        self._seq = itertools.count()
        self.errors: list[str] = []
        spec = net.spec
        for li in net.links:
            if li.spec.trace:
                self._push(0.0, "trace", (li, _trace_steps(li.spec.trace)))
        for ev in spec.events:
            self._push(ev.at, "event", ev)
        self.channel = None
        if spec.channel is not None and spec.channel.enabled:
            self.channel = ChannelModel(spec.channel)
            devices = {d.name: d.position for d in spec.device_specs()}
            self.mobility = RandomWaypoint(list(devices), spec.channel, spec.seed, devices)
            aps = spec.channel.ap_positions or []
            centre = (spec.channel.area[0] / 2, spec.channel.area[1] / 2)
            self.device_links = {}
            for li in net.links:
                if net.hosts[li.a].role == "device":
                    cell = next((d.cell for d in spec.device_specs() if d.name == li.a), 0)
                    self.device_links[li.a] = (li, aps[cell] if cell < len(aps) else centre)
            self._push(0.0, "channel", None)

    def has_work(self) -> bool:
        return bool(self._heap)

    def _push(self, t: float, kind: str, payload: object) -> None:
        heapq.heappush(self._heap, (t, next(self._seq), kind, payload))

    def set_origin(self, origin: float) -> None:
        """Start the clock: t = 0 is `origin` (time.time()), which may lie in the future."""
        self.origin = origin
        self._origin_set.set()

    def stop(self) -> None:
        self._stop_event.set()
        self._origin_set.set()
        if self.is_alive():
            self.join(timeout=5)

    def run(self) -> None:
        self._origin_set.wait()
        if self._stop_event.is_set() or self.origin is None:
            return
        # a monotonic clock from here on: the wall clock may be stepped during a run
        t0 = time.monotonic() + (self.origin - time.time())
        while self._heap and not self._stop_event.is_set():
            t, _, kind, payload = self._heap[0]
            if self._stop_event.wait(max(0.0, t0 + t - time.monotonic())):
                return
            heapq.heappop(self._heap)
            try:
                self._apply(t, kind, payload)
            except Exception as exc:  # a failed change is logged; the run goes on
                self.errors.append(f"{kind} at {t:.3f}s: {exc}")
                log.warning("link change failed: %s at %.3fs: %s", kind, t, exc)

    def _apply(self, t: float, kind: str, payload: object) -> None:
        net = self.net
        if kind == "event":
            a, b = payload.link
            (net.link_down if payload.action == "down" else net.link_up)(a, b, source="schedule")
        elif kind == "trace":
            li, steps = payload
            t_next, step = next(steps)
            net.set_link(li.a, li.b, bw=step.bw_mbit, delay_ms=step.delay_ms,
                         loss_pct=step.loss_pct, source="trace")
            self._push(t_next, "trace", (li, steps))
        elif kind == "channel":
            interval = net.spec.channel.interval_s
            if t > 0:
                self.mobility.step(interval)
            for name, (li, ap_pos) in self.device_links.items():
                x, y = self.mobility.pos[name]
                dist = math.hypot(x - ap_pos[0], y - ap_pos[1])
                rate, loss, snr = self.channel.link(dist)
                net.set_link(li.a, li.b, bw=round(rate, 3), loss_pct=round(loss, 4),
                             source="channel",
                             extra={"distance_m": round(dist, 2), "snr_db": round(snr, 2),
                                    "position": [round(x, 2), round(y, 2)]})
            self._push(t + interval, "channel", None)


def _trace_steps(path: str) -> Iterator[tuple[float, object]]:
    """(time of the step after this one, this step), looping over the trace forever."""
    trace = load_trace(path)
    for loop in itertools.count():
        base = loop * trace.period_s
        for i, step in enumerate(trace.steps):
            nxt = trace.steps[i + 1].t_s if i + 1 < len(trace.steps) else trace.period_s
            yield base + nxt, step
