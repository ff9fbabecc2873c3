"""`edgestage doctor | train | generate | quality`: what runs on this machine alone, no network."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from emulation.cli.args import add_sampling_args, finite, guidance, print_json

if TYPE_CHECKING:  # imported where used: each command starts without torch where it can
    from nodes.diffusion.samples import Samples
    from nodes.planning.plan import Plan


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("doctor", help="what this machine can do for the testbed")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_doctor)

    p = sub.add_parser("train", help="reproduce an embedded model (deterministic)")
    p.add_argument("model", choices=("small", "medium", "large", "classifier", "gate", "latent"),
                   help="latent: both latent pipeline folders (latent-large, latent-small) and their quality")
    p.add_argument("--out", help="model directory to write (default: the shipped one; for latent, the folder "
                   "to write latent-large and latent-small in)")
    p.set_defaults(func=_train)

    p = sub.add_parser("generate", help="generate images along a plan, locally")
    p.add_argument("--plan", help="MODEL:START-END,... e.g. large:0-30,small:30-50")
    add_sampling_args(p, n_default=64)
    p.add_argument("--label", type=int, help="digit 0-9 (default: cycle through 0-9)")
    p.add_argument("--prompts", nargs="+", help="a latent pipeline's plan: prompts, cycled over the images")
    p.add_argument("--prompts-file", help="a latent pipeline's plan: the prompts, one per line")
    p.add_argument("--negative-prompts", nargs="+", help="cycled as the prompts")
    p.add_argument("--guidance", type=guidance, help="classifier-free guidance scale (default 7.5)")
    p.add_argument("--replay", help="regenerate the images of this samples file")
    p.add_argument("--out", required=True, help="samples file to write (.npz)")
    p.set_defaults(func=_generate)

    p = sub.add_parser("quality", help="both judges' figures (FID, KID, class accuracy; SVM class accuracy, "
                       "PCA Fréchet distance, their agreement) and PSNR vs large-only")
    p.add_argument("samples", nargs="?", help="samples file (.npz)")
    p.add_argument("--plans", nargs="+", help="generate and compare these plans instead")
    add_sampling_args(p, n_default=200)
    p.add_argument("--no-reference", action="store_true", help="skip PSNR vs large-only")
    p.add_argument("--record", action="store_true", help="write single-model figures to model cards")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_quality)

    p = sub.add_parser("quality-table", help="quality per plan over the planner's grid of plans")
    add_quality_table_args(p)
    p.set_defaults(func=_quality_table)


def _doctor(args: argparse.Namespace) -> int:
    from emulation.doctor import doctor_report, format_report

    report = doctor_report()
    print_json(report) if args.json else print(format_report(report))
    return 0


def _train(args: argparse.Namespace) -> int:
    from nodes.diffusion.model_cards import render_card
    from nodes.diffusion.model_zoo import PRETRAINED_DIR
    from nodes.diffusion.samples import check_output_path
    from nodes.diffusion.training import train_classifier, train_denoiser

    if args.model == "latent":
        return _train_latent(Path(args.out) if args.out else PRETRAINED_DIR)
    out = Path(args.out) if args.out else PRETRAINED_DIR / args.model
    if out.exists() and not out.is_dir():
        raise ValueError(f"cannot write model directory {out}: it is a file")
    check_output_path(out / "config.json", what="model directory file")
    if args.model in ("classifier", "gate"):
        facts = train_classifier(out, name=args.model)
    else:
        facts = train_denoiser(args.model, out)
    render_card(out)
    print(f"trained {args.model}: {facts['parameters']:,} parameters in {facts['wall_time_s']} s -> {out}")
    return 0


def _train_latent(out: Path) -> int:
    """Both latent pipeline folders (docs/latent-default.md), their quality, their model cards."""
    from nodes.diffusion.samples import check_output_path

    if out.exists() and not out.is_dir():
        raise ValueError(f"cannot write pipeline folders in {out}: it is a file")
    check_output_path(out / "latent-large" / "model_index.json", what="pipeline folder file")
    from analysis.latent_quality import compare, record
    from nodes.diffusion.latent_training import NAMES, render_card, train_latent

    facts = train_latent(out)
    folders = [out / name for name in NAMES]
    rows = compare(*folders)
    record(folders, rows)
    for folder in folders:
        render_card(folder)
    print(f"trained {', '.join(NAMES)}: {facts['parameters']} parameters in {facts['wall_time_s']} s "
          f"-> {out}")
    for row in rows:
        print(json.dumps(row))
    return 0


def _generate(args: argparse.Namespace) -> int:
    # each import only where it is first needed: a bad plan is refused before torch is imported,
    # a bad samples file before diffusers is (a few seconds of start-up each)
    from nodes.planning.plan import parse_plan
    from nodes.schema import check_scheduler_name

    if args.out.endswith(("/", "\\")):
        raise ValueError(f"--out {args.out}: give a file name (.npz), not a folder")
    if args.replay:
        from nodes.diffusion.samples import load_samples

        old = load_samples(Path(args.replay))
        if old.labels is None:  # a latent pipeline's: its prompts
            return _generate_latent(args, old)
        plan, labels, seed, scheduler, steps = old.plan, old.labels, old.seed, old.scheduler, old.steps
    else:
        if not args.plan:
            raise ValueError("generate needs --plan (or --replay FILE)")
        if args.steps <= 0:
            raise ValueError(f"--steps must be positive, got {args.steps}")
        plan = parse_plan(args.plan, args.steps)
        hosted = [stage for stage in plan.stages if stage.host]
        if hosted:
            raise ValueError(f"--plan stage {hosted[0]}: generate runs every stage on this machine, so "
                             f"@{hosted[0].host} means nothing here (hosts are for emulated runs)")
        if _is_latent(plan):
            return _generate_latent(args, _latent_request(args, plan))
        if args.prompts or args.prompts_file or args.negative_prompts or args.guidance is not None:
            raise ValueError(f"--plan {plan} runs pixel models: --prompts, --prompts-file, "
                             "--negative-prompts and --guidance are for latent pipelines")
        from nodes.diffusion.generation import request_labels

        labels = request_labels(args.n, args.label)
        seed, scheduler, steps = args.seed, check_scheduler_name(args.scheduler), args.steps
    from nodes.diffusion.generation import check_fits, check_plan_models, generate
    from nodes.diffusion.samples import Samples, check_output_path, save_samples

    check_output_path(Path(args.out))  # before any work: a path that cannot be written fails now
    check_plan_models(plan)
    check_fits(plan.models(), len(labels), None if not args.replay else f"--replay {args.replay}")
    images = generate(plan, labels, seed, scheduler, progress=sys.stderr.isatty() and not args.quiet)
    save_samples(Path(args.out), Samples(images, labels, plan, seed, scheduler, steps))
    print(f"{len(images)} images, plan {plan}, {scheduler} {steps} steps, seed {seed} -> {args.out}")
    return 0


def _is_latent(plan: Plan) -> bool:
    from nodes.diffusion.model_zoo import plan_models_kind

    return plan_models_kind(plan) == "latent"


def _latent_request(args: argparse.Namespace, plan: Plan) -> Samples:
    """The samples a latent generate asks for, images not yet made: the prompts given (or read),
    cycled over --n images, as a workload cycles them."""
    from emulation.scenario import read_prompts_file
    from nodes.diffusion.samples import Samples
    from nodes.planning.request import DEFAULT_GUIDANCE_SCALE
    from nodes.schema import check_scheduler_name

    if args.prompts and args.prompts_file:
        raise ValueError("give --prompts or --prompts-file, not both")
    if args.label is not None:
        raise ValueError(f"--label is for pixel models; plan {plan} runs latent pipelines (give prompts)")
    given = list(args.prompts) if args.prompts else (
        read_prompts_file(Path(args.prompts_file), "--prompts-file") if args.prompts_file else None)
    if given is None:
        raise ValueError(f"--plan {plan} runs latent pipelines: give --prompts or --prompts-file")
    negative = args.negative_prompts
    return Samples(images=None, labels=None, plan=plan, seed=args.seed,  # type: ignore[arg-type]
                   scheduler=check_scheduler_name(args.scheduler), steps=args.steps,
                   prompts=tuple(given[i % len(given)] for i in range(args.n)),
                   negative_prompts=None if not negative else tuple(negative[i % len(negative)]
                                                                    for i in range(args.n)),
                   guidance_scale=args.guidance if args.guidance is not None else DEFAULT_GUIDANCE_SCALE)


def _generate_latent(args: argparse.Namespace, asked: Samples) -> int:
    """A latent pipeline's plan on this machine: the first pipeline encodes, each stage denoises,
    the last decodes (analysis/latent_quality.py `Plans.generate`); where encoding and decoding are
    placed (zero-step stages, encode=each) does not change the images, so it is not needed here."""
    from dataclasses import replace

    from analysis.latent_quality import Plans
    from nodes.diffusion.samples import check_output_path, save_samples

    check_output_path(Path(args.out))
    stages = [(s.model, s.start, s.end) for s in asked.plan.denoising]
    images = Plans().generate(stages, asked.prompts, asked.seed, asked.scheduler, asked.steps,
                              asked.guidance_scale, asked.negative_prompts)
    save_samples(Path(args.out), replace(asked, images=images))
    print(f"{len(images)} images, plan {asked.plan}, {asked.scheduler} {asked.steps} steps, guidance "
          f"{asked.guidance_scale:g}, seed {asked.seed} -> {args.out}")
    return 0


def _quality(args: argparse.Namespace) -> int:
    if args.plans:
        return _quality_of_plans(args)
    if not args.samples:
        raise ValueError("quality needs a samples file or --plans")
    from nodes.diffusion.samples import load_samples

    samples = load_samples(Path(args.samples))  # a bad file is refused before the metrics are imported
    if samples.labels is None:
        return _latent_quality(args, samples)
    from analysis.plan_quality import is_reference_plan, large_reference
    from analysis.quality import quality_table

    reference = None
    if not args.no_reference and not is_reference_plan(samples.plan):
        reference = large_reference(samples.labels, samples.seed, samples.scheduler, samples.steps)
    table = quality_table(samples.images, samples.labels, reference)
    if "psnr_vs_large" in table:
        table["psnr_vs_large"] = finite(table["psnr_vs_large"])
    return _print_figures(table, args.json)


def _latent_quality(args: argparse.Namespace, samples: Samples) -> int:
    """A latent pipeline's images judged against the digit (and weight, slant) each prompt names;
    PSNR against the plan's first pipeline alone, from the same prompts and seed (the large model
    of a large-then-small split), unless the plan is that already or --no-reference."""
    from analysis.latent_quality import Plans, prompt_quality

    plans = Plans()
    first = samples.plan.denoising[0].model
    reference = None
    if not args.no_reference and {s.model for s in samples.plan.denoising} != {first}:
        reference = plans.generate([(first, 0, samples.steps)], samples.prompts, samples.seed,
                                   samples.scheduler, samples.steps, samples.guidance_scale,
                                   samples.negative_prompts)
    table = prompt_quality(samples.images, samples.prompts, reference)
    return _print_figures(table, args.json)


def _print_figures(table: dict, as_json: bool) -> int:
    """`quality`'s figures: JSON, or a name and value per line."""
    if as_json:
        print_json(table)
        return 0
    width = max(map(len, table)) + 2
    for key, value in table.items():
        print(f"{key:<{width}}{value:.4f}" if isinstance(value, float) else f"{key:<{width}}{value}")
    return 0


