"""`edgestage run | sweep | compare | campaign | report | calibrate`: the emulated network's
commands, thin layers over emulation.runner.run_scenario, emulation.sweep.run_sweep,
emulation.compare.run_compare, emulation.campaign.run_campaign, analysis.report.write_report and
emulation.calibration.calibrate; the one place a run's results are printed.

With --json, each prints one JSON document on stdout instead of its text (the same results, and
where they lie); what it says on the way (K, each finished run) then goes to stderr with the
progress and the logs, so that stdout parses whole."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from emulation.cli.args import created_by, hand_to_sudo_user, plain, positive_int, print_json

if TYPE_CHECKING:
    import pandas as pd

    from emulation.campaign import Campaign
    from emulation.runner import RunResult


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run a scenario on the emulated network (root)")
    p.add_argument("scenario", help="scenario file (.toml), e.g. scenarios/default.toml")
    p.add_argument("--out", help="run directory to create (default: runs/<scenario>-<time>)")
    p.add_argument("--no-quality", action="store_true", help="skip FID/KID/class accuracy")
    p.add_argument("--check", action="store_true", help="validate the scenario and exit")
    p.add_argument("--strict", action="store_true",
                   help="exit 1 if any measured request failed or any strategy's profiled compute "
                        "overran (without it, only if every measured one failed; the run directory is kept)")
    _add_json(p, "the run's summary and its directory")
    p.set_defaults(func=_run)
    p = sub.add_parser("sweep", help="one run per value of a scenario field, a table across them (root)")
    p.add_argument("scenario", help="scenario file (.toml)")
    p.add_argument("--set", required=True, dest="assignment", metavar="FIELD=V1,V2,...",
                   help="a dotted scenario field and its values, e.g. topology.backhaul.bw_mbit=2,10,50")
    p.add_argument("--out", help="sweep directory to create (default: runs/<scenario>-sweep-<time>)")
    p.add_argument("--no-quality", action="store_true", help="skip FID/KID/class accuracy")
    _add_json(p, "the sweep's table and its directory")
    p.set_defaults(func=_sweep)
    p = sub.add_parser("compare", help="every strategy alone on the same workload, and an oracle; "
                       "one table and one figure (root)")
    p.add_argument("scenario", help="scenario file (.toml), e.g. scenarios/bench/burst.toml")
    p.add_argument("--out", help="compare directory to create (default: runs/<scenario>-compare-<time>)")
    p.add_argument("--no-oracle", action="store_true", help="only the scenario's strategies")
    p.add_argument("--with", dest="with_file", metavar="FILE", help="a TOML file of [strategies.*] "
                   "to run beside the scenario's (your own strategy on a benchmark scenario)")
    p.add_argument("--only", metavar="NAME,...", help="run only these strategies (and the oracle)")
    p.add_argument("--again", metavar="RUN,...", help="in the existing compare directory --out, run "
                   "these again (at its K), then its table and figure")
    p.add_argument("--targets", metavar="FILE", help="benchmark targets to check on the table (TOML; "
                   "default: scenarios/bench-targets.toml, or with --again the compare's own)")
    _add_json(p, "the table, paired ratios, targets and the compare directory")
    p.set_defaults(func=_compare)
    p = sub.add_parser("campaign", help="a grid of fields x each strategy alone x repetitions with their "
                       "own seeds, a run directory each, one index; resumes an interrupted one (root)")
    p.add_argument("scenario", help="scenario file (.toml)")
    p.add_argument("--set", action="append", default=[], dest="assignments", metavar="FIELD=V1,V2,...",
                   help="a dotted scenario field and its values; repeated, the grid is their product")
    p.add_argument("--strategies", choices=("together", "each"), default="together",
                   help="each: every strategy alone, a run each (as compare runs them); together (default): "
                        "the scenario's strategies interleaved in every run")
    p.add_argument("--repetitions", type=positive_int, default=1,
                   help="runs of each configuration on fresh networks, each with its own seeds")
    p.add_argument("--out", required=True, help="campaign directory: a new one, or this campaign's own to "
                   "resume it (its completed runs are kept)")
    p.add_argument("--check", action="store_true",
                   help="validate every run and print the plan (and what OUT has done); run nothing")
    p.add_argument("--no-quality", action="store_true", help="skip FID/KID/class accuracy")
    p.add_argument("--cluster", metavar="ADDRESS",
                   help="run on a Dask cluster: its scheduler's tcp://HOST:PORT (one worker per machine, "
                   "started with --nthreads 1 --resources network=1), or local:N "
                   "for N workers on this machine (docs/experiments.md: campaigns on several machines)")
    _add_json(p, "the index (with --check: the plan) and the campaign directory")
    p.set_defaults(func=_campaign)
    p = sub.add_parser("report", help="(re)write a run's or a campaign's report: report.md, report.html, "
                       "tables/ and plots/")
    p.add_argument("run_dir", help="a run directory, e.g. runs/default-20261127-120000, or a campaign "
                   "directory (one with a campaign.json): the report across its runs")
    p.add_argument("--no-quality", action="store_true",
                   help="an unfinished (killed) run is finished without FID/KID/class accuracy")
    _add_json(p, "the report's path and the run or campaign directory")
    p.set_defaults(func=_report)
    p = sub.add_parser("calibrate", help="measure every link of a scenario's topology")
    p.add_argument("scenario", help="scenario TOML file (its [topology] table)")
    p.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    p.add_argument("--duration", type=float, default=2.0, help="seconds per iperf3 run")
    p.add_argument("--impairment", choices=("auto", "netem", "userspace"),
                   help="override the scenario's backend")
    p.set_defaults(func=_calibrate)


def _add_json(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--json", action="store_true",
                   help=f"print one JSON document ({what}) on stdout instead of text; progress and "
                        "logs stay on stderr")


def _notes(args: argparse.Namespace) -> TextIO:
    """Where a command's remarks on the way go: stdout beside its text, stderr under --json (whose
    stdout is the one document)."""
    return sys.stderr if args.json else sys.stdout


def records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """A table's rows as JSON holds them: missing values (NaN, NA, NaT) null, numbers plain."""
    return plain(frame.astype(object).where(frame.notna(), None).to_dict(orient="records"))


