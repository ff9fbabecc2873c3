"""Energy per request (analysis/energy.py): constructed requests on a constructed network give the
joules computed here by hand from the power table and the radio model; unknown figures are missing
(NaN in the frame, None in the summary), never 0; the summary divides by the images delivered."""

from __future__ import annotations

from typing import Any

import pandas as pd
import pytest

from analysis.energy import REQUEST_MESSAGE_BYTES, device_transfers, request_energy
from analysis.summary import summarize
from nodes.runtime.pacing import HardwarePower, load_power
from topologies.radio import RADIOS

from .conftest import COLUMNS

POWER = load_power()  # datacenter_gpu busy 400 W, phone busy 5 W (nodes/profiles.toml)
NETWORK = {"hosts": [{"name": "d1", "role": "device", "radio": "lte"}, {"name": "d2", "role": "device"},
                     {"name": "edge", "role": "edge"}, {"name": "cloud", "role": "cloud"}]}


def stage(rid: str, strategy: str, device: str, index: int, count: int, host: str, **values: Any) -> dict:
    row = dict.fromkeys(COLUMNS)
    row.update(request_id=rid, strategy=strategy, device=device, n_images=4, outcome="ok", stage_index=index,
               stage_count=count, host=host, uplink_s=0.0, transfer_s=0.0, result_transfer_s=0.0,
               result_message_bytes=0, compute_mode="profiled", overrun_steps=0, overrun_s=0.0, warmup=False)
    row.update(values)
    return row


def requests() -> pd.DataFrame:
    """On d1 (LTE): `a` runs stage 0 on the cloud and stage 1 on d1 (the state comes down, the result
    stays); `b` runs on the cloud only (the result comes down).  On d2 (no radio): `c` runs natively."""
    rows = [
        stage("a", "split", "d1", 0, 2, "cloud", hardware="datacenter_gpu", t_request_sent=100.0,
              uplink_s=0.05, t_received=100.07, transfer_s=0.01, message_bytes=300, compute_s=0.2),
        stage("a", "split", "d1", 1, 2, "d1", hardware="phone", t_request_sent=100.0, t_received=100.4,
              transfer_s=0.1, message_bytes=12_000, compute_s=0.5, t_result_received=100.95,
              result_transfer_s=0.001, result_message_bytes=5_000),
        stage("b", "cloud_only", "d1", 0, 1, "cloud", hardware="datacenter_gpu", t_request_sent=101.0,
              uplink_s=0.05, t_received=101.07, transfer_s=0.01, message_bytes=300, compute_s=0.3,
              t_result_received=101.8, result_transfer_s=0.2, result_message_bytes=5_000),
        stage("c", "device_only", "d2", 0, 1, "d2", hardware=None, compute_mode="native", t_request_sent=50.0,
              uplink_s=0.01, t_received=50.03, transfer_s=0.01, message_bytes=300, compute_s=0.4,
              t_result_received=50.5, result_transfer_s=0.001, result_message_bytes=5_000),
    ]
    return pd.DataFrame(rows, columns=COLUMNS)


def test_device_transfers_are_the_messages_that_cross_its_radio() -> None:
    frame = requests()
    a = device_transfers(frame[frame["request_id"] == "a"])
    assert a == [(100.0, 0.05, REQUEST_MESSAGE_BYTES, "up"), (pytest.approx(100.3), 0.1, 12_000, "down")]
    b = device_transfers(frame[frame["request_id"] == "b"])
    assert b == [(101.0, 0.05, REQUEST_MESSAGE_BYTES, "up"), (pytest.approx(101.6), 0.2, 5_000, "down")]
    c = device_transfers(frame[frame["request_id"] == "c"])  # the dispatch comes down, the result stays
    assert c == [(50.0, 0.01, REQUEST_MESSAGE_BYTES, "up"), (pytest.approx(50.02), 0.01, 300, "down")]


