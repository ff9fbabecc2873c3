"""Energy per request, in joules: the requesting device's own compute and radio, and each host's compute.

For each ok request (its rows in requests.parquet, one per stage):

    host_compute_j[h]  = busy_w(hardware of h) * sum of compute_s of the stages on h
    device_compute_j   = host_compute_j[device], 0 where no stage ran on the device
    device_radio_j     = promotion + transfer + tail joules of the device's radio (topologies/radio.py)
                         for the request's transfers to and from the device
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
          access point to the coordinator), REQUEST_MESSAGE_BYTES
    down  a stage's input (the dispatch envelope for stage 0, or the state) arriving on the device
          from another host: t_received - transfer_s for transfer_s, message_bytes
    up    a stage's input leaving the device for another host (the device ran the stage before)
    down  the result, when the last stage ran elsewhere: t_result_received - result_transfer_s
          for result_transfer_s, result_message_bytes
A message between two stages on the device, and a result the device computed itself, stay on it.
The small `accepted` message (the plan, coordinator -> device) has no timestamps in the records and
is left out; so are failed requests' transfers.

One radio per device over the whole run: its transfers from every request, sorted by time, go
through the radio model together, so a tail left by one request can spare the next one's
promotion (and is cut short by it); each transfer's promotion, transfer and tail joules are
charged to the request it belongs to.  With requests closer together than the radio's tail (LTE:
about 11.6 s), the tail is mostly charged to the request before: radio energy per request depends
on the workload's spacing, as it does on a real phone.

The radio kind of a device is its host's `radio` in network.json (None or absent: no radio energy,
0 J).  Without a network document the radios are unknown: device_radio_j and device_energy_j are
missing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd

from nodes.runtime.pacing import HardwarePower
from topologies.radio import RadioEnergy, Transfer, radio_model, transfer_energies

# The request envelope (JSON: ids, strategy, labels, seed, timestamps) as protocol.encode writes it:
# 239 B at n = 4 and 360 B at n = 64 images (measured on RequestMsg); 400 B covers it.  Its radio
# cost is alpha * 3.2 kbit: about 1.4 mJ uplink on LTE, negligible beside beta and the tail.
REQUEST_MESSAGE_BYTES = 400

ENERGY_COLUMNS = ["strategy", "device", "n_images", "device_compute_j", "radio_promotion_j",
                  "radio_transfer_j", "radio_tail_j", "device_radio_j", "device_energy_j",
                  "host_compute_j", "total_compute_j"]
_JOULES = dict.fromkeys([c for c in ENERGY_COLUMNS if c.endswith("_j") and c != "host_compute_j"], float)


def request_energy(requests: pd.DataFrame, network: Mapping[str, Any] | None,
                   power: Mapping[str, HardwarePower]) -> pd.DataFrame:
    """One row per ok request (index request_id) with the columns ENERGY_COLUMNS; joules, NaN
    where unknown (see the module docstring).  `host_compute_j` holds {host: joules or None}."""
    ok = requests[(requests["outcome"] == "ok") & requests["stage_index"].notna()]
    if ok.empty:
        return pd.DataFrame(columns=ENERGY_COLUMNS).rename_axis("request_id").astype(_JOULES)
    ok = ok.sort_values(["request_id", "stage_index"])
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
        # a message crosses the radio when exactly one of its ends is the device (stage 0's comes
        # from the coordinator, never the device)
        here, before = row["host"] == device, i > 0 and rows[i - 1]["host"] == device
        if here != before:
            out.append((row["t_received"] - row["transfer_s"], row["transfer_s"], int(row["message_bytes"]),
                        "down" if here else "up"))
    last = rows[-1]
    if last["host"] != device:
        out.append((last["t_result_received"] - last["result_transfer_s"], last["result_transfer_s"],
                    int(last["result_message_bytes"]), "down"))
    return sorted(out, key=lambda t: t[0])


def _radio_by_request(ok: pd.DataFrame, network: Mapping[str, Any] | None) -> dict[str, RadioEnergy | None]:
    """request_id -> its share of its device's radio energy over the run (None: radio unknown)."""
    if network is None:
        return dict.fromkeys(ok["request_id"].unique())
    kinds = {h.get("name"): h.get("radio") for h in network.get("hosts") or []}
    out: dict[str, RadioEnergy | None] = {}
    for device, rows in ok.groupby("device", sort=False):
        ids = list(rows["request_id"].unique())
        if device not in kinds:  # a device the network document does not know: no figure
            out.update(dict.fromkeys(ids))
            continue
        out.update({rid: RadioEnergy() for rid in ids})
        if kinds[device] is None:
            continue
        owned = sorted(((t, rid) for rid, stages in rows.groupby("request_id", sort=False)
                        for t in device_transfers(stages)), key=lambda item: item[0][0])
        energies = transfer_energies(radio_model(kinds[device]), [t for t, _ in owned])
        for (_, rid), energy in zip(owned, energies, strict=True):
            out[rid] += energy
    return out
