"""A whole scenario file: the network, the nodes on it, the workload, what to compare, how to run.

    from emulation.scenario import load_scenario
    from emulation.runner import run_scenario

    scenario = load_scenario("scenarios/smoke.toml")
    faster = scenario.model_copy(update={"generation": scenario.generation.model_copy(update={"steps": 10})})
    result = run_scenario(faster, "runs/steps10")      # RunResult: DataFrames and the run directory
    result.requests.groupby("strategy").total_s.mean()

Tables of a scenario file (every one but `[topology]` has defaults):

    [topology]            topologies/spec.py, unchanged (CPU shares per role live in [topology.compute])
    [nodes.cloud|edge|device]
        models   = ["large"]            denoisers the role holds (names or model directories)
        compute  = "native"|"profiled"  profiled: per-step times from the profile table, by pacing
        hardware = "datacenter_gpu"     the profile entry (profiled only)
        threads  = 1                    torch threads of the node process
    [nodes] profiles_file = "..."       optional profile table instead of nodes/profiles.toml
    [workload]
        requests = 32                   per repetition
        arrival = "fixed"|"poisson"     fixed gaps of interval_s, or exponential gaps of mean interval_s
        interval_s = 1.0
        seed = 0                        arrivals and image seeds (request k of repetition r:
                                        seed * 1_000_000 + r * requests + k)
        images_per_request = 4
        labels = "cycle" | 7 | [..]     cycle 0-9, one digit, or one label per image
        deadline_s = 5.0                optional; recorded as met or not per request
        request_timeout_s = 60          a device gives a request up after this long
        warmup = false                  true: one unmeasured request per (device, strategy) first
    [strategies.NAME]     kind = cloud_only|edge_only|device_only|fixed_split, model or split
                          (nodes/node_config.py StrategySpec); absent: the four defaults
    [generation]          scheduler = "dpm", steps = 20
    [capture]             enabled = true, snaplen = 0 (bytes per packet, 0: whole packets)
    [run]                 repetitions = 1, timeout_s = 600, ready_timeout_s = 180

`load_scenario(path)` checks everything that can be checked without starting anything (models on
disk, profile entries, strategies served by the roles' models) and raises ValueError with one
line naming the file, the line where it could be found, and the field.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

import nodes
from nodes.node_config import MAX_IMAGES, SCHEDULER_NAMES, StrategySpec, default_strategies
from topologies.spec import TopologySpec

PRETRAINED_DIR = Path(nodes.__file__).resolve().parent / "pretrained"
DEFAULT_DENOISERS = ("small", "medium", "large")
NODE_ROLES = ("cloud", "edge", "device")
_STRATEGY_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RoleNodes(_Model):
    """What the node process of every host of one role holds and how it computes.  The CPU share
    of the role is `[topology.compute]` (one place for it)."""

    models: list[str] = Field(default_factory=list, max_length=8)
    compute: Literal["native", "profiled"] = "native"
    hardware: str | None = None
    threads: int = Field(1, ge=1, le=64)

    @model_validator(mode="after")
    def _hardware(self) -> RoleNodes:
        if self.compute == "profiled" and not self.hardware:
            raise ValueError("compute = 'profiled' needs `hardware` (an entry of the profile table)")
        return self


class NodesSpec(_Model):
    cloud: RoleNodes = RoleNodes(models=["large"])
    edge: RoleNodes = RoleNodes(models=["medium"])
    device: RoleNodes = RoleNodes(models=["small"])
    profiles_file: Path | None = None

    def role(self, role: str) -> RoleNodes:
        return getattr(self, role)


class WorkloadSpec(_Model):
    requests: int = Field(32, ge=1, le=100_000)
    arrival: Literal["fixed", "poisson"] = "fixed"
    interval_s: float = Field(1.0, gt=0, le=3600)
    seed: int = Field(0, ge=0, lt=2**31)
    images_per_request: int = Field(4, ge=1, le=MAX_IMAGES)
    labels: Literal["cycle"] | int | list[int] = "cycle"
    deadline_s: float | None = Field(None, gt=0)
    request_timeout_s: float = Field(60.0, gt=0, le=86_400)
    # one request per (device, strategy) before the measured ones, half a second apart: ZeroMQ
    # connects on first use, so these open every TCP connection the measured requests will use
    warmup: bool = False

    @field_validator("labels")
    @classmethod
    def _labels(cls, v: object) -> object:
        values = v if isinstance(v, list) else [v] if isinstance(v, int) else []
        if any(isinstance(x, bool) or not 0 <= x <= 9 for x in values):
            raise ValueError("labels must lie in 0-9")
        return v

    @model_validator(mode="after")
    def _label_count(self) -> WorkloadSpec:
        if isinstance(self.labels, list) and len(self.labels) != self.images_per_request:
            raise ValueError(f"labels has {len(self.labels)} entries, images_per_request is "
                             f"{self.images_per_request}")
        return self


class GenerationSpec(_Model):
    scheduler: str = "dpm"
    steps: int = Field(20, ge=1, le=1000)

    @field_validator("scheduler")
    @classmethod
    def _scheduler(cls, v: str) -> str:
        if v not in SCHEDULER_NAMES:
            raise ValueError(f"unknown scheduler {v!r} (one of {', '.join(SCHEDULER_NAMES)})")
        return v


class CaptureSpec(_Model):
    enabled: bool = True
    # whole packets by default: traffic attribution reads the ZeroMQ framing inside TCP
    snaplen: int = Field(0, ge=0, le=262_144)


class RunSpec(_Model):
    repetitions: int = Field(1, ge=1, le=1000)
    timeout_s: float = Field(600.0, gt=0, le=7 * 86_400)
    ready_timeout_s: float = Field(180.0, gt=0, le=3600)


class Scenario(_Model):
    name: str | None = None
    description: str | None = None
    topology: TopologySpec
    nodes: NodesSpec = NodesSpec()
    workload: WorkloadSpec = WorkloadSpec()
    strategies: dict[str, StrategySpec] = Field(default_factory=default_strategies, min_length=1)
    generation: GenerationSpec = GenerationSpec()
    capture: CaptureSpec = CaptureSpec()
    run: RunSpec = RunSpec()

    @field_validator("strategies")
    @classmethod
    def _strategy_names(cls, v: dict[str, StrategySpec]) -> dict[str, StrategySpec]:
        for name in v:
            if not _STRATEGY_NAME.match(name):
                raise ValueError(f"strategy name {name!r}: use [A-Za-z0-9_.-]{{1,64}}")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> Scenario:
        roles = {r for r in NODE_ROLES if any(self._hosts_of(r))}
        if "edge" not in roles:
            raise ValueError("topology: the runner needs an edge host (it runs the coordinator)")
        if "device" not in roles:
            raise ValueError("topology: no device hosts, so nobody issues requests")
        for name, spec in self.strategies.items():
            for tier, model in _strategy_needs(spec):
                if tier not in roles:
                    raise ValueError(f"strategies.{name}: needs a {tier} host, the topology has none")
                if model not in self.nodes.role(tier).models:
                    raise ValueError(f"strategies.{name}: model {model!r} is not in nodes.{tier}.models")
        return self

    def _hosts_of(self, role: str) -> list[str]:
        names = self.topology.host_names()
        devices = {d.name for d in self.topology.device_specs()}
        if role == "device":
            return [n for n in names if n in devices]
        return [n for n in names if n not in devices and re.sub(r"\d+$", "", n) == role]

    def strategy_names(self) -> list[str]:
        return list(self.strategies)


def _strategy_needs(spec: StrategySpec) -> list[tuple[str, str]]:
    """(tier, model) pairs a strategy needs, with the node strategies' default models."""
    from nodes.strategies import DEFAULT_MODEL

    if spec.kind == "fixed_split":
        return [(s.tier, s.model) for s in spec.split or []]
    tier = spec.kind.removesuffix("_only")
    return [(tier, spec.model or DEFAULT_MODEL[spec.kind])]


