"""What the coordinator knows of the network and the hosts, learnt only from the nodes' own reports.

Every stage host, after its stage, and every device, when a result arrives, sends the coordinator
a `report` (nodes/runtime/protocol.py): which message brought the work (from where, its bytes,
when it was sent and received) and when the stage computed.  From those:

- per ordered host pair: seconds = delay + bytes / rate, a least-squares fit over the last WINDOW
  messages on that path, each weighted 0.5 ** (age / HALF_LIFE) (age counted in messages).  Where
  one direction's messages have one size (results only), both directions are fitted together
  (the requests going up give the small sizes); where neither has sizes to tell rate from delay,
  the mean time.  A message the estimate misses by more than CHANGE restarts both directions'
  estimates from it, so that a step change in a link shows in the next plan.  (The nodes open
  their connections at start, so no observed message holds TCP or ZMTP handshakes.)  A path
  never observed has no estimate (`None`); the planner then composes it through the
  coordinator's host, and a warm-up request of a planned strategy takes the plan over the most
  paths not yet observed.  The configured links are never read.  A message still on its way (a
  stage reported it sent, its receiver has not reported it come) bounds its path from below: the
  planner counts the path at least as long as that message has taken so far (scaled down for
  smaller messages), so a link that just got slow or went down shows before the first slow
  message arrives.
- step times per (host, model, images) of a native host: a moving average of its reported
  per-step compute time (a profiled host's steps are its profile's, known in advance).
- `HostQueues`: each host runs one stage at a time, first come first served.  Every stage the
  coordinator dispatches is a reservation (when its input is predicted to arrive, how long it
  computes); a host's reservations are laid end to end, and a report replaces a prediction by what
  happened.  A reservation whose predicted end passed without its report stretches by as long
  again as it is late (a host behind a dead link looks ever further away); one still unreported
  when its request timed out marks the host `suspect` until any report of it arrives.

All times are wall-clock epoch seconds (hosts share one clock under Mininet; in deploy mode the
transfer figures are only as good as the hosts' clock synchronisation).  Not thread-safe: the
coordinator thread owns it.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

WINDOW = 16
HALF_LIFE = 2.0  # messages
CHANGE = 0.5  # a message this far (relative) from the estimate restarts it
STEP_EWMA = 0.3  # weight of the newest native step time


def fit(observations: list[tuple[int, float]]) -> tuple[float, float]:
    """(delay_s, seconds per byte) of the weighted least-squares line through (bytes, seconds),
    newest last and weighted most; both clamped at 0.  Sizes too alike to tell the rate from the
    delay: their weighted mean time, per byte 0."""
    n = len(observations)
    weights = [0.5 ** ((n - 1 - i) / HALF_LIFE) for i in range(n)]
    total = sum(weights)
    pairs = list(zip(weights, observations, strict=True))
    mean_x = sum(w * x for w, (x, _) in pairs) / total
    mean_y = sum(w * y for w, (_, y) in pairs) / total
    var_x = sum(w * (x - mean_x) ** 2 for w, (x, _) in pairs)
    if var_x <= (0.1 * mean_x) ** 2 * total:
        return mean_y, 0.0
    slope = max(0.0, sum(w * (x - mean_x) * (y - mean_y) for w, (x, y) in pairs) / var_x)
    delay = mean_y - slope * mean_x
    if delay < 0:  # through the origin instead
        return 0.0, sum(w * x * y for w, (x, y) in pairs) / sum(w * x * x for w, (x, _) in pairs)
    return delay, slope


def _varied(observations: list[tuple[int, float]]) -> bool:
    sizes = [x for x, _ in observations]
    return len(sizes) > 1 and max(sizes) >= 1.5 * max(1, min(sizes))


Key = tuple[str, int]  # (request_id, index of the stage a message feeds; the stage count: the result)


@dataclass(frozen=True)
class InFlight:
    """A message on its way: from its sender's report (or the coordinator's own dispatch) to its
    receiver's report."""

    key: Key
    src: str
    dst: str
    sent: float
    until: float  # when its request times out: no longer awaited after that
    size: float  # bytes expected


@dataclass
class Reservation:
    key: tuple[str, int]  # (request_id, stage)
    ready: float  # when its input is predicted to arrive
    duration: float
    until: float  # when its request times out
    start: float = 0.0
    end: float = 0.0


