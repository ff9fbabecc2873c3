"""Quality and cost of several plans side by side: the local (no network) comparison table.

One call a researcher can loop over: same seed, labels and scheduler for every plan, so that the
differences in the table come from the plans alone.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import pandas as pd
import torch
from tqdm import tqdm

from analysis.quality import quality_table
from nodes.diffusion.generation import generate, request_labels
from nodes.plan import Plan, parse_plan, single_model_plan

REFERENCE_MODEL = "large"


def large_reference(labels: torch.Tensor, seed: int, scheduler: str, steps: int) -> torch.Tensor:
    return generate(single_model_plan(REFERENCE_MODEL, steps), labels, seed, scheduler)


def is_reference_plan(plan: Plan) -> bool:
    return all(stage.model == REFERENCE_MODEL for stage in plan.stages)


def compare_plans(
    plans: Sequence[str | Plan],
    n: int = 200,
    seed: int = 0,
    scheduler: str = "ddim",
    steps: int = 50,
    label: int | None = None,
) -> pd.DataFrame:
    """One row per plan: FID, KID, class accuracy, PSNR vs large-only (dB), generation time (s)."""
    parsed = [p if isinstance(p, Plan) else parse_plan(p, steps) for p in plans]
    for plan in parsed:
        if plan.total_steps != steps:
            raise ValueError(f"plan {plan} does not tile [0, {steps})")
    labels = request_labels(n, label)
    reference = large_reference(labels, seed, scheduler, steps)
    rows = []
    for plan in tqdm(parsed, desc="plans", unit="plan"):
        started = time.perf_counter()
        images = generate(plan, labels, seed, scheduler, progress=True)
        elapsed = time.perf_counter() - started
        figures = quality_table(images, labels, None if is_reference_plan(plan) else reference)
        rows.append(
            {
                "plan": str(plan),
                "n": figures["n"],
                "fid": figures["fid"],
                "kid": figures["kid"],
                "class_accuracy": figures["class_accuracy"],
                "psnr_vs_large_db": figures.get("psnr_vs_large"),
                "generate_s": elapsed,
            }
        )
    return pd.DataFrame(rows)
