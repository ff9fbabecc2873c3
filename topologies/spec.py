"""The `[topology]` part of a scenario file: what the network is, validated before anything starts.

Link parameters use Mininet's names and units: `bw` (Mbit/s), `delay` and `jitter` ("10ms"),
`loss` (percent), `max_queue_size` (packets).  A scenario model (the runner's) embeds
`TopologySpec` as its `topology` field; `load_topology(path)` reads only the `[topology]` table
and ignores the others.

Example (see scenarios/default.toml):

    [topology]
    kind = "two_tier"              # star | two_tier | multi_cell
    impairment = "auto"            # auto | netem | userspace
    [[topology.devices]]
    name = "d1"
    bw = 50
    delay = "5ms"
    loss = 0.5
    [topology.backhaul]
    bw = 100
    delay = "20ms"

Bad input raises `ValueError` with one line naming the field (`topology.devices[2].bw: ...`);
`load_topology` also names the file and the line.  Types are strict: a number where a number is
meant (`bw = "5"` and `bw = true` are refused, not coerced), finite (no `nan`, `inf`), an integer
where an integer is meant (`cells = 2.0` is refused).
"""

from __future__ import annotations

import math
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
_DURATION = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*(us|ms|s)?\s*$")
_NAME = re.compile(r"^[a-z][a-z0-9]{0,9}$")  # Mininet names interfaces NAME-ethN (<= 15 chars)


def parse_duration_ms(value: str | float | int) -> float:
    """'10ms' -> 10.0, '1.5s' -> 1500.0, '250us' -> 0.25; a bare number is milliseconds."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        ms = float(value)
    elif isinstance(value, str):
        m = _DURATION.match(value)
        if not m:
            raise ValueError(f"not a duration: {value!r} (use e.g. '10ms')")
        ms = float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0, None: 1.0}[m.group(2)]
    else:
        raise ValueError(f"not a duration: {value!r} (use e.g. '10ms')")
    if not math.isfinite(ms) or ms < 0 or ms > MAX_DELAY_MS:
        raise ValueError(f"{value!r} is outside 0..{MAX_DELAY_MS:g} ms")
    return ms


class LinkParams(StrictModel):
    """One link's behaviour, the same in both directions (as Mininet's TCLink applies it)."""

    bw: StrictFloat | None = Field(None, gt=0, le=MAX_BW_MBIT, description="Mbit/s; None: unshaped")
    delay: str = "0ms"
    jitter: str = "0ms"
    loss: StrictFloat = Field(0.0, ge=0, le=100, description="percent, per direction")
    max_queue_size: StrictInt | None = Field(None, ge=1, le=1_000_000, description="packets")
    trace: str | None = Field(None, description="mahimahi .trace or CSV file replayed on the link")

    @field_validator("delay", "jitter", mode="before")
    @classmethod
    def _duration(cls, v: object) -> str:
        ms = parse_duration_ms(v)  # type: ignore[arg-type]
        return f"{ms:g}ms"

    @field_validator("trace")
    @classmethod
    def _trace_parses(cls, v: str | None) -> str | None:
        if v is not None:
            from topologies.traces import load_trace

            load_trace(v)  # raises ValueError naming the line that does not parse
        return v

    @property
    def delay_ms(self) -> float:
        return parse_duration_ms(self.delay)

    @property
    def jitter_ms(self) -> float:
        return parse_duration_ms(self.jitter)

    def figures(self) -> dict[str, float | int | str | None]:
        """The link's parameters as numbers with their units in the names (what network.json,
        the manifest and the analysis read): bw_mbit (None: unshaped), delay_ms, jitter_ms,
        loss_pct, queue_pkts, trace."""
        return {"bw_mbit": self.bw, "delay_ms": self.delay_ms, "jitter_ms": self.jitter_ms,
                "loss_pct": self.loss, "queue_pkts": self.max_queue_size, "trace": self.trace}

    @property
    def impaired(self) -> bool:
        return self.delay_ms > 0 or self.jitter_ms > 0 or self.loss > 0


class DeviceSpec(LinkParams):
    """A mobile device and its wireless-like link to its access point."""

    name: str | None = None
    cell: StrictInt = Field(0, ge=0, description="multi_cell: index of the cell the device joins")
    cpu: StrictFloat | None = Field(None, gt=0, le=1, description="share of the machine's CPU")
    position: tuple[StrictFloat, StrictFloat] | None = Field(None, description="metres, channel model")


class LinkOverride(LinkParams):
    """Parameters for the link between two named hosts, replacing the generated ones."""

    endpoints: tuple[str, str]


class LinkEvent(StrictModel):
    """A scheduled fault: take the link between two hosts down or bring it back up."""

    at: StrictFloat = Field(ge=0, le=86_400, description=(
        "seconds on the workload's clock: t = 0 when its first measured request is sent "
        "(README: the clock of events and traces)"))
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
    device_link: LinkParams = LinkParams(bw=20, delay="10ms")
    access: LinkParams = LinkParams(bw=1000)  # ap <-> edge server (wired)
    backhaul: LinkParams | None = LinkParams(bw=100, delay="20ms")  # edge <-> cloud
    inter_edge: LinkParams = LinkParams(bw=1000, delay="2ms")  # multi_cell: edge <-> edge
    cells: StrictInt = Field(1, ge=1, le=64)
    compute: dict[str, StrictFloat] = Field(default_factory=dict, description="role -> CPU share")
    links: list[LinkOverride] = Field(default_factory=list)
    events: list[LinkEvent] = Field(default_factory=list)
    channel: ChannelSpec | None = None

    @field_validator("compute")
    @classmethod
    def _compute(cls, v: dict[str, float]) -> dict[str, float]:
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
    data, text = read_toml(p)
    if "topology" not in data:
        raise ValueError(f"{p}: no [topology] table")
    table = data["topology"]
    if not isinstance(table, dict):
        raise ValueError(f"{p}:{line_of(text, ('topology',)) or 1}: topology: must be a table")
    try:
        return TopologySpec.model_validate(_resolve_traces(table, p.parent))
    except ValidationError as exc:
        line = line_of(text, ("topology", *error_loc(exc.errors()[0])))
        where = f"{p}:{line}" if line else str(p)
        raise ValueError(f"{where}: {validation_message(exc, 'topology')}") from None


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
