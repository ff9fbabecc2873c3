"""`edgestage bench models | topology | fidelity | memory | planner | dilation`: benchmarks that
print figures (medians, with what produced them)."""

from __future__ import annotations

import argparse
import sys

from emulation.cli.args import Parser, positive_int, print_json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="benchmarks that print figures")
    bench = p.add_subparsers(dest="target", required=True, parser_class=Parser)
    b = bench.add_parser("models", help="per-step latency and resident memory of each model")
    b.add_argument("--repeats", type=positive_int, default=15)
    b.add_argument("--record", action="store_true", help="write the figures to the model cards")
    b.add_argument("--json", action="store_true")
    b.set_defaults(func=_bench_models)
    t = bench.add_parser("topology", help="a star of N devices (default 64, up to 1024): bring-up, "
                         "reachability and teardown times")
    t.add_argument("--devices", type=int, default=64)
    t.add_argument("--reps", type=int, default=3)
    t.add_argument("--all-pairs", action="store_true", help="check every pair (small networks)")
    t.add_argument("--json", action="store_true")
    t.set_defaults(func=_topology)
    f = bench.add_parser("fidelity", help="configured vs measured links over the target ranges")
    f.add_argument("--impairment", default="auto", choices=("auto", "netem", "userspace"))
    f.add_argument("--duration", type=float, default=2.0, help="seconds of iperf3 per direction "
                   "(emulated: K times longer under --dilation)")
    f.add_argument("--dilation", type=float, nargs="+", metavar="K",
                   help="measure the time-dilation links at each K (e.g. 1 10 30) instead")
    f.add_argument("--json", action="store_true")
    f.set_defaults(func=_fidelity)
    m = bench.add_parser("memory", help="node processes' memory: forked from the launcher vs one by one")
    m.add_argument("--devices", type=int, default=4)
    m.add_argument("--mode", choices=("shared", "separate", "both"), default="both")
    m.add_argument("--json", action="store_true")
    m.set_defaults(func=_memory)
    pl = bench.add_parser("planner", help="time of one elastic planning decision with N devices")
    pl.add_argument("--devices", type=positive_int, default=64)
    pl.add_argument("--decisions", type=positive_int, default=1000)
    pl.add_argument("--json", action="store_true")
    pl.set_defaults(func=_planner)
    d = bench.add_parser("dilation", help="N runs of a scenario, each choosing K afresh (auto): "
                         "overrun steps per run (root)")
    d.add_argument("scenario", nargs="?", default="scenarios/default.toml")
    d.add_argument("--runs", type=positive_int, default=10)
    d.add_argument("--out", help="directory for the runs (default: runs/bench-dilation-<time>)")
    d.add_argument("--json", action="store_true")
    d.set_defaults(func=_dilation)


def _dilation(args: argparse.Namespace) -> int:
    import time
    from pathlib import Path

    from emulation.bench_dilation import bench

    out = Path(args.out or f"runs/bench-dilation-{time.strftime('%Y%m%d-%H%M%S')}")

    def said(row: dict) -> None:
        print(f"run {row['run'] + 1} of {args.runs}: K = {row['k']:g} ({row['worst_model']} "
              f"{row['worst_real_step_ms']} ms a step under load), {row['overrun_steps']} overrun steps, "
              f"{row['status']}, {row['wall_s']:.0f} s", file=sys.stderr, flush=True)

    r = bench(args.scenario, args.runs, out, on_run=said)
    if args.json:
        print_json(r)
        return 0
    verdict = "met" if r["met"] else "NOT met"
    print(f"{args.scenario}: {args.runs} runs, K median {r['k_median']:g} (min {r['k_min']:g}, max "
          f"{r['k_max']:g}); {r['overrun_steps']} overrun steps in {r['runs_with_overrun']} runs: target "
          f"{r['target_overrun_steps']} {verdict}; median wall time per run {r['wall_s_median']:.0f} s; "
          f"runs in {out}")
    return 0


