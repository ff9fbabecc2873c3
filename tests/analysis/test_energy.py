"""Energy per request (analysis/energy.py): constructed requests on a constructed network give the
joules computed here by hand from the power table and the radio model; a request's radio joules are
its own transfers' (the same wherever the device's other requests come) and what they leave out of
the device's whole-run radio energy is the device's overhead; unknown figures are missing (NaN in the
frame, None in the summary), never 0; the summary divides by the images delivered."""

from __future__ import annotations

from typing import Any

import pandas as pd
import pytest

from analysis.energy import (
    OVERHEAD_KEYS,
    REQUEST_MESSAGE_BYTES,
    device_radio_overhead,
    device_transfers,
    request_energy,
)
from analysis.summary import summarize
from nodes.planning.hardware import HardwarePower, load_power
from topologies.radio import RADIOS, radio_energy

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


LTE = RADIOS["lte"]
REQUEST_MBIT = REQUEST_MESSAGE_BYTES * 8 / 1e6
PROMOTION_J = LTE.promotion_mw * LTE.promotion_s / 1000
# a's and b's radio joules on their own: alpha per Mbit and beta per busy second for each transfer,
# tail power for the gap between the request's two transfers (a: 100.05 -> 100.3, b: 101.05 -> 101.6);
# no promotion, no trailing tail
RADIO_A_J = (LTE.alpha_up_mw * REQUEST_MBIT + LTE.beta_mw * 0.05 + LTE.alpha_down_mw * 0.096
             + LTE.beta_mw * 0.1 + LTE.tail_mw * 0.25) / 1000
RADIO_B_J = (LTE.alpha_up_mw * REQUEST_MBIT + LTE.beta_mw * 0.05 + LTE.alpha_down_mw * 0.04
             + LTE.beta_mw * 0.2 + LTE.tail_mw * 0.55) / 1000


def test_energy_of_constructed_requests_is_the_hand_computed_joules() -> None:
    e = request_energy(requests(), NETWORK, POWER)
    a, b, c = e.loc["a"], e.loc["b"], e.loc["c"]
    assert a["device_compute_j"] == pytest.approx(5.0 * 0.5)
    assert a["device_radio_j"] == pytest.approx(RADIO_A_J) and b["device_radio_j"] == pytest.approx(RADIO_B_J)
    # a finds the radio idle and b is d1's last request: neither pays the promotion or the 11.6 s tail
    assert a["radio_promotion_j"] == 0.0 and b["radio_promotion_j"] == 0.0
    assert a["radio_tail_j"] == pytest.approx(LTE.tail_mw * 0.25 / 1000)
    assert b["radio_tail_j"] == pytest.approx(LTE.tail_mw * 0.55 / 1000)
    assert b["radio_transfer_j"] == pytest.approx((LTE.alpha_up_mw * REQUEST_MBIT + LTE.beta_mw * 0.05
                                                   + LTE.alpha_down_mw * 0.04 + LTE.beta_mw * 0.2) / 1000)
    assert a["device_energy_j"] == pytest.approx(2.5 + RADIO_A_J)
    assert a["host_compute_j"] == pytest.approx({"cloud": 400 * 0.2, "d1": 2.5})
    assert a["total_compute_j"] == pytest.approx(82.5)
    assert b["device_compute_j"] == 0.0  # nothing ran on d1
    assert b["device_energy_j"] == pytest.approx(RADIO_B_J)
    assert b["total_compute_j"] == pytest.approx(400 * 0.3)
    # a native device: its compute energy is unknown, not 0; d2 has no radio: 0 J radio
    assert pd.isna(c["device_compute_j"]) and pd.isna(c["device_energy_j"]) and pd.isna(c["total_compute_j"])
    assert c["device_radio_j"] == 0.0


def test_the_overhead_is_what_the_requests_leave_out_of_the_devices_whole_run() -> None:
    frame = requests()
    overhead = device_radio_overhead(frame, NETWORK)
    d1 = overhead["d1"]
    # d1's radio over the whole run: promoted once at 100.0; tails 0.25 (a's gap), 0.6 (a's end at
    # 100.4 -> b at 101.0), 0.55 (b's gap), then the last runs out in full; no transfers overlap
    run_j = (PROMOTION_J * 1000 + LTE.alpha_up_mw * REQUEST_MBIT * 2 + LTE.beta_mw * (0.05 + 0.1 + 0.05 + 0.2)
             + LTE.alpha_down_mw * (0.096 + 0.04) + LTE.tail_mw * (0.25 + 0.6 + 0.55 + LTE.tail_s)) / 1000
    assert d1["requests"] == 2
    assert d1["run_radio_j"] == pytest.approx(run_j)
    assert d1["requests_radio_j"] == pytest.approx(RADIO_A_J + RADIO_B_J)
    # left out: the one promotion, the idle tail between a and b, and the trailing tail
    assert d1["promotion_j"] == pytest.approx(PROMOTION_J)
    assert d1["tail_j"] == pytest.approx(LTE.tail_mw * (0.6 + LTE.tail_s) / 1000)
    assert d1["transfer_j"] == pytest.approx(0.0, abs=1e-12)
    assert d1["total_j"] == pytest.approx(d1["promotion_j"] + d1["transfer_j"] + d1["tail_j"])
    # nothing hidden: per-request sum + overhead = the radio model over all the device's transfers
    e = request_energy(frame, NETWORK, POWER)
    assert e.loc[["a", "b"], "device_radio_j"].sum() + d1["total_j"] == pytest.approx(run_j)
    everything = sorted(device_transfers(frame[frame["request_id"] == "a"])
                        + device_transfers(frame[frame["request_id"] == "b"]), key=lambda t: t[0])
    assert d1["run_radio_j"] == pytest.approx(radio_energy(LTE, everything).total_j)
    # a device without a radio leaves nothing out; without a network document nothing is known
    assert overhead["d2"] == pytest.approx(dict.fromkeys(OVERHEAD_KEYS, 0.0) | {"requests": 1})
    assert device_radio_overhead(frame, None) == {"d1": None, "d2": None}
    assert device_radio_overhead(frame, {"hosts": [{"name": "d2"}]})["d1"] is None  # d1 not in it


