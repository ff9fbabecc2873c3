"""Quality of plans from images generated with them: both judges' figures (analysis/quality.py:
FID, KID and class accuracy; the second judge's SVM class accuracy, PCA Fréchet distance and their
agreement) and PSNR vs large-only.  `compare_plans`: a table of several plans side by side,
generated now from the same seed, labels and scheduler (`edgestage quality --plans`);
`plans_quality`: each plan judged on enough images to rank by, cached (what a run's summary reports).

A run delivers a few dozen images per strategy; FID over so few is dominated by its small-sample
bias and can rank strategies the wrong way round. A plan's images depend only on the plan (models
and step ranges, not hosts), the scheduler, the steps, the labels and the seed, and generating
them locally (nodes/diffusion/generation.py) gives exactly what the nodes compute. So each distinct plan is
judged on PLAN_QUALITY_IMAGES images of its own (labels cycling 0-9, a fixed seed), and the
figures are cached on disk, one small JSON per key:

    (plan without hosts, scheduler, steps, seed, n, checksums of the plan's models, of the
     large reference model and of the classifier)

The second judge has no weights to checksum: it is refit from the train split in every process
(analysis/kernel_judge.py), so a cached file counts only while it holds every figure of FIGURES
and was made with that judge's SETTINGS; an older file is measured again, in place.

Cache directory: $EDGESTAGE_CACHE, else ~/.cache/edgestage/plan-quality. Figures for the plans
of the shipped scenarios ship, measured, beside the models (nodes/pretrained/plan-quality/, read
first, never written by a run; the key holds the models' checksums, so a retrained model is
measured anew), so that `make demo` and the tests do not spend minutes generating them. Every
figure carries `n_images` and the file it came from.

    figures = plans_quality(["large:0-30,small:30-50", "small:0-50"], "ddim", 50)

Regenerate the shipped figures (what nodes/pretrained/plan-quality/README.md lists):
    python -m analysis.plan_quality --scheduler dpm --steps 10 --plans large:0-10 ... \
        --cache-dir nodes/pretrained/plan-quality
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from analysis.kernel_judge import SETTINGS as KERNEL_JUDGE
from analysis.quality import quality_table
from nodes.diffusion.generation import generate, request_labels
from nodes.diffusion.model_zoo import (
    CLASSIFIER_NAME,
    PRETRAINED_DIR,
    resolve_model_dir,
    sha256_of,
    weights_file,
)
from nodes.planning.plan import Plan, parse_plan, single_model_plan
from nodes.planning.quality_table import FIGURES as TABLE_FIGURES
from nodes.progress import progress_bar
from nodes.schema import check_scheduler_name

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
    """One row per plan: its figures (FIGURES but KID's spread), generation time (s)."""
    parsed = [p if isinstance(p, Plan) else parse_plan(p, steps) for p in plans]
    for plan in parsed:
        if plan.total_steps != steps:
            raise ValueError(f"plan {plan} does not tile [0, {steps})")
    labels = request_labels(n, label)
    reference = large_reference(labels, seed, scheduler, steps)
    rows = []
    for plan in progress_bar(parsed, desc="plans", unit="plan"):
        started = time.perf_counter()
        images = generate(plan, labels, seed, scheduler, progress=True)
        elapsed = time.perf_counter() - started
        table = quality_table(images, labels, None if is_reference_plan(plan) else reference)
        figures = plan_figures(table)
        rows.append({"plan": str(plan), "n": table["n"], **{f: figures[f] for f in TABLE_FIGURES},
                     "generate_s": elapsed})
    return pd.DataFrame(rows)


PLAN_QUALITY_IMAGES = 500  # FID's small-sample bias is small next to the gaps between plans here
PLAN_QUALITY_SEED = 0
CACHE_FORMAT = 1  # bump when what a cached figure means changes
FIGURES = (*TABLE_FIGURES, "kid_std")  # the tables' figures, and KID's spread over its subsets
SHIPPED_DIR = PRETRAINED_DIR / "plan-quality"


def default_cache_dir() -> Path:
    env = os.environ.get("EDGESTAGE_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "edgestage" / "plan-quality"


@lru_cache(maxsize=64)
def _checksum(weights: Path, size: int, mtime_ns: int) -> str:
    # size and mtime in the cache key: a retrained model in the same place is hashed again
    return sha256_of(weights)


def model_checksum(name_or_path: str) -> str:
    weights = weights_file(resolve_model_dir(name_or_path))
    stat = weights.stat()
    return _checksum(weights, stat.st_size, stat.st_mtime_ns)


@dataclass(frozen=True)
class PlanQualityKey:
    plan: str
    scheduler: str
    steps: int
    seed: int
    n: int
    models: tuple[tuple[str, str], ...]  # (model, sha256 of its weights), reference and classifier too

    @classmethod
    def of(cls, plan: Plan | str, scheduler: str, steps: int, seed: int, n: int) -> PlanQualityKey:
        bare = (parse_plan(plan) if isinstance(plan, str) else plan).without_hosts()
        if bare.total_steps != steps:
            raise ValueError(f"plan {bare} does not tile [0, {steps})")
        if n < 2:
            raise ValueError(f"plan quality needs at least 2 images, got n={n}")
        names = sorted({*bare.models(), REFERENCE_MODEL, CLASSIFIER_NAME})
        return cls(str(bare), check_scheduler_name(scheduler), steps, seed, n,
                   tuple((name, model_checksum(name)) for name in names))

    def digest(self) -> str:
        text = json.dumps({"format": CACHE_FORMAT, **asdict(self)}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:24]

    def path(self, cache_dir: Path) -> Path:
        return Path(cache_dir) / f"{self.digest()}.json"


def read_cached(key: PlanQualityKey, cache_dir: Path) -> dict[str, Any] | None:
    """The cached figures of `key`, or None (absent, unreadable or for another key)."""
    path = key.path(cache_dir)
    try:
        entry = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(entry, dict) or entry.get("key") != json.loads(json.dumps(asdict(key))):
        return None  # a truncated write or a digest collision: measure again
    if any(f not in entry for f in FIGURES) or entry.get("kernel_judge") != judge_settings():
        return None  # made before the second judge, or by another one: measure again
    return {**entry, "cache_file": str(path), "cached": True}


def judge_settings() -> dict[str, Any]:
    """The second judge's settings as a cached file holds them (through JSON)."""
    return json.loads(json.dumps(KERNEL_JUDGE))


def _write_cached(key: PlanQualityKey, cache_dir: Path, figures: dict[str, Any]) -> Path:
    path = key.path(cache_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")  # atomic: a reader never sees half a file
    tmp.write_text(json.dumps({**figures, "key": asdict(key)}, indent=1) + "\n")
    tmp.replace(path)
    return path


def _finite_or_none(value: float | int | None) -> float | None:
    return None if value is None or value != value or value in (float("inf"), float("-inf")) else float(value)


def plan_figures(table: dict[str, Any]) -> dict[str, Any]:
    """analysis.quality.quality_table's figures under the tables' names (FIGURES): PSNR in dB, None
    where there is no reference or it is the reference itself (it would be infinite)."""
    return {**{f: table[f] for f in FIGURES if f != "psnr_vs_large_db"},
            "psnr_vs_large_db": _finite_or_none(table.get("psnr_vs_large"))}


@dataclass
class Reference:
    """The large-only images of one (labels, seed, scheduler, steps): PSNR's reference, and the
    images of the large-only plan itself (generated once, not twice)."""

    images: torch.Tensor
    generate_s: float

    @classmethod
    def make(cls, labels: torch.Tensor, seed: int, scheduler: str, steps: int, progress: bool) -> Reference:
        started = time.perf_counter()
        plan = single_model_plan(REFERENCE_MODEL, steps)
        images = generate(plan, labels, seed, scheduler, progress=progress)
        return cls(images, time.perf_counter() - started)


def measure(key: PlanQualityKey, labels: torch.Tensor, reference: Reference,
            progress: bool) -> dict[str, Any]:
    """Generate the key's images and judge them (no cache)."""
    plan = parse_plan(key.plan, key.steps)
    if plan == single_model_plan(REFERENCE_MODEL, key.steps):
        images, generate_s = reference.images, reference.generate_s
    else:
        started = time.perf_counter()
        images = generate(plan, labels, key.seed, key.scheduler, progress=progress)
        generate_s = time.perf_counter() - started
    table = quality_table(images, labels, None if is_reference_plan(plan) else reference.images)
    return {"plan": key.plan, "scheduler": key.scheduler, "steps": key.steps, "seed": key.seed,
            "n_images": int(table["n"]), **plan_figures(table), "kernel_judge": KERNEL_JUDGE,
            "generate_s": round(generate_s, 3), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def plans_quality(plans: Iterable[Plan | str], scheduler: str, steps: int, *, n: int | None = None,
                  seed: int = PLAN_QUALITY_SEED, cache_dir: Path | None = None,
                  progress: bool = True) -> dict[str, dict[str, Any]]:
    """Figures per distinct plan (hosts dropped), keyed by the plan's text without hosts.

    Cached plans cost a file read; the others are generated (n images, labels cycling 0-9,
    `seed`), sharing one large-only reference for PSNR."""
    n = PLAN_QUALITY_IMAGES if n is None else n
    # a cache given by the caller is the only one; by default the shipped figures come first
    lookup = [Path(cache_dir)] if cache_dir is not None else [SHIPPED_DIR, default_cache_dir()]
    cache_dir = lookup[-1]
    keys = {(parse_plan(p) if isinstance(p, str) else p).key: None for p in plans}
    out: dict[str, dict[str, Any]] = {}
    missing: list[PlanQualityKey] = []
    for text in keys:
        key = PlanQualityKey.of(text, scheduler, steps, seed, n)
        cached = next((c for d in lookup if (c := read_cached(key, d)) is not None), None)
        if cached is None:
            missing.append(key)
        else:
            out[text] = cached
    if missing:
        labels = request_labels(n)
        reference = Reference.make(labels, seed, scheduler, steps, progress)
        for key in progress_bar(missing, desc=f"plan quality ({n} images each)", unit="plan",
                                disable=not progress):
            figures = measure(key, labels, reference, progress)
            path = _write_cached(key, cache_dir, figures)
            out[key.plan] = {**figures, "cache_file": str(path), "cached": False}
    return {text: out[text] for text in keys}


def plan_quality(plan: Plan | str, scheduler: str, steps: int, **kwargs: Any) -> dict[str, Any]:
    """Figures of one plan; keyword arguments as plans_quality."""
    return next(iter(plans_quality([plan], scheduler, steps, **kwargs).values()))


def main(argv: list[str] | None = None) -> int:
    """Measure plans into a cache directory (the shipped one: see the module docstring)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m analysis.plan_quality", description=main.__doc__)
    parser.add_argument("--scheduler", required=True)
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--plans", nargs="+", required=True, metavar="PLAN")
    parser.add_argument("--n", type=int, default=PLAN_QUALITY_IMAGES)
    parser.add_argument("--cache-dir", type=Path, default=None)
    args = parser.parse_args(argv)
    figures = plans_quality(args.plans, args.scheduler, args.steps, n=args.n,
                            cache_dir=args.cache_dir or default_cache_dir())
    for plan, f in figures.items():
        print(f"{plan}: n={f['n_images']} fid={f['fid']:.3f} class_accuracy={f['class_accuracy']:.3f} "
              f"svm_class_accuracy={f['svm_class_accuracy']:.3f} pca_fd={f['pca_fd']:.3f} "
              f"judge_agreement={f['judge_agreement']:.3f} generate_s={f['generate_s']} -> {f['cache_file']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
