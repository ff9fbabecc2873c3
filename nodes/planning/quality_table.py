"""The quality table as a planner reads it: torch- and pandas-free, so a coordinator node can load it.

One CSV per (scheduler, steps) beside the models (`nodes/pretrained/quality-table/dpm-30.csv`),
one row per plan of the grid with its measured figures; analysis/quality_table.py measures and
writes it (`edgestage quality-table`) and answers questions about plans off the grid.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

from nodes.diffusion.model_zoo import PRETRAINED_DIR
from nodes.planning.plan import parse_plan
from nodes.planning.request import DEFAULT_GUIDANCE_SCALE
from nodes.schema import check_scheduler_name

TABLE_DIR = PRETRAINED_DIR / "quality-table"
REPO_ROOT = PRETRAINED_DIR.parents[1]
# The quality figures of a plan or a cascade: the one list every table, summary and report of them
# takes (docs/nodes-and-models.md#two-judges).  The first judge's (the digit classifier: FID, KID,
# class accuracy), fidelity to large-only, then the second judge's (analysis/kernel_judge.py, which
# shares nothing with the first or with the cascade's gate) and how often the two agree.
SECOND_JUDGE = ("svm_class_accuracy", "pca_fd", "judge_agreement")
FIGURES = ("fid", "kid", "class_accuracy", "psnr_vs_large_db", *SECOND_JUDGE)
OPTIONAL = ("psnr_vs_large_db",)  # large-only has no PSNR against itself (it would be infinite)
SHARES = ("class_accuracy", "svm_class_accuracy", "judge_agreement")  # shares of images: in [0, 1]
COLUMNS = ("plan", "models", "boundaries", "scheduler", "steps", "n", *FIGURES, "cache_file")


def _shown(path: str | Path) -> str:
    """A path under the repository as a relative one (what the shipped table and messages show)."""
    p = Path(path)
    try:
        return str(p.resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(p)


def table_path(scheduler: str, steps: int) -> Path:
    return TABLE_DIR / f"{check_scheduler_name(scheduler)}-{steps}.csv"


def read_table(scheduler: str, steps: int, path: Path | None = None) -> list[dict[str, Any]]:
    """The table of `scheduler`/`steps` (default: the shipped one); ValueError saying how to make it
    where it is missing, and naming the file and line where it is malformed."""
    path = Path(path) if path is not None else table_path(scheduler, steps)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ValueError(f"no quality table for {scheduler}/{steps} steps: {_shown(path)} (make it with: "
                         f"edgestage quality-table --scheduler {scheduler} --steps {steps})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read quality table {_shown(path)}: {exc}") from None
    rows = list(csv.reader(text.splitlines()))
    if not rows or tuple(rows[0]) != COLUMNS:
        raise ValueError(f"{_shown(path)}:1: not a quality table: the header must be {','.join(COLUMNS)}")
    if len(rows) < 2:
        raise ValueError(f"{_shown(path)}:2: quality table has no rows")
    records = [_parse_row(row, scheduler, steps, f"{_shown(path)}:{line}")
               for line, row in enumerate(rows[1:], start=2)]
    return records


def _number(text: str, field: str, where: str, optional: bool = False) -> float | None:
    if optional and text == "":
        return None
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{where}: {field}: expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise ValueError(f"{where}: {field}: expected a finite number, got {text!r}")
    return value


def _parse_row(row: list[str], scheduler: str, steps: int, where: str) -> dict[str, Any]:
    """One CSV row checked and typed; `where` is `file:line` for the message."""
    if len(row) != len(COLUMNS):
        raise ValueError(f"{where}: expected {len(COLUMNS)} fields, got {len(row)}")
    raw = dict(zip(COLUMNS, row, strict=True))
    try:
        plan = parse_plan(raw["plan"], steps)
    except ValueError as exc:
        raise ValueError(f"{where}: plan: {exc}") from None
    if raw["scheduler"] != scheduler or raw["steps"] != str(steps):
        raise ValueError(f"{where}: a row for {raw['scheduler']}/{raw['steps']} steps in the table of "
                         f"{scheduler}/{steps}")
    if raw["models"] != ",".join(plan.models()):
        raise ValueError(f"{where}: models: {raw['models']!r} is not what plan {plan} runs")
    if raw["boundaries"] != ",".join(str(s.start) for s in plan.stages[1:]):
        raise ValueError(f"{where}: boundaries: {raw['boundaries']!r} are not plan {plan}'s")
    if not raw["n"].isdigit() or int(raw["n"]) < 2:
        raise ValueError(f"{where}: n: expected a number of images >= 2, got {raw['n']!r}")
    figures = {f: _number(raw[f], f, where, optional=f in OPTIONAL) for f in FIGURES}
    for f in SHARES:
        if not 0 <= figures[f] <= 1:
            raise ValueError(f"{where}: {f}: must lie in [0, 1], got {raw[f]}")
    return {**raw, "steps": steps, "n": int(raw["n"]), **figures}


# --- latent pipelines' plans (docs/latent-default.md) ---------------------------------------------
# One CSV per (scheduler, steps): `latent-ddim-20.csv`, one row per plan of the embedded latent
# default's grid and guidance scale it was measured at (analysis/latent_quality_table.py writes it):
# the first judge's class accuracy of the requested digit and FID, agreement with the prompt's
# weight and slant, PSNR against large-only.  A row is found by (plan key, guidance scale): a
# request that asks for a guidance the table was not measured at has no figures.
LATENT_COLUMNS = ("plan", "scheduler", "steps", "guidance_scale", "n", "class_accuracy", "fid", "kid",
                  "weight_agreement", "slant_agreement", "both_agreement", "psnr_vs_large")


def latent_table_path(scheduler: str, steps: int) -> Path:
    return TABLE_DIR / f"latent-{check_scheduler_name(scheduler)}-{steps}.csv"


LatentKey = tuple[str, float]


def latent_key(plan_key: str, guidance_scale: float | None) -> LatentKey:
    """How a latent plan's row is found: its key and the guidance scale (a request's, or diffusers'
    default 7.5 where it gave none)."""
    scale = DEFAULT_GUIDANCE_SCALE if guidance_scale is None else guidance_scale
    return plan_key, round(float(scale), 6)


def read_latent_table(scheduler: str, steps: int,
                      path: Path | None = None) -> dict[LatentKey, dict[str, Any]]:
    """(plan key, guidance scale) -> its figures (`latent_key`); {} where there is no table for
    `scheduler`/`steps`.  ValueError naming the file and line of a malformed one."""
    path = Path(path) if path is not None else latent_table_path(scheduler, steps)
    if not path.is_file():
        return {}
    rows = list(csv.reader(path.read_text(encoding="utf-8").splitlines()))
    if not rows or tuple(rows[0]) != LATENT_COLUMNS:
        raise ValueError(f"{_shown(path)}:1: not a latent quality table: the header must be "
                         f"{','.join(LATENT_COLUMNS)}")
    out = {}
    for line, row in enumerate(rows[1:], start=2):
        where = f"{_shown(path)}:{line}"
        if len(row) != len(LATENT_COLUMNS):
            raise ValueError(f"{where}: expected {len(LATENT_COLUMNS)} fields, got {len(row)}")
        record: dict[str, Any] = dict(zip(LATENT_COLUMNS, row, strict=True))
        plan = parse_plan(record["plan"], steps)
        for field in LATENT_COLUMNS[3:]:
            record[field] = _number(record[field], field, where, optional=field == "psnr_vs_large")
        if record["scheduler"] != scheduler or int(record["steps"]) != steps:
            raise ValueError(f"{where}: a row of {record['scheduler']}/{record['steps']} in the table of "
                             f"{scheduler}/{steps}")
        key = latent_key(plan.key, record["guidance_scale"])
        if key in out:
            raise ValueError(f"{where}: plan {plan.key} at guidance {key[1]:g} is in the table twice")
        out[key] = record
    return out