def cloud_request(rid: str, t: float) -> dict:
    """A cloud_only request of d1 sent at t: the request goes up (t, 0.05 s), the result comes down
    (t + 0.6, 0.2 s, 5000 B)."""
    return stage(rid, "cloud_only", "d1", 0, 1, "cloud", hardware="datacenter_gpu", t_request_sent=t,
                 uplink_s=0.05, t_received=t + 0.07, transfer_s=0.01, message_bytes=300, compute_s=0.3,
                 t_result_received=t + 0.8, result_transfer_s=0.2, result_message_bytes=5_000)


@pytest.mark.parametrize("other_at_s", [None, 100.9, 200.0, 90.0],
                         ids=["alone", "just-after", "long-after", "before"])
def test_a_requests_figure_does_not_depend_on_the_devices_other_requests(other_at_s: float | None) -> None:
    """x's radio joules are the same alone, with another request of its device 0.1 s after its result
    (inside x's LTE tail: on one radio x's tail would be cut short and y spared a promotion), 99 s
    after (x's tail would run out in full) or before it (x would find the radio awake)."""
    rows = [cloud_request("x", 100.0)] + ([] if other_at_s is None else [cloud_request("y", other_at_s)])
    e = request_energy(pd.DataFrame(rows, columns=COLUMNS), NETWORK, POWER)
    x_j = (LTE.alpha_up_mw * REQUEST_MBIT + LTE.beta_mw * 0.05 + LTE.alpha_down_mw * 0.04 + LTE.beta_mw * 0.2
           + LTE.tail_mw * 0.55) / 1000  # the gap 100.05 -> 100.6 in flight
    assert e.loc["x", "device_radio_j"] == pytest.approx(x_j)
    assert e.loc["x", "radio_promotion_j"] == 0.0
    assert e.loc["x", "radio_tail_j"] == pytest.approx(LTE.tail_mw * 0.55 / 1000)
    if other_at_s is not None:  # the same shape of request costs the same, wherever it comes
        assert e.loc["y", "device_radio_j"] == pytest.approx(x_j)


def test_requests_that_overlap_in_time_leave_a_negative_transfer_overhead() -> None:
    """Two requests of d1 in flight together each pay beta (and tail power for their gap) over the
    same seconds: the overhead gives back the double count, so the identity still holds."""
    x, y = cloud_request("x", 0.0), cloud_request("y", 0.1)  # y: up 0.1-0.15, down 0.7-0.9
    frame = pd.DataFrame([x, y], columns=COLUMNS)
    per_request_j = (LTE.alpha_up_mw * REQUEST_MBIT + LTE.beta_mw * 0.25 + LTE.alpha_down_mw * 0.04
                     + LTE.tail_mw * 0.55) / 1000
    # one radio: busy 0-0.05, 0.1-0.15, 0.6-0.9 (0.4 s); idle gaps 0.05 and 0.45; one promotion
    run_j = (PROMOTION_J * 1000 + 2 * (LTE.alpha_up_mw * REQUEST_MBIT + LTE.alpha_down_mw * 0.04)
             + LTE.beta_mw * 0.4 + LTE.tail_mw * (0.05 + 0.45 + LTE.tail_s)) / 1000
    overhead = device_radio_overhead(frame, NETWORK)["d1"]
    figures = request_energy(frame, NETWORK, POWER)["device_radio_j"]
    assert figures.tolist() == pytest.approx([per_request_j] * 2)
    assert overhead["transfer_j"] == pytest.approx(LTE.beta_mw * (0.4 - 0.5) / 1000)
    assert overhead["tail_j"] == pytest.approx(LTE.tail_mw * (0.5 + LTE.tail_s - 1.1) / 1000)
    assert overhead["promotion_j"] == pytest.approx(PROMOTION_J)
    assert 2 * per_request_j + overhead["total_j"] == pytest.approx(run_j)


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
    # b is d1's last request: its J/image holds its own transfers and gap, not the radio's 11.6 s tail
    assert summary["cloud_only"]["device_radio_per_image_j"] == pytest.approx(RADIO_B_J / 4)
    assert split["compute_energy_per_image_j"] == pytest.approx(82.5 / 4)
    assert summary["device_only"]["device_energy_per_image_j"] is None
    assert summary["device_only"]["compute_energy_per_image_j"] is None
    assert summarize(frame, None, tmp_path, quality=False, power=POWER)["cloud_only"][
        "device_energy_per_image_j"] is None  # no network: the radio is unknown


def test_a_power_table_of_one_hardware_counts_only_its_hosts() -> None:
    e = request_energy(requests(), NETWORK, {"datacenter_gpu": HardwarePower(300.0, 30.0)})
    assert e.loc["b", "total_compute_j"] == pytest.approx(300 * 0.3)
    assert e.loc["a", "host_compute_j"] == {"cloud": pytest.approx(60.0), "d1": None}