class HostQueues:
    def __init__(self) -> None:
        self.queues: dict[str, list[Reservation]] = {}
        self.free: dict[str, float] = {}  # when the host's last reported stage ended
        self.suspect: dict[str, tuple[float, str]] = {}  # host -> (since, why)

    def reserve(self, host: str, key: tuple[str, int], ready: float, duration: float, until: float) -> None:
        self.queues.setdefault(host, []).append(Reservation(key, ready, duration, until))

    def finished(self, host: str, key: tuple[str, int], end: float) -> None:
        """`key`'s stage ended on `host` at `end`: it and anything of its request before it go."""
        self.suspect.pop(host, None)
        self.free[host] = max(self.free.get(host, 0.0), end)
        request_id, stage = key
        for queue in self.queues.values():
            queue[:] = [r for r in queue if not (r.key[0] == request_id and r.key[1] <= stage)]

    def forget(self, request_id: str) -> None:
        for queue in self.queues.values():
            queue[:] = [r for r in queue if r.key[0] != request_id]

    def schedule(self, host: str, now: float) -> list[Reservation]:
        """The host's reservations in the order their inputs arrive (the worker's order), laid end
        to end from what is known at `now`; expired ones (their request timed out unreported) are
        dropped and make the host suspect."""
        queue = self.queues.get(host, [])
        queue.sort(key=lambda r: r.ready)
        expired = [r for r in queue if r.until <= now]
        if expired:
            why = f"suspect: stage {expired[0].key[1]} of {expired[0].key[0]} never reported"
            self.suspect[host] = (now, why)
            queue[:] = [r for r in queue if r.until > now]
        free = self.free.get(host, 0.0)
        for index, r in enumerate(queue):
            r.start = max(r.ready, free)
            r.end = r.start + r.duration
            if index == 0 and r.end < now:  # late: assume it takes as long again as it is late
                r.end = now + (now - r.end)
            free = r.end
        return queue

    def expire_suspicion(self, now: float, after_s: float) -> None:
        """A host suspect for `after_s` is tried again: its silence may have had another cause
        than a dead path (a stage that failed), and only work sent there can show it is back."""
        for host, (since, _) in list(self.suspect.items()):
            if now - since >= after_s:
                del self.suspect[host]

    def suspect_reasons(self) -> dict[str, str]:
        return {host: why for host, (_, why) in self.suspect.items()}

    def free_at(self, host: str, now: float, arrive: float | None = None) -> float:
        """When the host can start work that arrives at `arrive` (default: never before the
        reservations, i.e. at the end of all of them): after every reservation whose input
        arrives before it."""
        queue = self.schedule(host, now)
        ahead = [r.end for r in queue if arrive is None or r.ready <= arrive]
        return max(now, ahead[-1] if ahead else 0.0, self.free.get(host, 0.0))

    def backlog_s(self, host: str, now: float) -> float:
        return self.free_at(host, now) - now


