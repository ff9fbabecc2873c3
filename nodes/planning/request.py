"""A request as planning sees it, from the coordinator's inbox to the strategy and the planner: who
asks, for how many images, by when, and what its stages need (labels, seed)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PlanRequest:
    """What a strategy may look at: who asks, for how many images, by when."""

    request_id: str
    origin: str  # the requesting device's host
    n: int
    strategy: str
    deadline_s: float | None = None  # emulated seconds after it was sent (nodes/clock.py)
    wall_sent: float = 0.0  # wall epoch seconds: when the device sent it
    wall_received: float = 0.0  # when the coordinator had it
    request_bytes: int = 0
    explore: bool = False  # a warm-up request: a planned strategy observes paths it has not seen
    escalation: bool = False  # a cascade's second pass: the images its device's gate doubted
    labels: tuple[int, ...] = ()  # what the stages need to draw and condition the images
    seed: int = 0
