"""analysis/statistics.py on constructed samples whose answers are known: the intervals cover what
they should and are the same for a seed, the paired ratio, its interval and the Wilcoxon p-value
are exact where the pairs make them so, and samples too small for an interval or a test say so."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis.statistics import (
    Interval,
    Paired,
    mean_interval,
    paired_ratio,
    percentile_interval,
    settings,
    wilcoxon_p,
)


def test_the_mean_interval_covers_the_true_mean_at_the_width_theory_gives():
    sample = np.random.default_rng(1).normal(10.0, 1.0, 400)
    got = mean_interval(sample)
    assert got.estimate == pytest.approx(sample.mean()) and got.n == 400 and got.note is None
    assert got.low < 10.0 < got.high
    # a normal mean's 95 % interval is 2 x 1.96 sigma / sqrt(n) wide
    assert got.high - got.low == pytest.approx(2 * 1.96 * sample.std(ddof=1) / np.sqrt(400), rel=0.15)


def test_the_mean_interval_covers_the_mean_in_about_95_percent_of_samples():
    rng = np.random.default_rng(7)
    covered = [(lambda i: i.low <= 0.2 <= i.high)(mean_interval(rng.exponential(0.2, 40), resamples=500))
               for _ in range(120)]
    assert 0.85 <= np.mean(covered) <= 1.0  # the percentile bootstrap runs a little under 95 % here


def test_the_same_seed_gives_the_same_interval_and_another_seed_another():
    sample = np.random.default_rng(3).exponential(0.3, 32)
    assert mean_interval(sample, seed=5) == mean_interval(sample, seed=5)
    assert percentile_interval(sample, 95, seed=5) == percentile_interval(sample, 95, seed=5)
    assert mean_interval(sample, seed=5).low != mean_interval(sample, seed=6).low


def test_percentiles_are_pandas_quantiles_with_an_interval_around_them():
    sample = np.arange(1.0, 102.0)  # p50 = 51, p95 = 96
    p50, p95 = percentile_interval(sample, 50), percentile_interval(sample, 95)
    assert p50.estimate == 51.0 and p95.estimate == pd.Series(sample).quantile(0.95) == 96.0
    assert p50.low < 51.0 < p50.high and p95.low < 96.0 <= p95.high <= 101.0
    # NaNs (requests without a latency) are left out, not counted
    assert percentile_interval([*sample, np.nan], 50).n == 101


def test_a_constant_sample_has_an_interval_of_one_point():
    got = mean_interval([0.25] * 6)
    assert (got.estimate, got.low, got.high, got.n) == (0.25, 0.25, 0.25, 6)


def test_one_value_or_none_has_no_interval_and_says_so():
    assert mean_interval([0.4]) == Interval(0.4, None, None, 1, 0.95, "one value: no interval")
    assert percentile_interval([], 95) == Interval(None, None, None, 0, 0.95, "no values")


def test_b_twice_a_gives_a_ratio_of_one_half_with_a_one_point_interval_and_the_exact_p_value():
    a = np.arange(1.0, 11.0)
    got = paired_ratio(a, 2 * a)
    assert got.ratio == pytest.approx(0.5) and got.n_pairs == 10 and got.note is None
    assert (got.low, got.high) == pytest.approx((0.5, 0.5))
    # every difference negative: the exact two-sided signed-rank p-value is 2 / 2^10
    assert got.p_value == pytest.approx(2 / 2**10)


def test_a_clearly_faster_strategy_gets_a_small_p_value_and_an_interval_below_one():
    rng = np.random.default_rng(11)
    slow = rng.uniform(0.8, 1.2, 32)
    fast = 0.6 * slow + rng.normal(0, 0.03, 32)  # true ratio of means 0.6
    got = paired_ratio(fast, slow)
    assert got.ratio == pytest.approx(fast.mean() / slow.mean())
    assert got.low < 0.6 < got.high < 1.0 and got.high - got.low < 0.05
    assert got.p_value < 1e-6 and got.n_pairs == 32


def test_pairing_is_what_narrows_the_interval():
    # the same request is slow or quick in both: unpaired, the spread between requests would hide
    # a 10 % difference; paired, the interval is tight around it
    base = np.linspace(0.1, 2.0, 20)
    got = paired_ratio(0.9 * base, base)
    assert (got.low, got.high) == pytest.approx((0.9, 0.9))
    unpaired = mean_interval(base)
    assert unpaired.low < 0.9 * base.mean() < unpaired.high


def test_a_pair_with_a_missing_side_is_dropped():
    got = paired_ratio([1.0, np.nan, 3.0, 4.0], [2.0, 2.0, np.nan, 8.0])
    assert got.n_pairs == 2 and got.ratio == pytest.approx(5.0 / 10.0)


def test_fewer_than_two_pairs_or_no_differences_give_none_with_the_reason():
    assert paired_ratio([0.2], [0.4]) == Paired(0.5, None, None, None, 1, 0.95,
                                                "one pair: no interval and no test")
    assert paired_ratio([], []) == Paired(None, None, None, None, 0, 0.95, "no pairs")
    same = paired_ratio([0.1, 0.2, 0.3], [0.1, 0.2, 0.3])
    assert (same.ratio, same.low, same.high, same.p_value) == (1.0, 1.0, 1.0, None)
    assert same.note == "every difference is zero: no test"
    assert wilcoxon_p(np.array([0.5])) == (None, "fewer than two pairs: no test")


def test_samples_of_different_lengths_are_not_pairs():
    with pytest.raises(ValueError, match="differ in length"):
        paired_ratio([1.0, 2.0], [1.0])


def test_the_settings_name_the_method_and_the_seed():
    assert settings() == {"method": "percentile bootstrap", "confidence": 0.95, "resamples": 2000, "seed": 0,
                          "test": "Wilcoxon signed-rank (two-sided) on the paired differences"}
    assert paired_ratio([1.0, 2.0, 4.0], [2.0, 3.0, 5.0]).as_dict()["n_pairs"] == 3


def test_it_imports_neither_torch_nor_the_emulation():
    import subprocess
    import sys

    code = ("import sys, analysis.statistics, analysis.targets; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'emulation', 'mininet'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
