"""Quality of the cascade against its threshold: what escalating the images the device's gate
doubts buys, measured on enough images to rank by (what the summary reports for `cascade`).

The cascade (nodes/planning/strategies.py `Cascade`, the device in nodes/runtime/device.py) generates
with the device's model, asks its gate classifier (`gate`, not the judge of quality) how
confident it is in each image's requested label, and regenerates the images below the threshold
with the escalation model.  Here the same thing on PLAN_QUALITY_IMAGES images (labels cycling
0-9, seed 0): the device model's images and the escalation model's images of the same labels
and seed, the gate's confidence in each; per threshold, image i is the escalation model's where
the gate doubts the device's, else the device's.  The figures are both judges' (analysis/quality.py:
the digit classifier's FID, KID and class accuracy; the second judge's SVM class accuracy and PCA
Fréchet distance, and how often the two agree), as for every plan.  The second judge matters most
here: the gate is a CNN classifier trained on the same digits as the first judge, so the images it
lets through are the ones the first judge also tends to count as right.

In a run an escalated image is drawn anew from a seed of its own (nodes/runtime/device.py
`escalation_seed`), here from the batch's seed: the same model and label, another draw.

The table ships per scheduler and step count of a shipped scenario that runs a cascade
(nodes/pretrained/cascade/), so that runs and tests generate nothing; a cascade whose threshold
or models are not in it is refused at scenario validation.  Regenerate:

    python -m analysis.cascade_quality --scheduler dpm --steps 30 --escalate large medium
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence

import pandas as pd
import torch

from analysis.plan_quality import PLAN_QUALITY_IMAGES, PLAN_QUALITY_SEED, large_reference, plan_figures
from analysis.quality import quality_table
from nodes.diffusion.gate import gate_confidence
from nodes.diffusion.generation import generate, request_labels
from nodes.planning.cascade_table import THRESHOLDS, table_file
from nodes.planning.plan import single_model_plan
from nodes.planning.quality_table import FIGURES


def cascade_rows(device_model: str, escalate_model: str, scheduler: str, steps: int,
                 thresholds: Sequence[float] = THRESHOLDS, n: int = PLAN_QUALITY_IMAGES,
                 seed: int = PLAN_QUALITY_SEED) -> list[dict]:
    """One row per threshold: the share of images escalated and the quality of the mix."""
    labels = request_labels(n)
    started = time.perf_counter()
    first = generate(single_model_plan(device_model, steps), labels, seed, scheduler)
    second = generate(single_model_plan(escalate_model, steps), labels, seed, scheduler)
    reference = second if escalate_model == "large" else large_reference(labels, seed, scheduler, steps)
    confidence = gate_confidence(first, labels)
    rows = []
    for threshold in thresholds:
        keep = confidence >= threshold
        mixed = torch.where(keep[:, None, None, None], first, second)
        # every image escalated to large is the reference itself: plan_figures gives it no PSNR
        figures = plan_figures(quality_table(mixed, labels, reference))
        rows.append({"device_model": device_model, "escalate_model": escalate_model, "threshold": threshold,
                     "scheduler": scheduler, "steps": steps, "n": n,
                     "escalation_rate": round(1.0 - float(keep.float().mean()), 4),
                     **{f: figures[f] for f in FIGURES}})
    for row in rows:
        row["generation_s"] = round(time.perf_counter() - started, 1)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m analysis.cascade_quality",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--scheduler", default="dpm")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--device-model", default="small")
    parser.add_argument("--escalate", nargs="+", default=["large"])
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    rows = []
    for model in args.escalate:
        rows += cascade_rows(args.device_model, model, args.scheduler, args.steps)
    path = table_file(args.scheduler, args.steps)
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(path, index=False, float_format="%.6g")
    print(f"wrote {len(rows)} rows to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
