"""The coordinator's live estimates: paths fitted from observed messages, hosts' queues from
reservations and reports."""

import pytest

from nodes.planning.estimates import HostQueues, LiveEstimates, fit


def test_a_path_fit_recovers_delay_and_rate_from_messages_of_two_sizes():
    live = LiveEstimates()
    for size in (700, 12_000, 700, 12_000):
        live.observe_transfer("edge", "d1", size, 0.02 + size / 250e3)  # 20 ms, 2 Mbit/s
    assert fit(list(live.paths[("edge", "d1")])) == pytest.approx((0.02, 1 / 250e3))
    assert live.transfer_s("edge", "d1", 50_000) == pytest.approx(0.02 + 0.2)
    assert live.transfer_s("d1", "edge", 50_000) == pytest.approx(0.02 + 0.2)  # the other way: symmetric
    assert live.transfer_s("cloud", "d1", 10) is None


def test_one_size_each_way_is_fitted_with_the_other_direction():
    live = LiveEstimates()
    for _ in range(3):
        live.observe_transfer("d1", "edge", 300, 0.01 + 300 / 1e6)  # requests up
        live.observe_transfer("edge", "d1", 4000, 0.01 + 4000 / 1e6)  # results down
    assert live.transfer_s("edge", "d1", 700) == pytest.approx(0.01 + 700 / 1e6)
    only = LiveEstimates()
    only.observe_transfer("edge", "cloud", 4000, 0.03)
    assert only.transfer_s("edge", "cloud", 100) == pytest.approx(0.03)  # one size: its mean time


def test_a_step_change_restarts_both_directions_and_shows_in_the_next_estimate():
    live = LiveEstimates()
    for _ in range(5):
        live.observe_transfer("d1", "edge", 300, 0.01 + 300 / 1e6)
        live.observe_transfer("edge", "d1", 4000, 0.01 + 4000 / 1e6)
    live.observe_transfer("edge", "d1", 4000, 0.01 + 4000 / 1e4)  # the link got 100 times slower
    assert live.changes == 1 and live.transfer_s("edge", "d1", 4000) == pytest.approx(0.41)
    live.observe_transfer("d1", "edge", 300, 0.01 + 300 / 1e4)  # the next request, up
    assert live.transfer_s("edge", "d1", 700) == pytest.approx(0.01 + 700 / 1e4)
    steady = live.changes
    live.observe_transfer("edge", "d1", 4000, 0.011 + 4000 / 1e4)  # within the noise: no restart
    assert live.changes == steady


def test_native_step_times_are_averaged_and_scaled_to_other_batch_sizes():
    live = LiveEstimates()
    assert live.step_s("edge", "medium", 2) is None
    live.observe_steps("edge", "medium", 2, 10, 0.5)
    assert live.step_s("edge", "medium", 2) == pytest.approx(0.05)
    live.observe_steps("edge", "medium", 2, 10, 1.0)
    assert live.step_s("edge", "medium", 2) == pytest.approx(0.7 * 0.05 + 0.3 * 0.1)
    assert live.step_s("edge", "medium", 4) == pytest.approx(2 * live.step_s("edge", "medium", 2))


def test_reservations_are_laid_end_to_end_and_a_report_replaces_the_prediction():
    q = HostQueues()
    q.reserve("cloud", ("a", 0), ready=100.0, duration=1.0, until=200.0)
    q.reserve("cloud", ("b", 0), ready=100.5, duration=1.0, until=200.0)
    q.reserve("cloud", ("c", 0), ready=105.0, duration=1.0, until=200.0)
    assert q.free_at("cloud", 100.0) == pytest.approx(106.0)
    assert q.backlog_s("cloud", 100.0) == pytest.approx(6.0)
    schedule = q.schedule("cloud", 100.0)
    assert [(r.start, r.end) for r in schedule] == [(100.0, 101.0), (101.0, 102.0), (105.0, 106.0)]
    q.finished("cloud", ("a", 0), end=100.4)  # a was quicker than predicted: b starts at its arrival
    assert [(r.start, r.end) for r in q.schedule("cloud", 100.4)] == [(100.5, 101.5), (105.0, 106.0)]


