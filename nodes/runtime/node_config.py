"""The configuration of one node process (`python -m nodes.runtime.node --config FILE.json`).

The runner writes one such JSON file per Mininet host. Every node gets the same cluster view
(`peers`: every other host's endpoint, role and models), so that the coordinator can plan and
every stage host can forward the state to the next one directly.
"""

from __future__ import annotations

import ipaddress
import json
import re
import sys
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from nodes.clock import Clock
from nodes.planning.request import MAX_IMAGES, Request
from nodes.planning.strategy_specs import StrategySpec, default_strategies
from nodes.schema import HOST_NAME, HOST_NAME_RULE, Role, SchedulerName, StrictModel, validation_message

_ENDPOINT = re.compile(r"^tcp://(?P<addr>[A-Za-z0-9_.:*-]+):(?P<port>\d{1,5})$")
_DNS_LABEL = re.compile(r"^(?!-)[A-Za-z0-9_-]{1,63}(?<!-)$")


def check_endpoint(value: str) -> str:
    """tcp://ADDRESS:PORT, ADDRESS an IPv4 address, `*` (bind to all) or a host or interface name;
    a port in 1-65535."""
    match = _ENDPOINT.match(value)
    if not match or not 0 < int(match["port"]) < 65536:
        raise ValueError(f"endpoint {value!r}: expected tcp://ADDRESS:PORT (port 1-65535)")
    addr = match["addr"]
    if addr == "*":
        return value
    if re.fullmatch(r"[0-9.]+", addr):  # looks like an IPv4 address, so it must be one
        try:
            ipaddress.IPv4Address(addr)
        except ValueError:
            raise ValueError(f"endpoint {value!r}: {addr} is not an IPv4 address") from None
        return value
    labels = addr.split(".")
    if ":" in addr or len(addr) > 253 or not all(_DNS_LABEL.match(label) for label in labels):
        raise ValueError(f"endpoint {value!r}: {addr} is neither an IPv4 address nor a host name")
    return value


class ComputeConfig(StrictModel):
    """`native`: real computation at the host's CPU share. `profiled`: every denoising step takes
    the time `nodes/profiles.toml` (or `profiles_file`) gives for (hardware, model), by pacing."""

    mode: Literal["native", "profiled"] = "native"
    hardware: str | None = None
    profiles_file: Path | None = None
    threads: int = Field(1, ge=1, le=64)
    # where torch computes (nodes/runtime/compute_device.py): "cpu", "cuda" (refused where torch
    # sees none), "auto" (CUDA where there is one); the state crosses the wire from CPU memory
    device: Literal["auto", "cpu", "cuda"] = "cpu"

    @model_validator(mode="after")
    def _hardware_when_profiled(self) -> ComputeConfig:
        if self.mode == "profiled" and not self.hardware:
            raise ValueError("compute.hardware is required when compute.mode is 'profiled'")
        return self


class Peer(StrictModel):
    endpoint: str
    role: Role
    models: list[str] = []
    # what a planner may know of another host in advance: its hardware, and a device's radio
    compute: ComputeConfig | None = None
    radio: str | None = None
    latent_components: list[Literal["tokenizer", "text_encoder", "vae"]] | None = None  # as NodeConfig's

    _endpoint = field_validator("endpoint")(check_endpoint)


class CurveConfig(StrictModel):
    """ZeroMQ CURVE between nodes (nodes/runtime/security.py): keys made per deployment by
    `edgestage deploy-keys` (zmq.auth certificate files)."""

    secret_key_file: Path  # this host's <host>.key_secret (mode 0600)
    # <host>.key of every host allowed to connect; a peer's server key is read from <peer>.key here
    public_keys_dir: Path


class SecurityConfig(StrictModel):
    curve: CurveConfig | None = None  # None: plain TCP, as inside the emulated network