def _quality_of_plans(args: argparse.Namespace) -> int:
    from analysis.plan_quality import REFERENCE_MODEL, compare_plans
    from nodes.diffusion.generation import check_fits
    from nodes.planning.plan import parse_plan

    plans = [parse_plan(text, args.steps) for text in args.plans]
    check_fits([REFERENCE_MODEL, *(m for plan in plans for m in plan.models())], args.n)
    frame = compare_plans(args.plans, n=args.n, seed=args.seed, scheduler=args.scheduler, steps=args.steps)
    if args.record:
        _record_quality(frame, args)
    if args.json:
        print_json(json.loads(frame.to_json(orient="records")))
    else:
        print(frame.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    return 0


def _record_quality(frame, args: argparse.Namespace) -> None:
    from nodes.diffusion.architectures import DENOISER_NAMES
    from nodes.diffusion.model_cards import record
    from nodes.diffusion.model_zoo import PRETRAINED_DIR
    from nodes.planning.plan import parse_plan

    command = (
        f"edgestage quality --plans {' '.join(args.plans)} --n {args.n} --seed {args.seed} "
        f"--scheduler {args.scheduler} --steps {args.steps} --record"
    )
    for row in frame.to_dict(orient="records"):
        stages = parse_plan(row["plan"]).stages
        if len(stages) == 1 and stages[0].model in DENOISER_NAMES:
            facts = {k: v for k, v in row.items() if not (isinstance(v, float) and math.isnan(v))}
            record(PRETRAINED_DIR / stages[0].model, "quality", {**facts, "command": command})


QUALITY_TABLE_MIN_IMAGES = 100  # FID's small-sample bias swamps the gaps between plans below this


def add_quality_table_args(p: argparse.ArgumentParser) -> None:
    from emulation.cli.args import steps
    from nodes.schema import SCHEDULER_NAMES

    p.add_argument("--scheduler", choices=SCHEDULER_NAMES, required=True)
    p.add_argument("--steps", type=steps, required=True, help="T, steps of the schedule (1 to 1000)")
    p.add_argument("--n", type=_table_image_count, default=500,
                   help=f"images per plan (at least {QUALITY_TABLE_MIN_IMAGES}; the shipped tables: 500)")
    p.add_argument("--out", help="CSV to write (default: nodes/pretrained/quality-table/SCHEDULER-STEPS.csv)")
    p.add_argument("--cache-dir", help="per-plan figures: the only folder read and written "
                   "(default: the shipped figures, then $EDGESTAGE_CACHE or ~/.cache/edgestage/plan-quality)")
    p.add_argument("--json", action="store_true")


def _table_image_count(text: str) -> int:
    from emulation.cli.args import image_count

    value = image_count(text)
    if value < QUALITY_TABLE_MIN_IMAGES:
        raise argparse.ArgumentTypeError(f"at least {QUALITY_TABLE_MIN_IMAGES} images per plan, got {value} "
                                         "(FID over fewer is mostly its small-sample bias)")
    return value


def _quality_table(args: argparse.Namespace) -> int:
    from analysis.plan_quality import default_cache_dir
    from analysis.quality_table import SINGLE_MODELS, grid, measure_table, table_path, write_table
    from nodes.diffusion.generation import check_fits
    from nodes.diffusion.samples import check_output_path

    if args.out is not None and args.out.endswith(("/", "\\")):
        raise ValueError(f"--out {args.out}: give a file name (.csv), not a folder")
    out = Path(args.out) if args.out else table_path(args.scheduler, args.steps)
    cache_dir = Path(args.cache_dir) if args.cache_dir else None
    # every path this writes, tried before any work: the table, and where new per-plan figures land
    check_output_path(out, what="quality table")
    check_output_path((cache_dir or default_cache_dir()) / "probe.json", what="plan-quality cache file")
    check_fits(SINGLE_MODELS, args.n)
    plans = grid(args.steps)
    table = measure_table(args.scheduler, args.steps, n=args.n, cache_dir=cache_dir, progress=not args.quiet)
    write_table(table, out)
    if args.json:
        print_json({"table": str(out), "plans": json.loads(table.to_json(orient="records"))})
        return 0
    shown = table.drop(columns=["cache_file"])
    print(shown.to_string(index=False, na_rep="-", float_format=lambda v: f"{v:.4f}"))
    print(f"{len(plans)} plans, {args.scheduler} {args.steps} steps, {args.n} images each -> {out}")
    return 0