def test_a_late_stage_stretches_and_one_never_reported_makes_its_host_suspect_for_a_while():
    q = HostQueues()
    q.reserve("cloud", ("a", 0), ready=100.0, duration=1.0, until=110.0)
    assert q.free_at("cloud", 103.0) == pytest.approx(105.0)  # 2 s late: as long again
    assert q.suspect_reasons() == {}
    assert q.free_at("cloud", 111.0) == 111.0  # its request timed out: forgotten...
    assert "never reported" in q.suspect_reasons()["cloud"]  # ...and the host suspect
    q.expire_suspicion(115.0, after_s=5.0)
    assert "cloud" in q.suspect_reasons()
    q.expire_suspicion(116.0, after_s=5.0)
    assert q.suspect_reasons() == {}
    q.reserve("cloud", ("b", 0), ready=120.0, duration=1.0, until=121.0)
    q.schedule("cloud", 122.0)
    q.finished("cloud", ("c", 0), end=122.5)  # any report from the host clears the suspicion
    assert q.suspect_reasons() == {}


def test_a_finished_stage_removes_its_request_s_earlier_stages_everywhere():
    q = HostQueues()
    q.reserve("cloud", ("a", 0), 100.0, 1.0, 200.0)
    q.reserve("edge", ("a", 1), 101.0, 1.0, 200.0)
    q.reserve("d1", ("a", 2), 102.0, 1.0, 200.0)
    q.finished("edge", ("a", 1), end=101.9)  # the cloud's report was lost: stage 1 ended, so did 0
    assert q.schedule("cloud", 102.0) == [] and len(q.schedule("d1", 102.0)) == 1
    q.forget("a")
    assert q.schedule("d1", 102.0) == []


def test_work_arriving_before_a_reserved_stage_s_input_does_not_wait_for_it():
    q = HostQueues()
    q.reserve("edge", ("late", 1), ready=100.5, duration=1.0, until=200.0)  # its input comes later
    q.reserve("edge", ("now", 0), ready=100.0, duration=0.2, until=200.0)
    assert [r.key[0] for r in q.schedule("edge", 100.0)] == ["now", "late"]  # the worker's order
    assert q.free_at("edge", 100.0, arrive=100.1) == pytest.approx(100.2)  # behind "now" only
    assert q.free_at("edge", 100.0, arrive=101.0) == pytest.approx(101.5)  # behind both


def test_a_message_still_on_its_way_bounds_its_path_from_below():
    live = LiveEstimates()
    for _ in range(3):
        live.observe_transfer("d1", "edge", 300, 0.01 + 300 / 1e6)
        live.observe_transfer("edge", "d1", 4000, 0.01 + 4000 / 1e6)
    live.sent(("r1", 1), "edge", "d1", sent=100.0, until=110.0, size=4000)  # the result left at 100 s
    assert live.transfer_s("edge", "d1", 4000, now=100.005) == pytest.approx(0.014)  # not late yet
    assert live.transfer_s("edge", "d1", 4000, now=100.5) == pytest.approx(0.5)  # late: at least 0.5 s
    assert live.transfer_s("edge", "d1", 1000, now=100.5) == pytest.approx(0.125)  # a quarter the size
    assert live.transfer_s("d1", "edge", 300, now=100.5) == pytest.approx(0.0103)  # the other way: not
    live.arrived(("r1", 1))
    assert live.transfer_s("edge", "d1", 4000, now=100.5) == pytest.approx(0.014)
    live.sent(("r2", 1), "edge", "d1", sent=100.0, until=101.0, size=4000)
    assert live.transfer_s("edge", "d1", 4000, now=101.5) == pytest.approx(0.014)  # timed out: dropped
