"""Wireless links as models: what a device's link does as it moves (pure functions of the
scenario's [topology.channel] table and a seed; emulation/dynamics.py applies them to the links).

Channel model (`ChannelModel`): distance d -> path loss PL = ref_loss_db + 10 n log10(d / 1 m)
-> SNR = tx_power_dbm - PL - noise_dbm -> rate = clamp(efficiency x B x log2(1 + SNR), min, max)
and loss = 100 / (1 + exp(steepness x (SNR - snr_half_loss_db))) percent.
Mobility (`RandomWaypoint`): each device walks to a random point of the area at a random speed,
pauses, and picks the next; a seeded RNG makes it reproducible.
"""

from __future__ import annotations

import math
import random

from topologies.spec import ChannelSpec


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
