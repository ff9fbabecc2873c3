"""A rule-based strategy, as a plugin: keep the work on the device when its link is slow, else offload.

From the coordinator's live estimate of the requesting device's link to the edge (what its own
messages took: `view.rate_mbit`), all steps on the device with its model when the link is under
`threshold_mbit`, else all steps on the `offload` tier ("edge" or "cloud") with the first model
that host holds.  A link not yet observed counts as fast: work that stays on the device never
crosses the link, so only offloading can show what it is.  (The edge's estimate of the link rests
on messages of different sizes both ways; with `offload = "cloud"` the results come from the
cloud, and the device-edge path may see only the small requests and stay unknown.)

    [strategies.rule_based]
    kind = "plugin"
    plugin = "rule_based.py:RuleBased"      # beside the scenario file
    options = { threshold_mbit = 10, offload = "edge" }
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from nodes.planning.plan import Plan, Stage
from nodes.planning.planner import Decision
from nodes.planning.request import PlanRequest
from nodes.planning.strategies import Cluster

OPTIONS = ("threshold_mbit", "offload")


class RuleBased:
    def __init__(self, name: str, options: Mapping[str, Any]) -> None:
        unknown = sorted(set(options) - set(OPTIONS))
        if unknown:
            raise ValueError(f"unknown option {unknown[0]!r} (it takes {', '.join(OPTIONS)})")
        self.name = name
        threshold = options.get("threshold_mbit", 10.0)
        if isinstance(threshold, bool) or not isinstance(threshold, int | float) or not threshold > 0:
            raise ValueError(f"threshold_mbit must be a positive number of Mbit/s (got {threshold!r})")
        self.threshold_mbit = float(threshold)
        self.offload = options.get("offload", "edge")
        if self.offload not in ("edge", "cloud"):
            raise ValueError(f"offload must be 'edge' or 'cloud' (got {self.offload!r})")

    def plan_for(self, request: PlanRequest, view: Cluster) -> Decision:
        rate = view.rate_mbit(request.device, view.edge)
        slow = rate is not None and rate < self.threshold_mbit
        host = view.host_of("device" if slow else self.offload, request)
        held = view.models.get(host, ())
        if not held:
            raise ValueError(f"{host} holds no model")
        seen = "not yet observed" if rate is None else f"{rate:.3g} Mbit/s"
        return Decision(Plan((Stage(held[0], 0, view.steps, host),)),
                        note=f"link {seen} against {self.threshold_mbit:g} Mbit/s")