class LiveEstimates:
    def __init__(self) -> None:
        self.paths: dict[tuple[str, str], deque[tuple[int, float]]] = {}
        self.steps: dict[tuple[str, str, int], float] = {}
        self.queues = HostQueues()
        self.reports = 0
        self.changes = 0  # step changes detected (see observe_transfer)
        # messages on their way, by (request_id, index of the stage they feed, or the stage count
        # for the result), and those stranded on a path their request was re-planned away from
        self.on_way: dict[Key, InFlight] = {}
        self.stranded: dict[Key, InFlight] = {}

    def observe_transfer(self, src: str, dst: str, size: int, seconds: float) -> None:
        """One message crossed src -> dst.  One that the estimate misses by more than CHANGE (a
        step change in the link, or a retransmission) restarts the estimates of both directions
        from it: older messages describe a link that is no longer there."""
        if src == dst:
            return
        size, seconds = max(0, int(size)), max(0.0, float(seconds))
        before = self._fitted(src, dst, size) if self._knows(src, dst, size) else None
        if before is not None and abs(seconds - before) > CHANGE * max(before, seconds * 0.1):
            self.paths.pop((dst, src), None)
            self.paths.pop((src, dst), None)
            self.changes += 1
        self.paths.setdefault((src, dst), deque(maxlen=WINDOW)).append((size, seconds))

    def observe_steps(self, host: str, model: str, n: int, steps: int, seconds: float) -> None:
        if steps <= 0:
            return
        key, value = (host, model, n), seconds / steps
        old = self.steps.get(key)
        self.steps[key] = value if old is None else (1 - STEP_EWMA) * old + STEP_EWMA * value

    def sent(self, key: Key, src: str, dst: str, sent: float, until: float, size: float = 0.0) -> None:
        """A message of about `size` bytes left `src` for `dst` at `sent` (a stage's report says
        so); until its arrival is reported, its elapsed time bounds the path's (`transfer_s`)."""
        if src != dst:
            self.on_way[key] = InFlight(key, src, dst, sent, until, size)

    def arrived(self, key: Key, stranded: bool = False) -> None:
        (self.stranded if stranded else self.on_way).pop(key, None)

    def strand(self, request_id: str) -> None:
        """The request was re-planned: its messages still on their way are no longer its plan's,
        but they bound their paths from below until they arrive (or time out)."""
        for key in [k for k in self.on_way if k[0] == request_id]:
            self.stranded[key] = self.on_way.pop(key)

    def take_stranded(self, request_id: str) -> list[InFlight]:
        """The request's stranded messages, forgotten: its first plan's result got through."""
        taken = [m for k, m in self.stranded.items() if k[0] == request_id]
        for message in taken:
            del self.stranded[message.key]
        return taken

    def drop_sent(self, src: str, dst: str, before: float) -> None:
        """Forget the messages src -> dst sent by `before`: they wait for TCP's retransmission on a
        connection given up, and say nothing of the path now."""
        for messages in (self.on_way, self.stranded):
            for key in [k for k, m in messages.items() if (m.src, m.dst) == (src, dst) and m.sent <= before]:
                del messages[key]

    def forget(self, request_id: str) -> None:
        """The request is done (or failed): nothing of its plan is queued or on its way."""
        for key in [k for k in self.on_way if k[0] == request_id]:
            del self.on_way[key]
        self.queues.forget(request_id)

    def overdue_s(self, src: str, dst: str, now: float, size: float) -> float:
        """The longest any message still on its way from src to dst has taken so far (0: none),
        scaled down for a smaller message (as if the path had lost rate, not gained delay: a
        small message may still pass); messages of requests that timed out are dropped."""
        longest = 0.0
        for messages in (self.on_way, self.stranded):
            for key, m in list(messages.items()):
                if m.until <= now:
                    del messages[key]
                elif (m.src, m.dst) == (src, dst):
                    scale = 1.0 if m.size <= 0 else min(1.0, size / m.size)
                    longest = max(longest, (now - m.sent) * scale)
        return longest

    def _knows(self, src: str, dst: str, size: int) -> bool:
        """Whether the estimate for `size` rests on more than a guess: a fit of varied sizes, or
        messages of about this size (a mean time of other sizes is no basis to call a change)."""
        both = list(self.paths.get((src, dst), ())) + list(self.paths.get((dst, src), ()))
        return _varied(both) or any(size / 1.5 <= x <= size * 1.5 for x, _ in both)

    def transfer_s(self, src: str, dst: str, size: int, now: float | None = None) -> float | None:
        """Seconds for `size` bytes from src to dst: the path's own fit where its messages differ
        in size; else the fit of both directions together (links are assumed symmetric, as the
        emulated ones are: a device's small uplink requests and large downlink results give the
        rate); else its mean time; None where neither direction has been seen.  With `now`, at
        least as long as a message on its way there has taken so far (`overdue_s`): a message
        that is late says the path is slow before any report can."""
        if src == dst:
            return 0.0
        estimate = self._fitted(src, dst, size)
        if now is not None and (late := self.overdue_s(src, dst, now, size)) > (estimate or 0.0):
            return late
        return estimate

    def _fitted(self, src: str, dst: str, size: int) -> float | None:
        own = list(self.paths.get((src, dst), ()))
        both = own + list(self.paths.get((dst, src), ()))
        for observations in (own, both):
            if _varied(observations):
                delay, per_byte = fit(observations)
                return delay + per_byte * size
        if own or both:
            return fit(own or both)[0]
        return None

    def step_s(self, host: str, model: str, n: int) -> float | None:
        """A native host's measured seconds per step (for `n` images; another n scaled linearly)."""
        if (host, model, n) in self.steps:
            return self.steps[(host, model, n)]
        others = [(k[2], v) for k, v in self.steps.items() if k[:2] == (host, model)]
        if not others:
            return None
        m, value = min(others, key=lambda kv: abs(kv[0] - n))
        return value * n / m
