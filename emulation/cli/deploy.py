"""`edgestage deploy FILE` and `edgestage deploy-keys FILE`: the node processes of a deploy file
on this machine (no Mininet), over emulation.deploy."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from typing import Any

from emulation.cli.args import seconds


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("deploy", help="run the node processes of a deploy file on this machine (no Mininet)")
    p.add_argument("file", help="deploy file (.toml), e.g. scenarios/deploy-loopback.toml")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--host", action="append", help="a host of deploy.hosts to start here (repeatable)")
    which.add_argument("--all", action="store_true", help="every host, on this machine (loopback test)")
    which.add_argument("--check", action="store_true", help="validate the file and print the hosts")
    p.add_argument("--timeout", type=seconds, help="seconds to wait for the devices' workloads")
    p.set_defaults(func=_deploy)

    p = sub.add_parser("deploy-keys", help="a CURVE key pair per host of a deploy file, in deploy.keys_dir")
    p.add_argument("file", help="deploy file (.toml) with deploy.keys_dir set")
    p.set_defaults(func=_deploy_keys)


def _deploy_keys(args: argparse.Namespace) -> int:
    from emulation.deploy import load_deployment, make_keys

    deployment = load_deployment(args.file)
    directory = make_keys(deployment)
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
    try:
        with deploy_cluster(configs, chosen) as running:
            print(f"started {', '.join(running.nodes)} (pids "
                  f"{', '.join(str(n.pid) for n in running.nodes.values())})", flush=True)
            if running.devices:
                running.wait_workload(args.timeout or workload_timeout(deployment))
                devices = running.devices
                _print_summary(finish_deployment(deployment, run_dir, devices).summary["strategies"])
            else:
                print("serving; Ctrl-C or SIGTERM stops", flush=True)
                exited = running.wait_stopped(stop)
                if exited is not None:
                    print(f"edgestage: node {exited} exited: {running.nodes[exited].log_tail()}")
                    return 1
    except (RuntimeError, TimeoutError) as exc:  # a node that failed to start or to finish in time
        print(f"edgestage: error: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGTERM, previous)
    print(f"run directory: {run_dir}")
    return 0


def _print_summary(strategies: dict[str, dict[str, Any]]) -> None:
    print(f"{'strategy':14} {'done':>5} {'failed':>7} {'p50_s':>8}")
    for strategy, row in strategies.items():
        p50 = f"{row['latency_p50_s']:.3f}" if row.get("latency_p50_s") is not None else "-"
        print(f"{strategy:14} {row['done']:5d} {row['failed']:7d} {p50:>8}")
