"""`edgestage deploy FILE` and `edgestage deploy-keys FILE`: the node processes of a deploy file
on this machine (no Mininet), over emulation.deploy.

With --json each prints one JSON document on stdout instead of its text, as the other commands
that print results do (emulation/cli/__init__.py): `deploy --check` the file's hosts, `deploy`
where its run directory is, the hosts it started (their pids) and, where devices ran here, the
run's summary.json; `deploy-keys` where each host's keys are.  What it says on the way (the hosts
started, "serving") then goes to stderr, so that stdout parses whole."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from typing import TYPE_CHECKING, Any, TextIO

from emulation.cli.args import plain, print_json, seconds

if TYPE_CHECKING:
    from emulation.deploy import Deployment


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("deploy", help="run the node processes of a deploy file on this machine (no Mininet)")
    p.add_argument("file", help="deploy file (.toml), e.g. scenarios/deploy-loopback.toml")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--host", action="append", help="a host of deploy.hosts to start here (repeatable)")
    which.add_argument("--all", action="store_true", help="every host, on this machine (loopback test)")
    which.add_argument("--check", action="store_true", help="validate the file and print the hosts")
    p.add_argument("--timeout", type=seconds, help="seconds to wait for the devices' workloads")
    _add_json(p, "with --check the hosts; else the run directory, the hosts started here and, where "
                 "devices ran here, the run's summary")
    p.set_defaults(func=_deploy)

    p = sub.add_parser("deploy-keys", help="a CURVE key pair per host of a deploy file, in deploy.keys_dir")
    p.add_argument("file", help="deploy file (.toml) with deploy.keys_dir set")
    _add_json(p, "the keys folder and each host's key files")
    p.set_defaults(func=_deploy_keys)


def _add_json(p: argparse.ArgumentParser, what: str) -> None:
    # the words of runs.py's --json, so that every command's help reads alike
    p.add_argument("--json", action="store_true",
                   help=f"print one JSON document ({what}) on stdout instead of text; progress and "
                        "logs stay on stderr")


def _notes(args: argparse.Namespace) -> TextIO:
    """Where the remarks on the way go: stdout beside the text, stderr under --json."""
    return sys.stderr if args.json else sys.stdout


def _deploy_keys(args: argparse.Namespace) -> int:
    from emulation.deploy import load_deployment, make_keys
    from nodes.runtime.security import key_paths

    deployment = load_deployment(args.file)
    directory = make_keys(deployment)
    if args.json:
        keys = {host: dict(zip(("public", "secret"), key_paths(directory, host), strict=True))
                for host in deployment.deploy.hosts}
        print_json(plain({"keys_dir": directory, "hosts": keys}))
        return 0
    print(f"{len(deployment.deploy.hosts)} key pairs -> {directory}: copy public/ to every machine and "
          "secret/<host>.key_secret only to that host's machine")
    return 0


def _deploy(args: argparse.Namespace) -> int:
    from emulation.deploy import (
        deploy_cluster,
        deployment_requests,
        finish_deployment,
        host_configs,
        load_deployment,
        workload_timeout,
    )

    deployment = load_deployment(args.file)
    hosts = deployment.deploy.hosts
    if args.check and args.json:
        print_json(check_document(args.file, deployment))
        return 0
    if args.check:
        curve = "on" if deployment.deploy.keys_dir else "off"
        print(f"{args.file}: ok ({len(hosts)} hosts, coordinator {deployment.coordinator}, "
              f"{len(deployment_requests(deployment))} requests, CURVE {curve})")
        for name, h in hosts.items():
            print(f"  {name:12} {h.role:7} {h.address}")
        return 0
    if args.timeout is not None and args.timeout <= 0:
        raise ValueError(f"--timeout must be positive, got {args.timeout:g}")
    chosen = list(hosts) if args.all else list(dict.fromkeys(args.host))
    configs = host_configs(deployment)
    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    run_dir = next(iter(configs.values())).run_dir
    notes = _notes(args)
    summary = None  # summary.json, where devices ran here
    try:
        with deploy_cluster(configs, chosen) as running:
            pids = {name: node.pid for name, node in running.nodes.items()}
            print(f"started {', '.join(pids)} (pids {', '.join(map(str, pids.values()))})", file=notes,
                  flush=True)
            if running.devices:
                running.wait_workload(args.timeout or workload_timeout(deployment))
                devices = running.devices
                summary = finish_deployment(deployment, run_dir, devices).summary
                if not args.json:
                    _print_summary(summary["strategies"])
            else:
                print("serving; Ctrl-C or SIGTERM stops", file=notes, flush=True)
                exited = running.wait_stopped(stop)
                if exited is not None:
                    print(f"edgestage: node {exited} exited: {running.nodes[exited].log_tail()}", file=notes)
                    return 1
    except (RuntimeError, TimeoutError) as exc:  # a node that failed to start or to finish in time
        print(f"edgestage: error: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGTERM, previous)
    if args.json:  # summary null: only servers ran here, and they record nothing to summarise
        print_json(plain({"run_dir": run_dir, "started": pids, "summary": summary}))
        return 0
    print(f"run directory: {run_dir}")
    return 0


def check_document(file: str, deployment: Deployment) -> dict[str, Any]:
    """`deploy --check --json`: what the text says (each host's role and address, the coordinator,
    the requests, CURVE on or off), and the strategies, run_dir, keys_dir and each host's bind (its
    address unless the file sets one) as the file gives them."""
    from emulation.deploy import deployment_requests

    spec = deployment.deploy
    return plain({"deploy_file": file, "ok": True, "coordinator": deployment.coordinator,
                  "requests": len(deployment_requests(deployment)), "strategies": list(deployment.strategies),
                  "curve": spec.keys_dir is not None, "keys_dir": spec.keys_dir, "run_dir": spec.run_dir,
                  "hosts": {name: {"role": h.role, "address": h.address, "bind": h.bind or h.address}
                            for name, h in spec.hosts.items()}})


def _print_summary(strategies: dict[str, dict[str, Any]]) -> None:
    print(f"{'strategy':14} {'done':>5} {'failed':>7} {'p50_s':>8}")
    for strategy, row in strategies.items():
        p50 = f"{row['latency_p50_s']:.3f}" if row.get("latency_p50_s") is not None else "-"
        print(f"{strategy:14} {row['done']:5d} {row['failed']:7d} {p50:>8}")
