"""The `[topology]` part of a scenario file: what the network is, validated before anything starts.

Link parameters carry their units in their names, as numbers: `bw_mbit`, `delay_ms` and
`jitter_ms` (one direction each), `loss_pct` (each direction), `queue_pkts`.  A scenario model
(the runner's) embeds `TopologySpec` as its `topology` field; `load_topology(path)` reads only
the `[topology]` table and ignores the others.

Example (see scenarios/default.toml):

    [topology]
    kind = "two_tier"              # star | two_tier | multi_cell
    impairment = "auto"            # auto | netem | userspace
    [[topology.devices]]
    name = "d1"
    bw_mbit = 50
    delay_ms = 5
    loss_pct = 0.5
    [topology.backhaul]
    bw_mbit = 100
    delay_ms = 20

Bad input raises `ValueError` with one line naming the field (`topology.devices[2].bw_mbit: ...`);
`load_topology` also names the file and the line.  Types are strict: a number where a number is
meant (`bw_mbit = "5"` and `bw_mbit = true` are refused, not coerced), finite (no `nan`, `inf`), an integer
where an integer is meant (`cells = 2.0` is refused).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import (
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    ValidationError,
    field_validator,
    model_validator,
)

from nodes.schema import NODE_ROLES, StrictModel, error_loc, line_of, read_toml, validation_message

ROLES = (*NODE_ROLES, "ap")  # the access point runs no node process
MAX_BW_MBIT = 100_000.0  # 100 Gbit/s: anything above is a typo, not an edge network
MAX_DELAY_MS = 10_000.0
_NAME = re.compile(r"^[a-z][a-z0-9]{0,9}$")  # Mininet names interfaces NAME-ethN (<= 15 chars)


class LinkShape(StrictModel):
    """What one direction of a link does, in numbers with their units in the names.  The one
    link-parameter type: the scenario file, `tc`, the impairment processes, live changes,
    network.json, the manifest and link_events.jsonl all use these names."""

    bw_mbit: StrictFloat | None = Field(None, gt=0, le=MAX_BW_MBIT, description="None: unshaped")
    delay_ms: StrictFloat = Field(0.0, ge=0, le=MAX_DELAY_MS, description="one direction")
    jitter_ms: StrictFloat = Field(0.0, ge=0, le=MAX_DELAY_MS)
    loss_pct: StrictFloat = Field(0.0, ge=0, le=100, description="each direction")
    queue_pkts: StrictInt | None = Field(None, ge=1, le=1_000_000, description="None: default")

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, data: object) -> object:
        if isinstance(data, dict):
            for old, new in _RENAMED.items():
                if old in data:
                    raise ValueError(f"`{old}` is now `{new}` (a number)")
        return data

    @property
    def impaired(self) -> bool:
        return self.delay_ms > 0 or self.jitter_ms > 0 or self.loss_pct > 0

    def shape(self) -> LinkShape:
        """Only the shape (a LinkParams without its trace)."""
        return LinkShape.model_validate(self.model_dump(include=set(LinkShape.model_fields)))

    def dilated(self, k: float) -> LinkShape:
        """What the link does in wall-clock time when emulated time runs K times slower than
        wall time: rate / K, delay and jitter x K; loss and queue (packets) as they are, so the
        bandwidth-delay product in bytes is unchanged.  Not re-validated: at K > 1 a delay may
        exceed the bound a scenario may ask for."""
        if k == 1:
            return self.shape()
        return LinkShape.model_construct(
            bw_mbit=None if self.bw_mbit is None else self.bw_mbit / k, delay_ms=self.delay_ms * k,
            jitter_ms=self.jitter_ms * k, loss_pct=self.loss_pct, queue_pkts=self.queue_pkts)

    def changed(self, **changes: float | None) -> LinkShape:
        """A copy with some values replaced, validated like the scenario's (ValueError)."""
        try:
            return LinkShape.model_validate({**self.shape().model_dump(), **changes})
        except ValidationError as exc:
            raise ValueError(validation_message(exc)) from None


# Mininet's names, which scenario files used before the link type carried its units.
_RENAMED = {"bw": "bw_mbit", "delay": "delay_ms", "jitter": "jitter_ms", "loss": "loss_pct",
            "max_queue_size": "queue_pkts"}


class LinkParams(LinkShape):
    """One link's behaviour, the same in both directions, and an optional trace replayed on it."""

    trace: str | None = Field(None, description="mahimahi .trace or CSV file replayed on the link")

    @field_validator("trace")
    @classmethod
    def _trace_parses(cls, v: str | None) -> str | None:
        if v is not None:
            from topologies.traces import load_trace

            load_trace(v)  # raises ValueError naming the line that does not parse
        return v

    def figures(self) -> dict[str, float | int | str | None]:
        """What network.json and the manifest record for the link."""
        return self.model_dump()