def check_resources(scenario: Scenario, base: Path | None = None) -> Scenario:
    """Models on disk and profile entries: what pydantic cannot see.  ValueError, one line."""
    from nodes.compute import load_profiles, profile_for

    profiles = None
    for role in NODE_ROLES:
        spec = scenario.nodes.role(role)
        for i, model in enumerate(spec.models):
            if model in DEFAULT_DENOISERS:
                if not (PRETRAINED_DIR / model / "config.json").is_file():
                    raise ValueError(f"nodes.{role}.models[{i}]: default model {model!r} is missing "
                                     f"from {PRETRAINED_DIR} (edgestage train {model})")
            elif not (Path(model) / "config.json").is_file():
                raise ValueError(f"nodes.{role}.models[{i}]: {model!r} is neither small, medium, large "
                                 "nor a model directory with config.json")
        if spec.compute == "profiled":
            if profiles is None:
                profiles = load_profiles(scenario.nodes.profiles_file)
            for model in spec.models:
                try:
                    profile_for(profiles, spec.hardware or "", model)
                except ValueError as exc:
                    raise ValueError(f"nodes.{role}.hardware: {exc}") from None
    return scenario


def _field_path(loc: tuple) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part not in ("function-after", "function-before"):
            out += ("." if out else "") + str(part)
    return out