class NodeConfig(StrictModel):
    host: str
    role: Role
    bind: str  # tcp://IP:PORT on this host's own address (the runner gives the Mininet host IP)
    coordinator: str  # host name of the edge server that plans (may be this host)
    peers: dict[str, Peer]  # every other host of the run
    # denoisers this node loads at start: names or model directories, or latent pipeline folders
    models: list[str] = []
    # of each latent pipeline folder in `models`, what this node loads besides the UNet and scheduler it
    # denoises with: the tokenizer and text encoder where it encodes prompts (the first denoising
    # stage), the VAE where it decodes (the last); None: every component
    latent_components: list[Literal["tokenizer", "text_encoder", "vae"]] | None = None
    compute: ComputeConfig = ComputeConfig()
    run_dir: Path
    scheduler: SchedulerName = "dpm"
    steps: int = Field(50, ge=1, le=1000)
    request_timeout_s: float = Field(60.0, gt=0)  # emulated, as every time given here
    # the run's clock: its origin and time dilation K (a profiled step is paced to K x its
    # profile); no origin: t = 0 when the node is ready (a node outside a runner's run)
    clock: Clock = Clock()
    workload: list[Request] = []  # a device's own requests (nodes/planning/request.py)
    strategies: dict[str, StrategySpec] = Field(default_factory=default_strategies)
    max_images: int = Field(MAX_IMAGES, ge=1, le=MAX_IMAGES)
    # an upper bound for ZMQ_MAXMSGSIZE of the inbox: the node lowers it to its largest legitimate
    # frame (256 KiB at 256 images), so a bogus message is dropped by ZeroMQ before it is buffered
    max_message_bytes: int = Field(64 * 1024 * 1024, ge=1024)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    security: SecurityConfig = SecurityConfig()

    _bind = field_validator("bind")(check_endpoint)

    # Where this node's files lie in the run directory (one layout for the node, the runner and
    # the loopback cluster).
    @property
    def config_file(self) -> Path:
        return self.run_dir / "configs" / f"{self.host}.json"

    @property
    def log_file(self) -> Path:
        return self.run_dir / "logs" / f"{self.host}.log"

    @property
    def status_file(self) -> Path:
        return self.run_dir / "nodes" / f"{self.host}.json"

    @property
    def records_file(self) -> Path:
        return self.run_dir / "records" / f"{self.host}.jsonl"

    def write_for_launch(self) -> list[str]:
        """Write this config where the node will read it; the argv that starts the node."""
        self.config_file.parent.mkdir(parents=True, exist_ok=True)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        self.config_file.write_text(self.model_dump_json(indent=1))
        return [sys.executable, "-m", "nodes.runtime.node", "--config", str(self.config_file)]

    @model_validator(mode="before")
    @classmethod
    def _own_requests(cls, data: Any) -> Any:
        """A workload entry may leave out its device (this host) and its id (`<host>-<index>`)."""
        if isinstance(data, dict) and isinstance(data.get("workload"), list):
            host = data.get("host")
            own = [{"device": host, "request_id": f"{host}-{i:04d}", **r} if isinstance(r, dict) else r
                   for i, r in enumerate(data["workload"])]
            data = {**data, "workload": own}
        return data

    @model_validator(mode="after")
    def _consistent(self) -> NodeConfig:
        for name in (self.host, *self.peers):
            if not HOST_NAME.match(name):
                raise ValueError(f"host name {name!r}: use {HOST_NAME_RULE}")
        if self.host in self.peers:
            raise ValueError(f"peers must not list this node's own host {self.host!r}")
        coordinator_role = self.role if self.coordinator == self.host else None
        if self.coordinator != self.host:
            if self.coordinator not in self.peers:
                raise ValueError(f"coordinator {self.coordinator!r} is not this host nor one of the peers")
            coordinator_role = self.peers[self.coordinator].role
        if coordinator_role != "edge":
            raise ValueError(f"coordinator {self.coordinator!r} must be an edge host, not {coordinator_role}")
        if self.workload and self.role != "device":
            raise ValueError(f"only a device issues requests; this node's role is {self.role}")
        if others := sorted({r.device for r in self.workload} - {self.host}):
            raise ValueError(f"workload requests of device {others[0]!r} in the config of {self.host!r}")
        ids = [r.request_id for r in self.workload]
        if len(ids) != len(set(ids)):
            raise ValueError("workload request_id values are not unique")
        if any(r.n > self.max_images for r in self.workload):
            raise ValueError(f"a workload request asks for more than max_images={self.max_images}")
        return self

    @property
    def is_coordinator(self) -> bool:
        return self.coordinator == self.host

    def roles(self) -> dict[str, Role]:
        return {self.host: self.role, **{h: p.role for h, p in self.peers.items()}}

    def models_by_host(self) -> dict[str, tuple[str, ...]]:
        return {self.host: tuple(self.models), **{h: tuple(p.models) for h, p in self.peers.items()}}


def load_node_config(path: str | Path) -> NodeConfig:
    """Parse and check a node config file; ValueError with one line naming the problem."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise ValueError(f"cannot read node config {path}: {exc.strerror}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"node config {path} is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError(f"node config {path}: expected a JSON object")
    try:
        return NodeConfig.model_validate(data)
    except ValidationError as exc:
        raise ValueError(f"node config {path}: {validation_message(exc, more=True)}") from None
