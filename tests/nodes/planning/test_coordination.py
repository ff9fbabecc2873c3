"""When the coordinator takes a message for stuck behind a failed link (and re-plans its request):
the cases measured in scenarios/bench/outage-cloud.toml (emulated seconds)."""

from nodes.runtime.coordinator import RESCUE_MIN_S, overdue


def test_a_dispatch_into_a_dead_backhaul_is_overdue_once_past_its_stage():
    # large@cloud: 5 ms away, 0.05 s of compute; the dispatch went into the outage
    assert not overdue(0.07, expected_s=0.055, transfer_s=0.005, round_trip_s=0.01, floor_s=RESCUE_MIN_S)
    assert overdue(0.086, expected_s=0.055, transfer_s=0.005, round_trip_s=0.01, floor_s=RESCUE_MIN_S)


def test_a_result_that_waited_one_round_trip_on_a_quiet_connection_is_not():
    # cloud -> Wi-Fi device: 0.016 s expected, 0.047 s taken (TCP's restart after idle), round trip 0.03 s
    assert not overdue(0.047, expected_s=0.016, transfer_s=0.016, round_trip_s=0.03, floor_s=RESCUE_MIN_S)
    assert overdue(0.08, expected_s=0.016, transfer_s=0.016, round_trip_s=0.03, floor_s=RESCUE_MIN_S)


def test_a_slow_path_is_given_its_own_multiple():
    # a 1 s transfer is late only 2 s past it, however short its round trip
    assert not overdue(2.9, expected_s=1.0, transfer_s=1.0, round_trip_s=0.05, floor_s=RESCUE_MIN_S)
    assert overdue(3.0, expected_s=1.0, transfer_s=1.0, round_trip_s=0.05, floor_s=RESCUE_MIN_S)