def _run(args: argparse.Namespace) -> int:
    from emulation.scenario import load_scenario

    scenario = load_scenario(args.scenario)  # ValueError -> one line, exit 2, nothing started
    requests = scenario.workload.requests * scenario.run.repetitions
    if args.check and args.json:
        print_json({"scenario": args.scenario, "ok": True, "strategies": list(scenario.strategies),
                    "requests": requests})
        return 0
    if args.check:
        print(f"{args.scenario}: ok ({len(scenario.strategies)} strategies, {requests} requests)")
        return 0
    # the runner (torch, pandas) only for a run: --check needs none of it
    from emulation.dilation import choose_dilation
    from emulation.runner import check_can_run, default_out_dir, run_scenario

    out = Path(args.out) if args.out else default_out_dir(scenario)
    check_can_run(out)  # before measuring anything for "auto"
    dilation = choose_dilation(scenario)
    if dilation.k > 1 or scenario.run.time_dilation == "auto":
        print(f"time dilation K = {dilation.k:g}: {dilation.how}", file=_notes(args))
    if dilation.native_hosts_note:
        print(f"note: {dilation.native_hosts_note}", file=_notes(args))
    shown = (lambda result: print_json(run_document(result))) if args.json else _print_run
    with _owned_by_sudo_user(out):
        result = run_scenario(scenario, out, progress=not args.quiet, quality=not args.no_quality,
                              on_finish=shown, dilation=dilation)
    return _run_status(result, args.strict)


@contextlib.contextmanager
def _owned_by_sudo_user(out: Path) -> Iterator[None]:
    """Under sudo, the output directory `out` (with the parents the command makes) goes to the user
    who ran sudo when the command ends: what it created, also when it fails or is interrupted; a
    directory that was there before (`compare --again`, `report`) only once the command has
    accepted it as its own, so that a mistyped path never changes hands."""
    top = created_by(out)  # before anything exists: only what this command makes changes hands
    existed, finished = top.exists(), False
    try:
        yield
        finished = True
    finally:
        if finished or not existed:
            try:
                hand_to_sudo_user(top)
            except OSError as exc:  # the results are there; say why the user cannot own them
                print(f"edgestage: warning: {top} stays root's: {exc}", file=sys.stderr)


