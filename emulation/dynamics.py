"""Links that change while the network runs: trace replay, wireless channel with mobility
(the models: topologies/channel.py), scheduled down/up.  One background thread applies every
change at its time through `EmulatedNetwork.set_link` / `link_down` / `link_up`, which change the
link in place (HTB rate, netem or NFQUEUE parameters, interface state) and log each change with a
timestamp.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
import threading
import time
from collections.abc import Iterator

from topologies.channel import ChannelModel, RandomWaypoint
from topologies.traces import load_trace

log = logging.getLogger(__name__)


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
            # t is emulated: under time dilation K it happens K times later in wall time
            if self._stop_event.wait(max(0.0, t0 + t * self.net.dilation - time.monotonic())):
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
            net.set_link(li.a, li.b, bw_mbit=step.bw_mbit, delay_ms=step.delay_ms,
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
                net.set_link(li.a, li.b, bw_mbit=round(rate, 3), loss_pct=round(loss, 4),
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
