"""Deploy mode: the same node processes on real machines, addressed by IP instead of emulated.

A deploy file (`scenarios/deploy-loopback.toml`) is a scenario whose `[topology]` is replaced by
`[deploy]`: every host's role and the address the others reach it on, where its run directory is,
and optionally the folder of its CURVE keys (nodes/runtime/security.py).  `[nodes.*]`, `[workload]`,
`[strategies.*]` and `[generation]` mean what they mean in a scenario.  Every machine reads the
same file and builds the same cluster view, so each can start its own hosts alone:

    edgestage deploy-keys FILE              # once: a key pair per host under deploy.keys_dir
    edgestage deploy FILE --host edge       # on the edge server (and likewise on the cloud host)
    edgestage deploy FILE --host d1         # on a device: its workload runs, its records are written
    edgestage deploy FILE --all             # every host on this machine (a loopback test)

Servers (cloud, edge) run until Ctrl-C or SIGTERM; devices run their workload, then stop.  There is
no link emulation, capture or CPU limit here: the network and the hardware are the real ones.
Timestamps of different machines are compared in the records (transfer and queueing times), so
their clocks must be synchronised (chrony / PTP); `total_s` is measured on the device alone.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import Field, ValidationError, field_validator, model_validator

from analysis.pipeline import Finished
from emulation.scenario import TABLES, Experiment, anchor_plugins, check_resources
from nodes.planning.request import Request
from nodes.runtime.local_cluster import LocalCluster
from nodes.runtime.node_config import (
    NodeConfig,
    SecurityConfig,
    check_endpoint,
)
from nodes.schema import HOST_NAME, HOST_NAME_RULE, Role, StrictModel, file_error, located, read_toml

READY_TIMEOUT_S = 180.0
WORKLOAD_MARGIN_S = 60.0  # past the last request's arrival and its timeout


class DeployHost(StrictModel):
    role: Role
    address: str  # tcp://IP:PORT the other hosts connect to
    bind: str | None = None  # what this host binds (e.g. tcp://*:PORT behind NAT); default: address

    _address = field_validator("address", "bind")(lambda v: v if v is None else check_endpoint(v))


class DeploySpec(StrictModel):
    hosts: dict[str, DeployHost] = Field(min_length=2)
    coordinator: str | None = None  # the edge host that plans; default: the first edge host
    run_dir: Path = Path("runs/deploy")  # on each machine, relative to where the command runs
    keys_dir: Path | None = None  # CURVE on: the folder `edgestage deploy-keys` wrote


class Deployment(Experiment):
    """An experiment on real machines: where each host is (no topology: the network is real)."""

    deploy: DeploySpec

    @model_validator(mode="after")
    def _consistent(self) -> Deployment:
        hosts = self.deploy.hosts
        for name in hosts:
            if not HOST_NAME.match(name):
                raise ValueError(f"deploy.hosts: host name {name!r}: use {HOST_NAME_RULE}")
        addresses = [h.address for h in hosts.values()]
        if len(set(addresses)) != len(addresses):
            raise ValueError("deploy.hosts: two hosts share one address")
        if not any(h.role == "device" for h in hosts.values()):
            raise ValueError("deploy.hosts: no host has role 'device'")
        coordinator = self.coordinator
        if coordinator is None:
            raise ValueError("deploy.hosts: no host has role 'edge' (the coordinator plans there)")
        if coordinator not in hosts or hosts[coordinator].role != "edge":
            raise ValueError(f"deploy.coordinator: {coordinator!r} is not an edge host of deploy.hosts")
        self.check_strategies("deploy.hosts")
        return self

    def roles_present(self) -> set[str]:
        return {h.role for h in self.deploy.hosts.values()}

    @property
    def coordinator(self) -> str | None:
        if self.deploy.coordinator:
            return self.deploy.coordinator
        return next((n for n, h in self.deploy.hosts.items() if h.role == "edge"), None)

    @property
    def devices(self) -> list[str]:
        return [n for n, h in self.deploy.hosts.items() if h.role == "device"]


def parse_deployment(data: dict, text: str = "", source: str = "deploy file") -> Deployment:
    """Validate a deploy file's tables; ValueError naming the file, line and field."""
    try:
        deployment = Deployment.model_validate(data)
    except ValidationError as exc:
        raise file_error(exc, text, source, TABLES) from None
    try:
        check_resources(deployment)  # type: ignore[arg-type]  # reads .nodes only
    except ValueError as exc:
        raise located(str(exc), text, source, TABLES) from None
    return deployment


