"""The `edgestage` command line: a thin layer over the Python calls of each folder.

Bad input anywhere (a ValueError, including pydantic's) ends in one line on stderr and exit 2, and
is found before anything is written.  Ctrl-C, at any point, ends in one line and exit 130 (what
runs below cleans up on the way: the runner takes its network down, a samples file is not left
half-written).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

SUMMARY = "edgestage: multi-stage collaborative diffusion over emulated edge networks"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2, as for every bad input
        self.exit(2, f"edgestage: error: {message}\n")


def _print_json(value: object) -> None:
    print(json.dumps(value, indent=2, default=_json_default, allow_nan=False))


def _json_default(value: object) -> object:
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _finite(value: float | None) -> float | None:
    return value if value is None or math.isfinite(value) else None


# --- doctor -------------------------------------------------------------------------------------
def _doctor(args: argparse.Namespace) -> int:
    from emulation.doctor import doctor_report, format_report

    report = doctor_report()
    _print_json(report) if args.json else print(format_report(report))
    return 0


# --- train --------------------------------------------------------------------------------------
def _train(args: argparse.Namespace) -> int:
    from nodes.diffusion.model_cards import render_card
    from nodes.diffusion.model_zoo import PRETRAINED_DIR
    from nodes.diffusion.samples import check_output_path
    from nodes.diffusion.training import train_classifier, train_denoiser

    out = Path(args.out) if args.out else PRETRAINED_DIR / args.model
    if out.exists() and not out.is_dir():
        raise ValueError(f"cannot write model directory {out}: it is a file")
    check_output_path(out / "config.json", what="model directory file")
    facts = train_classifier(out) if args.model == "classifier" else train_denoiser(args.model, out)
    render_card(out)
    print(f"trained {args.model}: {facts['parameters']:,} parameters in {facts['wall_time_s']} s -> {out}")
    return 0


# --- generate -----------------------------------------------------------------------------------
def _generate(args: argparse.Namespace) -> int:
    from nodes.diffusion.generation import check_fits, check_plan_models, generate, request_labels
    from nodes.diffusion.samples import Samples, check_output_path, load_samples, save_samples
    from nodes.diffusion.schedulers import check_scheduler_name
    from nodes.plan import parse_plan

    if args.out.endswith(("/", "\\")):
        raise ValueError(f"--out {args.out}: give a file name (.npz), not a folder")
    if args.replay:
        old = load_samples(Path(args.replay))
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
        labels = request_labels(args.n, args.label)
        seed, scheduler, steps = args.seed, check_scheduler_name(args.scheduler), args.steps
    check_output_path(Path(args.out))  # before any work: a path that cannot be written fails now
    check_plan_models(plan)
    check_fits(plan.models(), len(labels), None if not args.replay else f"--replay {args.replay}")
    images = generate(plan, labels, seed, scheduler, progress=sys.stderr.isatty())
    save_samples(Path(args.out), Samples(images, labels, plan, seed, scheduler, steps))
    print(f"{len(images)} images, plan {plan}, {scheduler} {steps} steps, seed {seed} -> {args.out}")
    return 0


# --- quality ------------------------------------------------------------------------------------
def _quality(args: argparse.Namespace) -> int:
    if args.plans:
        return _quality_of_plans(args)
    if not args.samples:
        raise ValueError("quality needs a samples file or --plans")
    from analysis.compare import is_reference_plan, large_reference
    from analysis.quality import quality_table
    from nodes.diffusion.samples import load_samples

    samples = load_samples(Path(args.samples))
    reference = None
    if not args.no_reference and not is_reference_plan(samples.plan):
        reference = large_reference(samples.labels, samples.seed, samples.scheduler, samples.steps)
    table = quality_table(samples.images, samples.labels, reference)
    if "psnr_vs_large" in table:
        table["psnr_vs_large"] = _finite(table["psnr_vs_large"])
    if args.json:
        _print_json(table)
    else:
        for key, value in table.items():
            print(f"{key:<16} {value:.4f}" if isinstance(value, float) else f"{key:<16} {value}")
    return 0


def _quality_of_plans(args: argparse.Namespace) -> int:
    from analysis.compare import REFERENCE_MODEL, compare_plans
    from nodes.diffusion.generation import check_fits
    from nodes.plan import parse_plan

    plans = [parse_plan(text, args.steps) for text in args.plans]
    check_fits([REFERENCE_MODEL, *(m for plan in plans for m in plan.models())], args.n)
    frame = compare_plans(args.plans, n=args.n, seed=args.seed, scheduler=args.scheduler, steps=args.steps)
    if args.record:
        _record_quality(frame, args)
    if args.json:
        _print_json(json.loads(frame.to_json(orient="records")))
    else:
        print(frame.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    return 0


def _record_quality(frame, args: argparse.Namespace) -> None:
    from nodes.diffusion.architectures import DENOISER_NAMES
    from nodes.diffusion.model_cards import record
    from nodes.diffusion.model_zoo import PRETRAINED_DIR
    from nodes.plan import parse_plan

    command = (
        f"edgestage quality --plans {' '.join(args.plans)} --n {args.n} --seed {args.seed} "
        f"--scheduler {args.scheduler} --steps {args.steps} --record"
    )
    for row in frame.to_dict(orient="records"):
        stages = parse_plan(row["plan"]).stages
        if len(stages) == 1 and stages[0].model in DENOISER_NAMES:
            facts = {k: v for k, v in row.items() if not (isinstance(v, float) and math.isnan(v))}
            record(PRETRAINED_DIR / stages[0].model, "quality", {**facts, "command": command})


# --- bench --------------------------------------------------------------------------------------
def _bench_models(args: argparse.Namespace) -> int:
    import pandas as pd

    from nodes.diffusion.model_bench import bench_models

    if args.repeats <= 0:
        raise ValueError(f"--repeats must be positive, got {args.repeats}")
    rows = bench_models(repeats=args.repeats)
    if args.record:
        from nodes.diffusion.model_cards import record
        from nodes.diffusion.model_zoo import PRETRAINED_DIR

        for row in rows:
            command = f"edgestage bench models --repeats {args.repeats} --record"
            record(PRETRAINED_DIR / row["model"], "bench", {**row, "command": command})
    if args.json:
        _print_json(rows)
    else:
        print(pd.DataFrame(rows).to_string(index=False))
    return 0


# --- parser -------------------------------------------------------------------------------------


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def _positive_int(text: str) -> int:
    value = _integer(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {value}")
    return value


def _image_count(text: str) -> int:
    from nodes.diffusion.generation import MAX_IMAGES  # torch: imported only where --n is given

    value = _positive_int(text)
    if value > MAX_IMAGES:
        raise argparse.ArgumentTypeError(f"at most {MAX_IMAGES:,} images in one call, got {value:,} "
                                         "(each model takes them all as one batch)")
    return value


def _seed(text: str) -> int:
    from nodes.schema import MAX_SEED  # pydantic: imported after the parser is up (see main)

    value = _integer(text)
    if not 0 <= value < MAX_SEED:
        raise argparse.ArgumentTypeError(f"must lie in 0 to 2**63 - 1, got {text}")
    return value


def _steps(text: str) -> int:
    from nodes.schema import MAX_STEPS

    value = _positive_int(text)
    if value > MAX_STEPS:
        raise argparse.ArgumentTypeError(f"at most {MAX_STEPS} (the models' noise schedule has "
                                         f"{MAX_STEPS} timesteps), got {value}")
    return value


def _add_sampling_args(p: argparse.ArgumentParser, n_default: int) -> None:
    from nodes.schema import SCHEDULER_NAMES  # nodes.diffusion.schedulers' names, without diffusers

    p.add_argument("--n", type=_image_count, default=n_default, help="number of images")
    p.add_argument("--seed", type=_seed, default=0, help="0 to 2**63 - 1")
    p.add_argument("--scheduler", choices=SCHEDULER_NAMES, default="ddim")
    p.add_argument("--steps", type=_steps, default=50, help="T, steps of the schedule (at most 1000)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="edgestage", description=SUMMARY)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("doctor", help="what this machine can do for the testbed")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_doctor)

    p = sub.add_parser("train", help="reproduce an embedded model (deterministic)")
    p.add_argument("model", choices=("small", "medium", "large", "classifier"))
    p.add_argument("--out", help="model directory to write (default: the shipped one)")
    p.set_defaults(func=_train)

    p = sub.add_parser("generate", help="generate images along a plan, locally")
    p.add_argument("--plan", help="MODEL:START-END,... e.g. large:0-30,small:30-50")
    _add_sampling_args(p, n_default=64)
    p.add_argument("--label", type=int, help="digit 0-9 (default: cycle through 0-9)")
    p.add_argument("--replay", help="regenerate the images of this samples file")
    p.add_argument("--out", required=True, help="samples file to write (.npz)")
    p.set_defaults(func=_generate)

    p = sub.add_parser("quality", help="FID, KID, class accuracy and PSNR vs large-only")
    p.add_argument("samples", nargs="?", help="samples file (.npz)")
    p.add_argument("--plans", nargs="+", help="generate and compare these plans instead")
    _add_sampling_args(p, n_default=200)
    p.add_argument("--no-reference", action="store_true", help="skip PSNR vs large-only")
    p.add_argument("--record", action="store_true", help="write single-model figures to model cards")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_quality)

    p = sub.add_parser("bench", help="benchmarks that print figures")
    bench = p.add_subparsers(dest="target", required=True, parser_class=_Parser)
    b = bench.add_parser("models", help="per-step latency and resident memory of each model")
    b.add_argument("--repeats", type=_positive_int, default=15)
    b.add_argument("--record", action="store_true", help="write the figures to the model cards")
    b.add_argument("--json", action="store_true")
    b.set_defaults(func=_bench_models)
    from emulation.benchmarks import register_bench

    register_bench(bench)

    from emulation import calibration, deploy, run_command

    calibration.register_cli(sub)
    run_command.register_cli(sub)
    deploy.register_cli(sub)
    return parser


def _interrupt(_signum: int, frame: FrameType | None) -> None:
    """Ctrl-C as KeyboardInterrupt, but never inside an import: one cut short leaves torch or
    numpy half-initialised, so that what surfaces is a RecursionError or ImportError with a
    traceback, or the interpreter kills itself with SIGINT at exit.  Inside an import the signal
    is sent again 50 ms later, until the import is done."""
    while frame is not None:
        if frame.f_code.co_filename.startswith("<frozen importlib"):
            threading.Timer(0.05, os.kill, (os.getpid(), signal.SIGINT)).start()
            return
        frame = frame.f_back
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:  # not where SIGINT is ignored
        signal.signal(signal.SIGINT, _interrupt)
    try:  # Ctrl-C while the parser imports what it needs is an interrupt like any other
        try:
            parser = build_parser()
            args = parser.parse_args(argv)
            return int(args.func(args) or 0)
        except ValueError as exc:  # bad input: scenario, plan, samples file, argument value
            text = str(exc).strip()
            first = text.splitlines()[0] if text else type(exc).__name__
            print(f"edgestage: error: {first}", file=sys.stderr)
            return 2
    except KeyboardInterrupt:
        # everything below has cleaned up on the way out; a second Ctrl-C while the interpreter
        # shuts down ends it at once (the default action), not with a traceback
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        print("edgestage: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
