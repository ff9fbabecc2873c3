"""Radio energy (topologies/radio.py): a constructed sequence of transfers costs exactly the model's
formula, per radio kind, over one radio's whole run (transfer_energies) and for one request on its own
(request_radio_energy: no promotion, no trailing tail); the two differ by exactly the promotions and
idle tails; a scenario naming a radio that does not exist is refused."""

from __future__ import annotations

import pytest

from topologies.radio import (
    RADIOS,
    RadioEnergy,
    radio_energy,
    radio_model,
    request_radio_energy,
    transfer_energies,
)
from topologies.spec import parse_topology

# (start_s, duration_s, bytes, direction): 1 Mbit up; 2 s later 2 Mbit down; an empty message inside
# that one; then, 16.5 s after the radio's last activity, 8 Mbit up
TRANSFERS = [(0.0, 1.0, 125_000, "up"), (3.0, 0.5, 250_000, "down"), (3.2, 0.1, 0, "up"),
             (20.0, 0.25, 1_000_000, "up")]


@pytest.mark.parametrize("kind", ["wifi", "lte", "5g"])
def test_energy_of_a_constructed_sequence_is_the_formula(kind: str) -> None:
    m = RADIOS[kind]
    promotion = m.promotion_mw * m.promotion_s / 1000
    tail = m.tail_mw / 1000  # joules per second of tail
    # each transfer: alpha per Mbit (mJ) + beta for the time it alone keeps the radio busy
    moved = [(m.alpha_up_mw * 1 + m.beta_mw * 1.0) / 1000, (m.alpha_down_mw * 2 + m.beta_mw * 0.5) / 1000,
             0.0,  # nothing moved, and its time lies inside the transfer before
             (m.alpha_up_mw * 8 + m.beta_mw * 0.25) / 1000]
    expected = [
        RadioEnergy(promotion, moved[0], tail * min(m.tail_s, 2.0)),  # tail cut by the next transfer
        RadioEnergy(promotion if m.tail_s <= 2.0 else 0.0, moved[1], tail * m.tail_s),  # idle again by 20 s
        RadioEnergy(0.0, moved[2], 0.0),  # overlaps: no promotion, no tail of its own
        RadioEnergy(promotion, moved[3], tail * m.tail_s),  # the last tail runs out in full
    ]
    got = transfer_energies(m, TRANSFERS)
    for g, e in zip(got, expected, strict=True):
        assert (g.promotion_j, g.transfer_j, g.tail_j) == pytest.approx(
            (e.promotion_j, e.transfer_j, e.tail_j))
    total = radio_energy(m, TRANSFERS)
    assert total.total_j == pytest.approx(sum(e.total_j for e in expected))
    # promotion paid where the radio had gone idle: twice on LTE and 5G (one tail covers the 2 s
    # gap), three times on WiFi (its tail lasts a quarter second)
    assert total.promotion_j == pytest.approx(promotion * (3 if kind == "wifi" else 2))


def test_an_lte_handoff_costs_millijoules_then_seconds_of_tail() -> None:
    """Issue 11's example: a 1 KiB hand-off costs milliJoules to send, then about 11 s at about 1 W."""
    e = radio_energy(radio_model("lte"), [(0.0, 0.002, 1024, "up")])
    assert 1e-3 < e.transfer_j < 10e-3
    assert e.tail_j == pytest.approx(1.060 * 11.576) and e.promotion_j == pytest.approx(1.2107 * 0.2601)


def test_back_to_back_transfers_pay_one_promotion_and_no_tail_between() -> None:
    lte = radio_model("lte")
    e = transfer_energies(lte, [(0.0, 1.0, 0, "up"), (1.0, 1.0, 0, "down")])
    assert e[0].tail_j == 0.0 and e[1].promotion_j == 0.0
    assert e[1].tail_j == pytest.approx(lte.tail_mw * lte.tail_s / 1000)


