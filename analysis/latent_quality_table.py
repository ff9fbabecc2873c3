"""The latent quality table (nodes/planning/quality_table.py `read_latent_table`): every plan of the
planner's latent grid over the embedded `latent-large` and `latent-small` (each alone, large then
small with a boundary every 10 % of the steps: nodes/planning/latent_plans.py `grid`), judged as
analysis/latent_quality.py judges them, on the same prompts and seed.  The elastic and routing
strategies read it for their floors and predicted quality of a latent request's plans.

    .venv/bin/python -m analysis.latent_quality_table [--scheduler ddim] [--steps 20] [--n 180]
                                                      [--guidance 4]

Rows are found by plan and guidance scale: measuring at another guidance adds its rows to the
file and keeps the other guidance scales' (a request asks for one; its figures are those).
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path
from typing import Any

from analysis.latent_quality import GUIDANCE, SEED, N, Plans, eval_prompts, measure
from nodes.planning import latent_plans
from nodes.planning.quality_table import LATENT_COLUMNS, latent_table_path

PIPELINES = ("latent-large", "latent-small")


def measure_latent_table(scheduler: str = "ddim", steps: int = 20, n: int = N, seed: int = SEED,
                         guidance: float = GUIDANCE) -> list[dict[str, Any]]:
    """One row per plan of the grid (LATENT_COLUMNS), PSNR against the first plan (large alone)."""
    prompts, digits, weights, slants = eval_prompts(n)
    plans = Plans()
    rows, reference = [], None
    for plan in latent_plans.grid(list(PIPELINES), steps):
        stages = [(s.model, s.start, s.end) for s in plan.stages]
        images = plans.generate(stages, prompts, seed, scheduler, steps, guidance)
        figures = measure(images, digits, weights, slants, reference)
        reference = images if reference is None else reference
        rows.append({"plan": plan.key, "scheduler": scheduler, "steps": steps, "guidance_scale": guidance,
                     **{k: figures.get(k, "") for k in LATENT_COLUMNS[4:]}})
    return rows


def write_latent_table(rows: list[dict[str, Any]], path: Path) -> Path:
    """`rows` into the table at `path`, in place of the rows it held at their guidance scale."""
    scales = {float(row["guidance_scale"]) for row in rows}
    if path.is_file():
        with path.open(encoding="utf-8") as stream:
            kept = [r for r in csv.DictReader(stream) if float(r["guidance_scale"]) not in scales]
        rows = kept + rows
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as stream:
        writer = csv.DictWriter(stream, fieldnames=LATENT_COLUMNS, lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scheduler", default="ddim")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--n", type=int, default=N)
    parser.add_argument("--guidance", type=float, default=GUIDANCE)
    args = parser.parse_args()
    if not args.guidance > 0:
        parser.error(f"--guidance must be a positive number, got {args.guidance:g}")
    started = time.perf_counter()
    rows = measure_latent_table(args.scheduler, args.steps, args.n, guidance=args.guidance)
    path = write_latent_table(rows, latent_table_path(args.scheduler, args.steps))
    print(f"{len(rows)} plans in {time.perf_counter() - started:.0f} s -> {path}")


if __name__ == "__main__":
    main()