def measured_outcomes(requests: pd.DataFrame) -> tuple[int, int]:
    """(measured requests, how many of them failed): warm-up requests only open connections and do
    not count; a request's outcome is on its first row."""
    from analysis.summary import per_request

    if requests.empty:
        return 0, 0
    measured = per_request(requests[requests["warmup"].ne(True)])
    return len(measured), int((measured["outcome"] != "ok").sum())


def _run_status(result: RunResult, strict: bool) -> int:
    """1, with one line on stderr for each reason, if no measured request succeeded; with --strict
    also if any failed or any strategy's profiled compute overran.  0 otherwise."""
    from analysis.summary import overrun_line

    measured, failed = measured_outcomes(result.requests)
    lines = []
    if measured == 0:  # nothing to report on is a failed run too
        lines.append("edgestage: the run recorded no measured request")
    elif failed == measured:
        lines.append(f"edgestage: all {measured} measured requests failed (summary.json: failure_reasons)")
    elif strict and failed:
        lines.append(f"edgestage: --strict: {failed} of {measured} measured requests failed")
    overran = overrun_line(result.summary.get("strategies") or {}) if strict else None
    if overran is not None:  # last: scripts read the overrun from the last line
        lines.append(f"edgestage: --strict: profiled compute {overran}")
    for line in lines:
        print(line, file=sys.stderr)
    return 1 if lines else 0


def _print_run(result: RunResult) -> None:
    """The run's table, how far its figures hold, its nodes' memory, and where it lies; also for
    an interrupted or failed run."""
    from analysis.summary import format_accuracy, format_memory, format_table

    summary = result.summary
    print(format_table(summary["strategies"], title=f"{summary['scenario']}: {summary['status']}"))
    for line in _paired_lines(summary.get("paired") or [], "on the same rounds (one request through each)"):
        print(line)
    k = (result.manifest.get("clock") or {}).get("time_dilation") or 1
    if k > 1:
        print(f"times are emulated seconds: time dilation K = {k:g} (the run took K times longer)")
    print(format_accuracy(summary["accuracy"]))
    print(format_memory(summary["node_memory"]))
    print(f"run directory: {result.run_dir}", flush=True)


def run_document(result: RunResult) -> dict[str, Any]:
    """`run --json`: where the run lies, how it ended, its K and its whole summary.json (the
    per-strategy table, accuracy, node memory); also for an interrupted or failed run."""
    summary = result.summary
    return plain({"run_dir": str(result.run_dir), "scenario": summary.get("scenario"),
                  "status": summary.get("status"),
                  "time_dilation": (result.manifest.get("clock") or {}).get("time_dilation") or 1,
                  "summary": summary})


def _compare(args: argparse.Namespace) -> int:
    import time

    from analysis.compare_tables import compare_targets
    from emulation.compare import rerun, run_compare, variants

    if args.targets or not args.again:  # a bad targets file: one line naming file and entry, exit 2
        compare_targets(args.targets)
    only = [n.strip() for n in args.only.split(",")] if args.only else None
    if args.again and (args.with_file or only):
        raise ValueError("--again takes the compare's own strategies: leave out --with and --only")
    # every run validated first: exit 2
    runs = variants(args.scenario, not args.no_oracle, args.with_file, only)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = Path(args.out) if args.out else Path("runs") / f"{Path(args.scenario).stem}-compare-{stamp}"
    done = lambda name, run: print(f"done: {name} -> {run}", file=_notes(args), flush=True)  # noqa: E731
    if args.again and not args.out:
        raise ValueError("--again needs --out: the compare directory to run them again in")
    with _owned_by_sudo_user(out):
        if args.again:
            table = rerun(args.scenario, out, [n.strip() for n in args.again.split(",")], not args.quiet,
                          done, targets=args.targets)
        else:
            print(f"{len(runs)} runs: " + ", ".join(f"{n} ({p})" if p else n for n, p, _ in runs),
                  file=_notes(args))
            table = run_compare(args.scenario, out, oracle=not args.no_oracle, progress=not args.quiet,
                                on_run=done, targets=args.targets, with_file=args.with_file, only=only)
    meta = json.loads((out / "compare.json").read_text())
    if args.json:
        print_json(compare_document(out, meta, table))
        return 0
    print(f"times are emulated seconds (time dilation K = {meta['time_dilation']:g}); quality from the "
          "quality table; oracle: per request the fastest candidate meeting the floor")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    for line in _paired_lines(meta.get("paired") or []):
        print(line)
    for check in meta.get("targets", []):
        state = {True: "met", False: "NOT met", None: "-"}[check["met"]]
        value = check["value"]
        shown = f"{value:.3g}" if isinstance(value, float) else "-" if value is None else str(value)
        print(f"  {check['check']}: {shown} (target {check['target']}): {state}")
    print(f"targets: {meta['targets_file']}")
    print(f"compare directory: {out} (compare.csv, compare_paired.csv, compare.png)")
    return 0