@pytest.mark.parametrize(("transfers", "message"), [
    ([(1.0, 0.1, 10, "up"), (0.5, 0.1, 10, "up")], "sorted by start"),
    ([(0.0, -0.1, 10, "up")], "negative"),
    ([(0.0, 0.1, 10, "sideways")], "direction"),
])
@pytest.mark.parametrize("energy", [transfer_energies, request_radio_energy])
def test_bad_transfers_are_refused(transfers: list, message: str, energy) -> None:
    with pytest.raises(ValueError, match=message):
        energy(radio_model("wifi"), transfers)


# one request's transfers: 1 Mbit up for 0.5 s; 0.1 s later 2 Mbit down for 0.3 s, an empty message
# inside that one.  The gap is shorter than every radio's tail (WiFi: 0.2381 s)
REQUEST = [(0.0, 0.5, 125_000, "up"), (0.6, 0.3, 250_000, "down"), (0.7, 0.1, 0, "up")]


@pytest.mark.parametrize("kind", ["wifi", "lte", "5g"])
def test_a_requests_own_energy_is_bits_busy_time_and_its_gaps(kind: str) -> None:
    m = RADIOS[kind]
    two = request_radio_energy(m, REQUEST[:2])
    # alpha per Mbit, beta over 0.5 + 0.3 s busy, tail power over the 0.1 s gap; no promotion or tail after
    assert (two.promotion_j, two.transfer_j, two.tail_j) == pytest.approx(
        (0.0, (m.alpha_up_mw * 1 + m.alpha_down_mw * 2 + m.beta_mw * 0.8) / 1000, m.tail_mw * 0.1 / 1000))
    # the empty message inside the download adds no bits and no busy time: beta once over the union
    three = request_radio_energy(m, REQUEST)
    assert (three.promotion_j, three.transfer_j, three.tail_j) == pytest.approx(
        (two.promotion_j, two.transfer_j, two.tail_j))
    assert request_radio_energy(m, []) == RadioEnergy() and radio_energy(m, []) == RadioEnergy()


@pytest.mark.parametrize(("shift_s", "promotions", "idle_tail_s"), [
    (5.0, 1, 4.1),  # the second request comes 4.1 s after the first ends: inside LTE's tail
    (50.0, 2, RADIOS["lte"].tail_s),  # long after: the first tail runs out, the radio is promoted again
])
def test_the_whole_run_is_the_requests_plus_promotions_and_idle_tails(shift_s: float, promotions: int,
                                                                      idle_tail_s: float) -> None:
    lte = radio_model("lte")
    second = [(s + shift_s, d, b, direction) for s, d, b, direction in REQUEST]
    one = (lte.alpha_up_mw * 1 + lte.alpha_down_mw * 2 + lte.beta_mw * 0.8 + lte.tail_mw * 0.1) / 1000
    # each request's figure is its own, whenever the other comes
    assert request_radio_energy(lte, REQUEST).total_j == pytest.approx(one)
    assert request_radio_energy(lte, second).total_j == pytest.approx(one)
    run = radio_energy(lte, REQUEST + second)
    left_out_j = (promotions * lte.promotion_mw * lte.promotion_s
                  + lte.tail_mw * (idle_tail_s + lte.tail_s)) / 1000  # between the requests, and after
    assert run.total_j == pytest.approx(2 * one + left_out_j)
    assert run.promotion_j == pytest.approx(promotions * lte.promotion_mw * lte.promotion_s / 1000)


def test_every_model_names_its_source_and_5g_says_it_is_an_estimate() -> None:
    assert set(RADIOS) == {"wifi", "lte", "5g"}
    assert all(m.source for m in RADIOS.values()) and RADIOS["5g"].source.startswith("estimate")
    with pytest.raises(ValueError, match="unknown radio kind '4g'"):
        radio_model("4g")


def test_a_scenario_radio_kind_that_does_not_exist_is_one_line_naming_the_field() -> None:
    base = {"kind": "two_tier", "devices": [{"name": "d1", "bw_mbit": 10, "radio": "lte"}]}
    assert parse_topology(base).device_specs()[0].radio == "lte"
    assert parse_topology({**base, "devices": [{"name": "d1"}]}).device_specs()[0].radio is None
    with pytest.raises(ValueError) as info:
        parse_topology({**base, "devices": [{"name": "d1", "radio": "4g"}]})
    assert "\n" not in str(info.value) and "topology.devices[0].radio" in str(info.value)
