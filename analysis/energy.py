"""Energy per request, in joules: the requesting device's own compute and radio, and each host's compute.

For each ok request (its rows in requests.parquet, one per stage):

    host_compute_j[h]  = busy_w(hardware of h) * sum of compute_s of the stages on h
    device_compute_j   = host_compute_j[device], 0 where no stage ran on the device
    device_radio_j     = transfer + tail joules of the request's own transfers to and from the device,
                         on their own (topologies/radio.py, request_radio_energy):
                           transfer  alpha_dir per bit + beta over the union of the transfers' times
                           tail      tail_mw over the gaps between the request's first and last
                                     transfer, each up to the radio's tail time (the radio stays in
                                     its high-power state while the request is in flight)
                         radio_promotion_j: only for a gap inside the request longer than the
                         tail time (the radio went idle); no first promotion, no trailing tail
    device_energy_j    = device_compute_j + device_radio_j
    total_compute_j    = sum of host_compute_j over the request's hosts (the device's included)

Compute energy is busy power times compute time (the paced time in profiled mode, overruns
included); idle power is not charged to requests (which request an idle second belongs to is a
choice, not a measurement).  A stage whose host is not profiled (`compute_mode` native: this
machine's time, not the hardware's) or whose hardware has no busy_w/idle_w leaves that host's
figure, the total and, on the device, the device's figures missing (NaN in the frame, None in
host_compute_j and in the summary), never 0.

The device's transfers, from the records' timestamps and sizes (seconds as the table gives them):
    up    the request, from t_request_sent for uplink_s (stage 0's row; it includes the hop from the
          access point to the coordinator), REQUEST_MESSAGE_BYTES; a cascade's escalation the same,
          from its first row's uplink_s less gate_s (the gate's own compute is not charged)
    down  a stage's input (the dispatch envelope for stage 0, or the state) arriving on the device
          from another host: t_received - transfer_s for transfer_s, message_bytes
    up    a stage's input leaving the device for another host (the device ran the stage before)
    down  the result, when the last stage ran elsewhere: t_result_received - result_transfer_s
          for result_transfer_s, result_message_bytes
A message between two stages on the device, and a result the device computed itself, stay on it.
The small `accepted` message (the plan, coordinator -> device) has no timestamps in the records and
is left out; so are failed requests' transfers.

Why a request's radio joules are its own transfers alone: a request's figure must not depend on
the workload's order.  Run through one radio together, the device's transfers give the radio's
promotion to whichever request finds it idle and its trailing tail (LTE: about 11.6 s at about
1 W, 12.3 J) to whichever request happens to come last, and a request right after another pays no
promotion; the per-image figure of a strategy then says more about the arrival order than about
the strategy (and a planner minimising predicted device energy per request could not predict it).

What that leaves out is the device's, not a request's, and is reported apart, per device over the
whole run, by device_radio_overhead: the whole-run radio energy of the device (radio_energy over
all its ok requests' transfers, sorted, with promotions and tails as the radio model charges them)
minus the sum of its requests' device_radio_j, split by radio state, so that per-request sum plus
overhead is the device's whole-run radio energy and nothing is hidden.  Its promotion_j is every
promotion of the run that no request paid (>= 0).  Its tail_j and transfer_j are signed: idle
tails (between requests and after the last one) make them larger; requests of one device that
overlap in time make them smaller (each request pays beta, and tail power for its gaps, over the
same seconds).

The radio kind of a device is its host's `radio` in network.json (None or absent: no radio energy,
0 J).  Without a network document the radios are unknown: device_radio_j and device_energy_j are
missing, and so is every device's overhead (None).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd

from nodes.planning.hardware import HardwarePower
from topologies.radio import RadioEnergy, Transfer, radio_energy, radio_model, request_radio_energy

# The request envelope (JSON: ids, strategy, labels, seed, timestamps) as protocol.encode writes it:
# 239 B at n = 4 and 360 B at n = 64 images (measured on RequestMsg); 400 B covers it.  Its radio
# cost is alpha * 3.2 kbit: about 1.4 mJ uplink on LTE, negligible beside beta and the tail.
REQUEST_MESSAGE_BYTES = 400

ENERGY_COLUMNS = ["strategy", "device", "n_images", "device_compute_j", "radio_promotion_j",
                  "radio_transfer_j", "radio_tail_j", "device_radio_j", "device_energy_j",
                  "host_compute_j", "total_compute_j"]
_JOULES = dict.fromkeys([c for c in ENERGY_COLUMNS if c.endswith("_j") and c != "host_compute_j"], float)

# The keys of one device's entry in device_radio_overhead's answer.
OVERHEAD_KEYS = ["requests", "run_radio_j", "requests_radio_j", "promotion_j", "transfer_j", "tail_j",
                 "total_j"]


def request_energy(requests: pd.DataFrame, network: Mapping[str, Any] | None,
                   power: Mapping[str, HardwarePower]) -> pd.DataFrame:
    """One row per ok request (index request_id) with the columns ENERGY_COLUMNS; joules, NaN
    where unknown (see the module docstring).  `host_compute_j` holds {host: joules or None}."""
    ok = _ok_stages(requests)
    if ok.empty:
        return pd.DataFrame(columns=ENERGY_COLUMNS).rename_axis("request_id").astype(_JOULES)
    radio = _radio_by_request(ok, network)
    rows = {}
    for rid, stages in ok.groupby("request_id", sort=False):
        device = stages["device"].iloc[0]
        hosts = _host_compute(stages, power)
        device_compute = hosts.get(device, 0.0)
        energy = radio[rid]
        device_radio = None if energy is None else energy.total_j
        rows[rid] = {
            "strategy": stages["strategy"].iloc[0], "device": device,
            "n_images": int(stages["n_images"].iloc[0]),
            "device_compute_j": device_compute,
            "radio_promotion_j": None if energy is None else energy.promotion_j,
            "radio_transfer_j": None if energy is None else energy.transfer_j,
            "radio_tail_j": None if energy is None else energy.tail_j,
            "device_radio_j": device_radio,
            "device_energy_j": _sum([device_compute, device_radio]),
            "host_compute_j": hosts, "total_compute_j": _sum(list(hosts.values())),
        }
    out = pd.DataFrame.from_dict(rows, orient="index", columns=ENERGY_COLUMNS).rename_axis("request_id")
    return out.astype(_JOULES)  # None -> NaN, also where a whole column is unknown


def device_radio_overhead(requests: pd.DataFrame,
                          network: Mapping[str, Any] | None) -> dict[str, dict[str, float | int] | None]:
    """Per device with an ok request, the radio joules the per-request figures leave out (module
    docstring): {"requests": its ok requests, "run_radio_j": radio_energy over all their transfers,
    "requests_radio_j": the sum of their device_radio_j, and "promotion_j", "transfer_j", "tail_j",
    "total_j": run minus requests, by radio state}; all 0 for a device without a radio, None where
    the radio is unknown (no network document, or a device it does not name)."""
    ok = _ok_stages(requests)
    kinds = _radio_kinds(network)
    out: dict[str, dict[str, float | int] | None] = {}
    for device, rows in ok.groupby("device", sort=False):
        per_request = {rid: device_transfers(stages)
                       for rid, stages in rows.groupby("request_id", sort=False)}
        if kinds is None or device not in kinds:
            out[str(device)] = None
            continue
        run = attributed = RadioEnergy()
        if kinds[device] is not None:
            model = radio_model(kinds[device])
            # stable sort: transfers starting together keep their request's order
            everything = sorted((t for ts in per_request.values() for t in ts), key=lambda t: t[0])
            run = radio_energy(model, everything)
            attributed = sum((request_radio_energy(model, ts) for ts in per_request.values()), RadioEnergy())
        out[str(device)] = {
            "requests": len(per_request), "run_radio_j": run.total_j, "requests_radio_j": attributed.total_j,
            "promotion_j": run.promotion_j - attributed.promotion_j,
            "transfer_j": run.transfer_j - attributed.transfer_j, "tail_j": run.tail_j - attributed.tail_j,
            "total_j": run.total_j - attributed.total_j,
        }
    return out


def _ok_stages(requests: pd.DataFrame) -> pd.DataFrame:
    """The stage rows of ok requests, by request and stage (device_transfers needs stage order)."""
    ok = requests[(requests["outcome"] == "ok") & requests["stage_index"].notna()]
    return ok.sort_values(["request_id", "stage_index"])


def _sum(values: list[float | None]) -> float | None:
    return None if any(v is None for v in values) else float(sum(values))


def _host_compute(stages: pd.DataFrame, power: Mapping[str, HardwarePower]) -> dict[str, float | None]:
    """host -> busy_w x compute seconds of the request's stages there (None: not profiled, or no
    power figures for its hardware)."""
    out: dict[str, float | None] = {}
    for host, group in stages.groupby("host", sort=False):
        hardware = set(group["hardware"])
        known = (group["compute_mode"] == "profiled").all() and len(hardware) == 1
        name = hardware.pop() if known else None
        out[str(host)] = (power[name].busy_w * float(group["compute_s"].sum())
                          if isinstance(name, str) and name in power else None)
    return out


def device_transfers(stages: pd.DataFrame) -> list[Transfer]:
    """The device's transfers of one request (its rows sorted by stage), in time order."""
    rows = stages.to_dict("records")
    device = rows[0]["device"]
    out: list[Transfer] = [(rows[0]["t_request_sent"], rows[0]["uplink_s"], REQUEST_MESSAGE_BYTES, "up")]
    for i, row in enumerate(rows):
        # a cascade's escalation (a later row with an uplink) is a request of its own: up after the
        # gate, and its first stage's input comes from the coordinator
        escalation = i > 0 and (row.get("uplink_s") or 0.0) > 0
        if escalation:
            gate = row.get("gate_s") or 0.0
            out.append((row["t_coordinator_received"] - row["uplink_s"] + gate, row["uplink_s"] - gate,
                        REQUEST_MESSAGE_BYTES, "up"))
        # a message crosses the radio when exactly one of its ends is the device (stage 0's comes
        # from the coordinator, never the device)
        here, before = row["host"] == device, i > 0 and not escalation and rows[i - 1]["host"] == device
        if here != before:
            out.append((row["t_received"] - row["transfer_s"], row["transfer_s"], int(row["message_bytes"]),
                        "down" if here else "up"))
    last = rows[-1]
    if last["host"] != device:
        out.append((last["t_result_received"] - last["result_transfer_s"], last["result_transfer_s"],
                    int(last["result_message_bytes"]), "down"))
    return sorted(out, key=lambda t: t[0])


def _radio_kinds(network: Mapping[str, Any] | None) -> dict[str, str | None] | None:
    """host name -> its radio kind (None: no radio); None without a network document."""
    if network is None:
        return None
    return {h.get("name"): h.get("radio") for h in network.get("hosts") or []}


def _radio_by_request(ok: pd.DataFrame, network: Mapping[str, Any] | None) -> dict[str, RadioEnergy | None]:
    """request_id -> the radio joules of its own transfers (None: radio unknown)."""
    kinds = _radio_kinds(network)
    out: dict[str, RadioEnergy | None] = {}
    for rid, stages in ok.groupby("request_id", sort=False):
        device = stages["device"].iloc[0]
        if kinds is None or device not in kinds:  # no network, or a device it does not know: no figure
            out[rid] = None
        elif kinds[device] is None:
            out[rid] = RadioEnergy()
        else:
            out[rid] = request_radio_energy(radio_model(kinds[device]), device_transfers(stages))
    return out