class DeviceSpec(LinkParams):
    """A mobile device and its wireless-like link to its access point."""

    name: str | None = None
    cell: StrictInt = Field(0, ge=0, description="multi_cell: index of the cell the device joins")
    cpu: StrictFloat | None = Field(None, gt=0, le=1, description="share of the machine's CPU")
    position: tuple[StrictFloat, StrictFloat] | None = Field(None, description="metres, channel model")
    radio: Literal["wifi", "lte", "5g"] | None = Field(
        None, description="radio kind for the energy model (topologies/radio.py); None: no radio energy")


class LinkOverride(LinkParams):
    """Parameters for the link between two named hosts, replacing the generated ones."""

    endpoints: tuple[str, str]


class LinkEvent(StrictModel):
    """A scheduled fault: take the link between two hosts down or bring it back up."""

    at: StrictFloat = Field(ge=0, le=86_400, description=(
        "seconds on the workload's clock: t = 0 when its first measured request is sent "
        "(docs/network-and-dilation.md: the clock of events and traces)"))
    link: tuple[str, str]
    action: Literal["down", "up"]


class ChannelSpec(StrictModel):
    """Wireless channel: distance -> log-distance path loss -> SNR -> rate and loss.

    PL(d) = ref_loss_db + 10 * exponent * log10(d / 1 m); SNR = tx_power_dbm - PL - noise_dbm;
    rate = min(max_rate_mbit, efficiency * bandwidth_mhz * log2(1 + SNR));
    loss = 100 / (1 + exp(steepness * (SNR - snr_half_loss_db))) percent.
    Devices move by random waypoint inside `area` (metres) and links update every `interval_s`.
    """

    enabled: StrictBool = True
    interval_s: StrictFloat = Field(1.0, ge=0.05, le=3600)
    area: tuple[StrictFloat, StrictFloat] = (200.0, 200.0)
    speed: tuple[StrictFloat, StrictFloat] = (0.5, 2.0)  # m/s, walking
    pause_s: StrictFloat = Field(0.0, ge=0)
    tx_power_dbm: StrictFloat = 20.0
    noise_dbm: StrictFloat = -95.0
    ref_loss_db: StrictFloat = 40.0
    exponent: StrictFloat = Field(3.0, gt=0, le=8)
    bandwidth_mhz: StrictFloat = Field(20.0, gt=0, le=1000)
    efficiency: StrictFloat = Field(0.6, gt=0, le=1)
    max_rate_mbit: StrictFloat = Field(100.0, gt=0, le=MAX_BW_MBIT)
    min_rate_mbit: StrictFloat = Field(0.1, gt=0, le=MAX_BW_MBIT)
    snr_half_loss_db: StrictFloat = 3.0
    steepness: StrictFloat = Field(1.0, gt=0)
    ap_positions: list[tuple[StrictFloat, StrictFloat]] | None = None  # default: centre of the area