def _planner(args: argparse.Namespace) -> int:
    import os
    import platform

    if args.devices > 4096:
        raise ValueError(f"--devices must be at most 4096, got {args.devices}")
    from nodes.planning.planner_bench import decision_times  # checked first: a bad argument needs no import

    r = {**decision_times(args.devices, args.decisions), "machine": platform.node(),
         "cpus": os.cpu_count()}
    if args.json:
        print_json(r)
        return 0
    print(f"elastic plan_for, {r['devices']} devices, {r['candidates']} candidate plans meeting the floor, "
          f"{r['decisions']} decisions on {r['cpus']} CPUs:")
    print(f"  median {r['p50_s'] * 1e3:.2f} ms, p95 {r['p95_s'] * 1e3:.2f} ms, max {r['max_s'] * 1e3:.2f} ms "
          f"(target: median < 5 ms: {'met' if r['p50_s'] < 0.005 else 'NOT met'})")
    print(f"  plans chosen: {', '.join(r['plans'])}")
    return 0


def _bench_models(args: argparse.Namespace) -> int:
    if args.repeats <= 0:
        raise ValueError(f"--repeats must be positive, got {args.repeats}")
    import pandas as pd

    from nodes.diffusion.model_bench import bench_models

    rows = bench_models(repeats=args.repeats)
    if args.record:
        from nodes.diffusion.model_cards import record
        from nodes.diffusion.model_zoo import PRETRAINED_DIR

        for row in rows:
            command = f"edgestage bench models --repeats {args.repeats} --record"
            record(PRETRAINED_DIR / row["model"], "bench", {**row, "command": command})
    if args.json:
        print_json(rows)
    else:
        print(pd.DataFrame(rows).to_string(index=False))
    return 0


def _topology(args: argparse.Namespace) -> int:
    if not 1 <= args.devices <= 1024 or not 1 <= args.reps <= 100:
        raise ValueError("--devices must be in 1..1024 and --reps in 1..100")
    from emulation.bench_topology import bench

    try:
        r = bench(args.devices, args.reps, args.all_pairs)
    except RuntimeError as exc:  # unreachable hosts, something left behind, a host not configured
        print(f"edgestage: error: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 1
    if args.json:
        print_json(r)
        return 0

    def line(key: str, what: str) -> str:
        v = r[key]
        return f"{what} {v['median']:.2f} s (min {v['min']:.2f}, max {v['max']:.2f})"

    print(f"star with {r['devices']} devices ({r['backend']} backend), {r['reps']} reps, "
          f"medians: {line('up_s', 'bring-up')}; {line('reach_s', 'reachability')} "
          f"({r['reachability']}); {line('down_s', 'teardown')}; nothing left")
    verdict = "met" if r["met"] else "NOT met"
    print(f"bring-up + reachability median {r['up_and_reach_s']['median']:.2f} s: "
          f"target {r['target_s']:.0f} s {verdict}")
    return 0


def _fidelity(args: argparse.Namespace) -> int:
    if not 0 < args.duration <= 60:
        raise ValueError(f"--duration: {args.duration} is outside (0, 60] seconds")
    for k in args.dilation or []:
        if not 1 <= k <= 100:  # nan fails too
            raise ValueError(f"--dilation: {k} is outside 1..100")
    from emulation.bench_fidelity import summary, sweep
    from emulation.calibration import format_table

    if args.dilation:
        rows = [row for k in args.dilation for row in sweep(args.impairment, args.duration, k)]
    else:
        rows = sweep(args.impairment, args.duration)
    if args.json:
        print_json({"rows": rows, "inside_targets": summary(rows)})
    else:
        print(format_table(rows))
        print("inside targets: " + ", ".join(f"{k[3:]} {v}" for k, v in summary(rows).items()))
    return 0


def _memory(args: argparse.Namespace) -> int:
    if not 1 <= args.devices <= 64:
        raise ValueError(f"--devices must be in 1..64, got {args.devices}")
    import json

    import pandas as pd

    from nodes.runtime.memory_bench import MODES, bench_memory

    rows = bench_memory(args.devices, MODES if args.mode == "both" else (args.mode,))
    if args.json:
        print(json.dumps(rows, indent=1))
    else:
        print(pd.DataFrame(rows).set_index("mode").T.to_string())
    return 0