def load_deployment(path: str | Path) -> Deployment:
    data, text = read_toml(path, what="deploy file")
    anchor_plugins(data, Path(path).parent)  # a plugin's file lies beside the deploy file
    return parse_deployment(data, text, str(path))


def host_configs(deployment: Deployment, base: Path | None = None) -> dict[str, NodeConfig]:
    """Every host's NodeConfig (each machine builds the same ones; it starts only its own).
    Relative run_dir and keys_dir are taken from `base` (default: the current directory)."""
    from emulation.workload import by_device, plan_workload
    from nodes.runtime.security import curve_config

    base = (base or Path.cwd()).resolve()
    spec = deployment.deploy
    keys_dir = base / spec.keys_dir if spec.keys_dir is not None else None
    hosts = {h: (d.role, d.address, d.bind or d.address) for h, d in spec.hosts.items()}
    requests = by_device(plan_workload(deployment.workload, deployment.devices, deployment.strategy_names()))

    def security(host: str) -> SecurityConfig:
        return SecurityConfig(curve=curve_config(keys_dir, host) if keys_dir is not None else None)

    return deployment.node_configs(hosts, deployment.coordinator or "", base / spec.run_dir,
                                   requests, security=security)


def make_keys(deployment: Deployment, base: Path | None = None) -> Path:
    """A fresh CURVE key pair per host under deploy.keys_dir; the folder."""
    from nodes.runtime.security import generate_keys

    if deployment.deploy.keys_dir is None:
        raise ValueError("deploy.keys_dir is not set: say where the keys go to turn CURVE on")
    directory = (base or Path.cwd()).resolve() / deployment.deploy.keys_dir
    generate_keys(directory, list(deployment.deploy.hosts))
    return directory


def deploy_cluster(configs: dict[str, NodeConfig], hosts: list[str]) -> LocalCluster:
    """The node processes of some hosts of a deployment, on this machine (servers ready before any
    device issues a request); stopped by PID on exit, whatever happened.  ValueError naming a host
    that the deploy file does not have."""
    unknown = [h for h in hosts if h not in configs]
    if unknown:
        raise ValueError(f"host {unknown[0]!r} is not in deploy.hosts ({', '.join(configs)})")
    return LocalCluster(configs, hosts, ready_timeout_s=READY_TIMEOUT_S)


def workload_timeout(deployment: Deployment) -> float:
    last = max((r.at_s for r in deployment_requests(deployment)), default=0.0)
    return last + deployment.workload.request_timeout_s + WORKLOAD_MARGIN_S


def deployment_requests(deployment: Deployment) -> list[Request]:
    from emulation.workload import plan_workload

    return plan_workload(deployment.workload, deployment.devices, deployment.strategy_names())


def finish_deployment(deployment: Deployment, run_dir: Path, devices: list[str]) -> Finished:
    """The end-of-run pipeline (analysis/pipeline.py) on what this machine's devices recorded:
    requests.parquet, summary.json (no capture, no quality: deploy mode measures neither), report,
    and a manifest.  Time is the hosts' own (K = 1); t = 0 is the first measured request."""
    from analysis.pipeline import finish_run_dir
    from analysis.run_tables import requests_frame
    from emulation.provenance import provenance

    planned = [r.model_dump(mode="json") for r in deployment_requests(deployment) if r.device in devices]
    wall = requests_frame(run_dir, planned)
    measured = wall.loc[wall["warmup"].ne(True), "wall_t_scheduled"].dropna()
    manifest = {"mode": "deploy", "status": "completed", "error": None, "workload": planned,
                "clock": {"wall_origin": float(measured.min()) if len(measured) else None,
                          "time_dilation": 1.0},
                "network": {}, "scenario": deployment.model_dump(mode="json"), "devices": devices,
                **provenance(deployment)}  # versions and checksums, as a run's manifest has them
    (run_dir / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return finish_run_dir(run_dir, manifest, quality=False, traffic=False)


# --- command line -------------------------------------------------------------------------------