class TopologySpec(StrictModel):
    """A whole edge network.  Host names: devices `d1..dN` (or as given), `ap`, `edge`, `cloud`;
    multi_cell: `ap1..apK`, `edge1..edgeK` (and `cloud` when `backhaul` is set)."""

    kind: Literal["star", "two_tier", "multi_cell"]
    impairment: Literal["auto", "netem", "userspace"] = "auto"
    seed: StrictInt = Field(0, ge=0, lt=2**63)
    devices: list[DeviceSpec] = Field(default_factory=list, max_length=1024)
    num_devices: StrictInt | None = Field(None, ge=1, le=1024, description="devices from device_link")
    device_link: LinkParams = LinkParams(bw_mbit=20, delay_ms=10)
    access: LinkParams = LinkParams(bw_mbit=1000)  # ap <-> edge server (wired)
    backhaul: LinkParams | None = LinkParams(bw_mbit=100, delay_ms=20)  # edge <-> cloud
    inter_edge: LinkParams = LinkParams(bw_mbit=1000, delay_ms=2)  # multi_cell: edge <-> edge
    cells: StrictInt = Field(1, ge=1, le=64)
    cpu_shares: dict[str, StrictFloat] = Field(default_factory=dict, description="role -> CPU share")
    links: list[LinkOverride] = Field(default_factory=list)
    events: list[LinkEvent] = Field(default_factory=list)
    channel: ChannelSpec | None = None

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, data: object) -> object:
        if isinstance(data, dict) and "compute" in data:  # `compute` is a node's mode, [nodes.<role>]
            raise ValueError("`compute` is now `cpu_shares` (role -> share of the machine's CPU)")
        return data

    @field_validator("cpu_shares")
    @classmethod
    def _cpu_shares(cls, v: dict[str, float]) -> dict[str, float]:
        for role, share in v.items():
            if role not in ROLES:
                raise ValueError(f"unknown role {role!r} (one of {', '.join(ROLES)})")
            if not 0 < share <= 1:
                raise ValueError(f"CPU share of {role!r} must be in (0, 1], got {share}")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> TopologySpec:
        if not self.devices and self.num_devices is None:
            raise ValueError("give `devices` or `num_devices`")
        if self.devices and self.num_devices is not None and self.num_devices != len(self.devices):
            raise ValueError("`num_devices` disagrees with the number of `devices`")
        for i, d in enumerate(self.devices):
            if d.name is not None and not _NAME.match(d.name):
                raise ValueError(f"devices[{i}].name {d.name!r}: use [a-z][a-z0-9]{{0,9}}")
            if d.cell >= self.cells:
                raise ValueError(f"devices[{i}].cell {d.cell} but there are {self.cells} cells")
        names = self.host_names()
        if len(set(names)) != len(names):
            raise ValueError("host names are not unique")
        for field, items in (("links", self.links), ("events", self.events)):
            for i, item in enumerate(items):
                ends = item.endpoints if field == "links" else item.link
                for end in ends:
                    if end not in names:
                        raise ValueError(f"{field}[{i}] names host {end!r}, which does not exist")
        return self

    def device_specs(self) -> list[DeviceSpec]:
        if self.devices:
            return [
                d if d.name else d.model_copy(update={"name": f"d{i + 1}"})
                for i, d in enumerate(self.devices)
            ]
        base = self.device_link.model_dump()
        n = self.num_devices or 0
        return [
            DeviceSpec(**base, name=f"d{i + 1}", cell=i % self.cells) for i in range(n)
        ]

    def host_names(self) -> list[str]:
        devices = [d.name or f"d{i + 1}" for i, d in enumerate(self.devices)] or [
            f"d{i + 1}" for i in range(self.num_devices or 0)
        ]
        if self.kind == "star":
            infra = ["edge"]
        elif self.kind == "two_tier":
            infra = ["ap", "edge", "cloud"]
        else:
            infra = [f"ap{k + 1}" for k in range(self.cells)]
            infra += [f"edge{k + 1}" for k in range(self.cells)]
            if self.backhaul is not None:
                infra.append("cloud")
        return devices + infra


def parse_topology(data: dict) -> TopologySpec:
    """Validate a `[topology]` table; ValueError with one line naming the field otherwise."""
    if not isinstance(data, dict):
        raise ValueError(f"topology: must be a table, not {type(data).__name__}")
    try:
        return TopologySpec.model_validate(data)
    except ValidationError as exc:
        raise ValueError(validation_message(exc, "topology")) from None


def load_topology(path: str | Path) -> TopologySpec:
    """Read the `[topology]` table of a scenario TOML file (other tables are ignored); ValueError
    with one line naming the file, the line and the field."""
    p = Path(path)
    data, text = read_with_topology(p)
    try:
        return TopologySpec.model_validate(data["topology"])
    except ValidationError as exc:
        line = line_of(text, ("topology", *error_loc(exc.errors()[0])))
        where = f"{p}:{line}" if line else str(p)
        raise ValueError(f"{where}: {validation_message(exc, 'topology')}") from None


def read_with_topology(path: str | Path) -> tuple[dict, str]:
    """A scenario file's tables and its text, once its `[topology]` is known to be a table (its
    trace paths resolved); ValueError naming the file, and the line, otherwise."""
    p = Path(path)
    data, text = read_toml(p)
    if "topology" not in data:
        raise ValueError(f"{p}: no [topology] table")
    if not isinstance(data["topology"], dict):
        raise ValueError(f"{p}:{line_of(text, ('topology',)) or 1}: topology: must be a table")
    data["topology"] = _resolve_traces(data["topology"], p.parent)
    return data, text


def _resolve_traces(table: dict, base: Path) -> dict:
    """Trace paths in a scenario file are relative to the file (or to the working directory)."""

    def fix(entry: object) -> object:
        if isinstance(entry, dict) and isinstance(entry.get("trace"), str):
            t = Path(entry["trace"])
            if not t.is_absolute() and not t.exists() and (base / t).exists():
                entry = {**entry, "trace": str(base / t)}
        return entry

    out = dict(table)
    for key in ("device_link", "access", "backhaul", "inter_edge"):
        if key in out:
            out[key] = fix(out[key])
    for key in ("devices", "links"):
        if isinstance(out.get(key), list):
            out[key] = [fix(e) for e in out[key]]
    return out
