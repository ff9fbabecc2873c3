"""The cascade table as the runtime and the summary read it: torch- and pandas-free.

One CSV per (scheduler, steps) beside the models (`nodes/pretrained/cascade/dpm-30.csv`): per
device model, escalation model and threshold, the share of images the gate escalates and the
quality of what is delivered (every figure of nodes/planning/quality_table.py's FIGURES, both
judges'), on 500 images; analysis/cascade_quality.py measures and writes it.  A cascade of latent
pipelines (the embedded `latent-small` -> `latent-large`) has its own file, `latent-ddim-20.csv`,
with the same figures of the grey images and the prompts' attribute agreement besides
(LATENT_NUMBERS), made by analysis/latent_cascade_quality.py; which file a cascade reads follows
from its device model's kind.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

from nodes.diffusion.model_zoo import PRETRAINED_DIR, is_pipeline_folder
from nodes.planning.quality_table import FIGURES, OPTIONAL, latent_key
from nodes.schema import check_scheduler_name

CASCADE_DIR = PRETRAINED_DIR / "cascade"
THRESHOLDS = (0.5, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995, 0.999)
# every figure but PSNR, which the all-escalated row to large lacks (it is the reference itself)
NUMBERS = ("threshold", "escalation_rate", *(f for f in FIGURES if f not in OPTIONAL))
# a latent cascade's rows besides: the prompts' stroke weight and slant found in the images
LATENT_NUMBERS = ("weight_agreement", "slant_agreement", "both_agreement")


def table_file(scheduler: str, steps: int, latent: bool = False) -> Path:
    """The pixel models' table, or with `latent` the latent pipelines' (`latent-ddim-20.csv`)."""
    prefix = "latent-" if latent else ""
    return CASCADE_DIR / f"{prefix}{check_scheduler_name(scheduler)}-{steps}.csv"


def is_latent_cascade(device_model: str) -> bool:
    """Whether a cascade's device model is a latent pipeline (its table is the latent one)."""
    return is_pipeline_folder(device_model)


def read_cascade_table(scheduler: str, steps: int, path: Path | None = None,
                       latent: bool = False) -> list[dict[str, Any]]:
    """Every row, typed; ValueError naming the file (and line) where it is missing or malformed."""
    path = Path(path) if path is not None else table_file(scheduler, steps, latent)
    try:
        rows = list(csv.DictReader(path.read_text(encoding="utf-8").splitlines()))
    except FileNotFoundError:
        maker = "latent_cascade_quality" if latent else "cascade_quality"
        raise ValueError(f"no cascade table for {scheduler}/{steps} steps: {path.name} is missing from "
                         f"{path.parent} (make it with: python -m analysis.{maker} --scheduler "
                         f"{scheduler} --steps {steps})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read cascade table {path}: {exc}") from None
    out = []
    for line, row in enumerate(rows, start=2):
        try:
            psnr = row.get("psnr_vs_large_db")
            typed = {**row, **{k: float(row[k]) for k in NUMBERS}, "n": int(row["n"]),
                     "psnr_vs_large_db": float(psnr) if psnr else None,
                     **{k: float(row[k]) for k in (*LATENT_NUMBERS, "guidance_scale") if latent}}
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{path}:{line}: not a cascade table row ({exc})") from None
        if not all(math.isfinite(typed[k]) for k in NUMBERS):
            raise ValueError(f"{path}:{line}: a figure is not a finite number")
        out.append(typed)
    return out


def parse_cascade(text: str) -> tuple[str, str, float]:
    """`small>large@0.9` (what a cascade request's records say) -> (small, large, 0.9)."""
    try:
        models, threshold = text.rsplit("@", 1)
        device_model, escalate_model = models.split(">")
        return device_model, escalate_model, float(threshold)
    except ValueError:
        raise ValueError(f"not a cascade: {text!r} (expected MODEL>MODEL@THRESHOLD)") from None


def cascade_figures(device_model: str, escalate_model: str, threshold: float, scheduler: str,
                    steps: int, guidance_scale: float | None = None) -> dict[str, Any]:
    """The table's row of this cascade (a latent one's at the requests' `guidance_scale`, None:
    7.5); ValueError listing the thresholds it has where it has not."""
    latent = is_latent_cascade(device_model)
    rows = [r for r in read_cascade_table(scheduler, steps, latent=latent)
            if r["device_model"] == device_model and r["escalate_model"] == escalate_model]
    at = ""
    if latent:
        scale = latent_key("", guidance_scale)[1]
        rows, at = [r for r in rows if math.isclose(r["guidance_scale"], scale)], f" and guidance {scale:g}"
    for row in rows:
        if math.isclose(row["threshold"], threshold, abs_tol=1e-9):
            return row
    have = ", ".join(f"{r['threshold']:g}" for r in rows) or "none"
    raise ValueError(f"the cascade table of {scheduler}/{steps} steps has no row for {device_model} -> "
                     f"{escalate_model} at threshold {threshold:g}{at} (it has: {have})")


def escalation_models(device_model: str, threshold: float, scheduler: str, steps: int) -> list[str]:
    """The escalation models the table has a row for behind `device_model` at `threshold`, the best
    class accuracy first (FID, then name, breaking ties; a latent table's at any guidance, each model
    once); [] where the table is missing."""
    try:
        rows = read_cascade_table(scheduler, steps, latent=is_latent_cascade(device_model))
    except ValueError:
        return []
    rows = [r for r in rows if r["device_model"] == device_model
            and math.isclose(r["threshold"], threshold, abs_tol=1e-9)]
    rows.sort(key=lambda r: (-r["class_accuracy"], r["fid"], r["escalate_model"]))
    return list(dict.fromkeys(r["escalate_model"] for r in rows))