def test_energy_of_constructed_requests_is_the_hand_computed_joules() -> None:
    e = request_energy(requests(), NETWORK, POWER)
    lte = RADIOS["lte"]
    mbit = REQUEST_MESSAGE_BYTES * 8 / 1e6
    # d1's radio over both requests: promoted once; the tails between transfers are cut by the next
    # one (100.05 -> 100.3, 100.4 -> 101.0, 101.05 -> 101.6) and the last runs out in full
    radio_a = (lte.promotion_mw * lte.promotion_s + lte.alpha_up_mw * mbit + lte.beta_mw * 0.05
               + lte.alpha_down_mw * 0.096 + lte.beta_mw * 0.1 + lte.tail_mw * (0.25 + 0.6)) / 1000
    radio_b = (lte.alpha_up_mw * mbit + lte.beta_mw * 0.05 + lte.alpha_down_mw * 0.04 + lte.beta_mw * 0.2
               + lte.tail_mw * (0.55 + lte.tail_s)) / 1000
    a, b, c = e.loc["a"], e.loc["b"], e.loc["c"]
    assert a["device_compute_j"] == pytest.approx(5.0 * 0.5)
    assert a["device_radio_j"] == pytest.approx(radio_a) and b["device_radio_j"] == pytest.approx(radio_b)
    assert a["radio_promotion_j"] == pytest.approx(lte.promotion_mw * lte.promotion_s / 1000)
    assert b["radio_promotion_j"] == 0.0
    assert b["radio_tail_j"] == pytest.approx(lte.tail_mw * (0.55 + lte.tail_s) / 1000)
    assert a["device_energy_j"] == pytest.approx(2.5 + radio_a)
    assert a["host_compute_j"] == pytest.approx({"cloud": 400 * 0.2, "d1": 2.5})
    assert a["total_compute_j"] == pytest.approx(82.5)
    assert b["device_compute_j"] == 0.0  # nothing ran on d1
    assert b["device_energy_j"] == pytest.approx(radio_b)
    assert b["total_compute_j"] == pytest.approx(400 * 0.3)
    # a native device: its compute energy is unknown, not 0; d2 has no radio: 0 J radio
    assert pd.isna(c["device_compute_j"]) and pd.isna(c["device_energy_j"]) and pd.isna(c["total_compute_j"])
    assert c["device_radio_j"] == 0.0


def test_unknown_radio_or_power_is_none_not_zero() -> None:
    e = request_energy(requests(), None, POWER)  # no network document: the radios are unknown
    assert e["device_radio_j"].isna().all() and e["device_energy_j"].isna().all()
    assert e.loc["a", "device_compute_j"] == pytest.approx(2.5)
    no_phone = {k: v for k, v in POWER.items() if k != "phone"}
    e = request_energy(requests(), NETWORK, no_phone)
    assert pd.isna(e.loc["a", "device_compute_j"]) and pd.isna(e.loc["a", "total_compute_j"])
    assert e.loc["b", "device_energy_j"] > 0  # b ran nowhere the table lacks


def test_summary_gives_joules_per_image_and_none_where_unknown(tmp_path) -> None:
    frame = requests()
    energy = request_energy(frame, NETWORK, POWER)
    summary = summarize(frame, None, tmp_path, quality=False, network=NETWORK, power=POWER)
    split = summary["split"]
    assert split["device_energy_per_image_j"] == pytest.approx(energy.loc["a", "device_energy_j"] / 4)
    assert split["device_radio_per_image_j"] == pytest.approx(energy.loc["a", "device_radio_j"] / 4)
    assert split["compute_energy_per_image_j"] == pytest.approx(82.5 / 4)
    assert summary["device_only"]["device_energy_per_image_j"] is None
    assert summary["device_only"]["compute_energy_per_image_j"] is None
    assert summarize(frame, None, tmp_path, quality=False, power=POWER)["cloud_only"][
        "device_energy_per_image_j"] is None  # no network: the radio is unknown


def test_a_power_table_of_one_hardware_counts_only_its_hosts() -> None:
    e = request_energy(requests(), NETWORK, {"datacenter_gpu": HardwarePower(300.0, 30.0)})
    assert e.loc["b", "total_compute_j"] == pytest.approx(300 * 0.3)
    assert e.loc["a", "host_compute_j"] == {"cloud": pytest.approx(60.0), "d1": None}