def compare_document(out: Path, meta: dict[str, Any], table: pd.DataFrame) -> dict[str, Any]:
    """`compare --json`: the table's rows, the paired ratios, each target checked, and what they
    stand on (K, the runs, the runs repeated with --again, the targets file)."""
    return plain({"compare_dir": str(out), "scenario": meta.get("scenario"),
                  "time_dilation": meta["time_dilation"], "how": meta.get("how"), "runs": meta.get("runs"),
                  "repeated": meta.get("repeated", []), "table": records(table),
                  "paired": meta.get("paired") or [], "targets": meta.get("targets", []),
                  "targets_file": meta.get("targets_file")})


def _paired_lines(paired: list[dict], on: str = "on the same requests") -> list[str]:
    """Each strategy's mean latency over the reference's on the same requests, with its interval."""
    if not paired:
        return []
    out = [f"mean latency against {paired[0]['reference']} {on} (paired, 95 % CI, Wilcoxon signed-rank p):"]
    for row in paired:
        if row["strategy"] == row["reference"]:
            continue
        ratio, low, high, p = (row.get(k) for k in ("latency_mean_ratio", "latency_mean_ratio_ci_low",
                                                    "latency_mean_ratio_ci_high", "wilcoxon_p"))
        shown = "-" if ratio is None else f"{ratio:.3g}x"
        if low is not None and high is not None:
            shown += f" ({low:.3g}-{high:.3g})"
        if p is not None:
            shown += f", p = {p:.2g}"
        note = f" [{row['note']}]" if row.get("note") else ""
        out.append(f"  {row['strategy']}: {shown}, n = {row['n_pairs']}{note}")
    return out


def _report(args: argparse.Namespace) -> int:
    from analysis.report import write_report

    if (Path(args.run_dir) / "campaign.json").is_file():  # a campaign's report, not a run's
        from analysis.campaign_report import write_campaign_report

        with _owned_by_sudo_user(Path(args.run_dir)):
            report = write_campaign_report(args.run_dir)  # ValueError (no completed run...): exit 2
        if args.json:
            print_json(plain({"campaign_dir": args.run_dir, "report": str(report)}))
        else:
            print(report)
        return 0
    manifest = Path(args.run_dir) / "manifest.json"
    try:
        unfinished = json.loads(manifest.read_text()).get("status") == "running"
    except (OSError, ValueError, AttributeError):
        unfinished = False  # write_report names what is missing
    finished = None
    with _owned_by_sudo_user(Path(args.run_dir)):  # the run directory, which the report rewrites
        if unfinished:  # killed before it wrote its tables: they are rebuilt from the records first
            from emulation.runner import finish_killed_run

            result = finish_killed_run(args.run_dir, quality=not args.no_quality)
            finished = {k: result.summary["requests"][k] for k in ("recorded", "planned")}
            print(f"{args.run_dir}: unfinished run (its runner is gone) finished from its records: "
                  f"{finished['recorded']} of {finished['planned']} requests recorded", file=_notes(args))
        report = write_report(args.run_dir)  # ValueError on a directory that holds no run: exit 2
    if args.json:  # finished_from_records: null, or the requests recorded and planned
        print_json(plain({"run_dir": args.run_dir, "report": str(report), "finished_from_records": finished}))
    else:
        print(report)
    return 0