def _message(exc: ValidationError) -> tuple[tuple, str]:
    err = exc.errors()[0]
    loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and "[" in p))  # union branch tags
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        msg = "unknown field"
    elif err["type"] == "literal_error":
        msg = f"{msg} (got {err.get('input')!r})"
    return loc, msg.splitlines()[0]


def line_of(text: str, loc: tuple) -> int | None:
    """The line of the TOML text where the field at `loc` is written (or its table starts)."""
    keys = [p for p in loc if isinstance(p, str)]
    lines = text.splitlines()
    header = re.compile(r"^\s*\[\[?\s*([A-Za-z0-9_.\"-]+)\s*\]\]?")
    best: tuple[int, int] | None = None  # (depth of the matching table, line index)
    for index, line in enumerate(lines):
        m = header.match(line)
        if not m:
            continue
        parts = m.group(1).replace('"', "").split(".")
        if parts == keys[: len(parts)] and (best is None or len(parts) > best[0]):
            best = (len(parts), index)
    depth, start = best if best else (0, -1)
    if depth < len(keys):
        key = re.compile(rf"^\s*{re.escape(keys[depth])}\s*=")
        for index in range(start + 1, len(lines)):
            if depth and header.match(lines[index]) and index > start:
                break
            if key.match(lines[index]):
                return index + 1
    return start + 1 if start >= 0 else None


def one_line_error(exc: ValidationError, text: str, source: str, whole: str | None) -> ValueError:
    """`source:line: field: message` for a pydantic error; `whole` names a check across fields
    (None: its message names the fields itself)."""
    loc, msg = _message(exc)
    line = line_of(text, loc) if text else None
    where = f"{source}:{line}" if line else source
    field = _field_path(loc) or whole
    return ValueError(f"{where}: {field}: {msg}" if field else f"{where}: {msg}")


def parse_scenario(data: dict, text: str = "", source: str = "scenario") -> Scenario:
    """Validate a scenario's tables (a dict as TOML gives it); ValueError naming the field."""
    try:
        scenario = Scenario.model_validate(data)
    except ValidationError as exc:
        raise one_line_error(exc, text, source, whole="scenario") from None
    try:
        return check_resources(scenario)
    except ValueError as exc:
        field = str(exc).split(":", 1)[0]
        line = line_of(text, tuple(re.split(r"[.\[\]]+", field))) if text else None
        where = f"{source}:{line}" if line else source
        raise ValueError(f"{where}: {exc}") from None


def load_scenario(path: str | Path) -> Scenario:
    """Read and check a scenario file; nothing is started."""
    data, text = scenario_tables(path)
    return parse_scenario(data, text, str(path))


def scenario_tables(path: str | Path) -> tuple[dict, str]:
    """A scenario file's tables, with its relative paths resolved, and its text (not yet checked)."""
    from topologies.spec import _resolve_traces  # trace paths are relative to the file

    p = Path(path)
    try:
        text = p.read_text()
    except FileNotFoundError:
        raise ValueError(f"scenario file not found: {p}") from None
    except OSError as exc:
        raise ValueError(f"cannot read scenario file {p}: {exc.strerror}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{p}: not valid TOML: {exc}") from None
    if "topology" not in data:
        raise ValueError(f"{p}: no [topology] table")
    data["topology"] = _resolve_traces(data["topology"], p.parent)
    nodes_table = data.get("nodes")
    if isinstance(nodes_table, dict) and isinstance(nodes_table.get("profiles_file"), str):
        prof = Path(nodes_table["profiles_file"])
        if not prof.is_absolute() and not prof.exists() and (p.parent / prof).exists():
            nodes_table["profiles_file"] = str(p.parent / prof)
    data.setdefault("name", p.stem)
    return data, text


__all__ = ["Scenario", "load_scenario", "parse_scenario", "scenario_tables", "line_of", "NODE_ROLES"]