def _sweep(args: argparse.Namespace) -> int:
    import time

    from emulation.sweep import parse_assignment, run_sweep, variants

    field, values = parse_assignment(args.assignment)
    variants(args.scenario, field, values)  # every value checked before anything starts
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = Path(args.out) if args.out else Path("runs") / f"{Path(args.scenario).stem}-sweep-{stamp}"
    with _owned_by_sudo_user(out):
        table = run_sweep(args.scenario, field, values, out, quality=not args.no_quality,
                          progress=not args.quiet)
    if args.json:
        meta = json.loads((out / "sweep.json").read_text())
        print_json(plain({"sweep_dir": str(out), "field": field, "values": values,
                          "time_dilation": meta.get("time_dilation"), "how": meta.get("how"),
                          "table": records(table)}))
        return 0
    print(table.drop(columns="run_dir").to_string(index=False))
    print(f"sweep directory: {out} (sweep.csv, sweep.png, one run directory per value)")
    return 0


def _campaign(args: argparse.Namespace) -> int:
    from emulation.campaign import completed_runs, plan_campaign, run_campaign
    from emulation.campaign_cluster import parse_cluster, run_campaign_on_cluster
    from emulation.sweep import parse_assignment

    cluster = parse_cluster(args.cluster) if args.cluster else None  # a bad address: exit 2
    grid = [parse_assignment(a) for a in args.assignments]
    campaign = plan_campaign(args.scenario, grid, each_strategy=args.strategies == "each",
                             repetitions=args.repetitions)  # every run validated: exit 2, nothing written
    out = Path(args.out)
    done = set(completed_runs(campaign, out))  # OUT holding another campaign: exit 2
    shape = " x ".join([*(f"{len(v)} {f}" for f, v in grid),
                        *(["each strategy"] if args.strategies == "each" else []),
                        f"{args.repetitions} repetition{'s' if args.repetitions > 1 else ''}"])
    if args.check and args.json:
        print_json(campaign_plan_document(campaign, out, done))
        return 0
    print(f"campaign: {len(campaign.runs)} runs ({shape}); {len(done)} already completed in {out}",
          file=_notes(args))
    if args.check:
        for run in campaign.runs:
            seeds = ", ".join(f"{k}.seed {v}" for k, v in run.seeds.items())
            print(f"  {run.name}: {seeds}{' (completed)' if run.name in done else ''}")
        return 0
    resuming = (out / "campaign.json").is_file()  # accepted as this campaign's: it may change hands
    finished = lambda name, run: print(f"done: {name} -> {run}", file=_notes(args), flush=True)  # noqa: E731
    try:
        with _owned_by_sudo_user(out):
            if cluster is None:
                table = run_campaign(campaign, out, quality=not args.no_quality, progress=not args.quiet,
                                     on_run=finished)
            else:
                table = run_campaign_on_cluster(campaign, out, cluster, quality=not args.no_quality,
                                                progress=not args.quiet, on_run=finished)
    except BaseException:
        if resuming:  # its definition matched: the runs this try made go to the user, finished or not
            with contextlib.suppress(OSError):
                hand_to_sudo_user(out)
        raise
    counts = table["status"].value_counts()
    if args.json:
        print_json(plain({"campaign_dir": str(out), "index_file": str(out / "index.csv"), "runs": len(table),
                          "already_completed": len(done), "statuses": counts.to_dict(),
                          "index": records(table)}))
        return 0
    print(f"{len(table)} runs: " + ", ".join(f"{n} {status}" for status, n in counts.items()))
    print(f"campaign index: {out / 'index.csv'} (and campaign.json)")
    return 0


def campaign_plan_document(campaign: Campaign, out: Path, done: set[str]) -> dict[str, Any]:
    """`campaign --check --json`: every run planned, with what it varies, its seeds and whether OUT
    has it completed already."""
    plan = [{"name": r.name, "fields": r.fields, "strategy": r.strategy, "repetition": r.repetition,
             "seeds": r.seeds, "completed": r.name in done} for r in campaign.runs]
    return plain({"campaign_dir": str(out), "scenario": campaign.scenario, "runs": len(plan),
                  "already_completed": len(done), "plan": plan})


def _calibrate(args: argparse.Namespace) -> int:
    from topologies.spec import load_topology

    if not 0 < args.duration <= 60:  # (nan is outside too)
        raise ValueError(f"--duration: {args.duration} is outside (0, 60] seconds")
    spec = load_topology(args.scenario)
    from emulation.calibration import calibrate, format_table

    if args.impairment:
        spec = spec.model_copy(update={"impairment": args.impairment})
    rows = calibrate(spec, duration=args.duration)
    if args.json:
        print(json.dumps(rows, indent=1))
    else:
        print(format_table(rows))
    return 0
