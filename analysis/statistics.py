"""Intervals and tests for a handful of requests: seeded percentile-bootstrap confidence intervals
for a sample's mean and percentiles, and for paired designs (the same request ids through two
strategies, as `edgestage compare` runs them) the ratio of means with a paired bootstrap interval
(request pairs resampled together) and a Wilcoxon signed-rank test on the differences.

    mean_interval(latencies)                 # Interval(estimate, low, high, n, ...)
    percentile_interval(latencies, 95)
    paired_ratio(elastic, cloud_only)        # Paired(ratio, low, high, p_value, n_pairs, ...)

numpy and scipy only (no torch, nothing of emulation/); everything returns data, nothing prints.
Where a sample is too small for an interval (n < 2) or a test (every difference zero) the field is
None and `note` says why; below FEW (6) values `note` says that the interval and test are weak.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import stats

CONFIDENCE = 0.95
RESAMPLES = 2000
SEED = 0
METHOD = "percentile bootstrap"  # what the intervals are, for the files that record them
# below this many values a percentile bootstrap covers far less than its nominal 95 %, and a
# two-sided signed-rank test cannot reach p < 0.05 (its least p is 2 / 2**n): said in `note`
FEW = 6
FEW_NOTE = f"fewer than {FEW} values: the interval is too narrow, and no test reaches p < 0.05"


@dataclass(frozen=True)
class Interval:
    """A statistic of one sample with its bootstrap confidence interval (low, high: None where
    there is none; `note` says why)."""

    estimate: float | None
    low: float | None
    high: float | None
    n: int
    confidence: float = CONFIDENCE
    note: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Paired:
    """mean(a) / mean(b) over the pairs, its paired bootstrap interval, the Wilcoxon signed-rank
    p-value of the differences a - b, and the number of pairs; None where there is none (`note`)."""

    ratio: float | None
    low: float | None
    high: float | None
    p_value: float | None
    n_pairs: int
    confidence: float = CONFIDENCE
    note: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def settings() -> dict[str, Any]:
    """How the intervals and tests are made (recorded beside them)."""
    return {"method": METHOD, "confidence": CONFIDENCE, "resamples": RESAMPLES, "seed": SEED,
            "test": "Wilcoxon signed-rank (two-sided) on the paired differences"}


def mean_interval(sample: Sequence[float] | np.ndarray, confidence: float = CONFIDENCE,
                  resamples: int = RESAMPLES, seed: int = SEED) -> Interval:
    """The sample's mean and its bootstrap interval."""
    return bootstrap_interval(sample, _mean, confidence, resamples, seed)


def percentile_interval(sample: Sequence[float] | np.ndarray, q: float, confidence: float = CONFIDENCE,
                        resamples: int = RESAMPLES, seed: int = SEED) -> Interval:
    """The sample's q-th percentile (0-100, linear interpolation as pandas' quantile) and its
    bootstrap interval."""
    return bootstrap_interval(sample, lambda x, axis=-1: np.percentile(x, q, axis=axis), confidence,
                              resamples, seed)


def bootstrap_interval(sample: Sequence[float] | np.ndarray, statistic: Callable[..., Any],
                       confidence: float = CONFIDENCE, resamples: int = RESAMPLES,
                       seed: int = SEED) -> Interval:
    """`statistic` (vectorised: it takes `axis`) of the sample, NaNs left out, with a seeded
    percentile-bootstrap interval: the same sample and seed give the same interval."""
    x = _clean(sample)
    if len(x) == 0:
        return Interval(None, None, None, 0, confidence, "no values")
    estimate = float(statistic(x, axis=-1))
    if len(x) < 2:
        return Interval(estimate, None, None, 1, confidence, "one value: no interval")
    result = _bootstrap((x,), statistic, False, confidence, resamples, seed)
    return Interval(estimate, *result, len(x), confidence, FEW_NOTE if len(x) < FEW else None)


def paired_ratio(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray,
                 confidence: float = CONFIDENCE, resamples: int = RESAMPLES, seed: int = SEED) -> Paired:
    """mean(a) / mean(b) over the pairs (a[i], b[i]) with neither NaN, its interval from
    resampling whole pairs, and the Wilcoxon signed-rank p-value of a - b."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.shape != y.shape:
        raise ValueError(f"paired samples differ in length ({len(x)} and {len(y)})")
    keep = ~(np.isnan(x) | np.isnan(y))
    x, y = x[keep], y[keep]
    n = len(x)
    if n == 0:
        return Paired(None, None, None, None, 0, confidence, "no pairs")
    ratio = _ratio(x, y)
    if not np.isfinite(ratio):
        return Paired(None, None, None, None, n, confidence, "the second sample's mean is zero: no ratio")
    if n < 2:
        return Paired(ratio, None, None, None, n, confidence, "one pair: no interval and no test")
    low, high = _bootstrap((x, y), _ratio, True, confidence, resamples, seed)
    p_value, note = wilcoxon_p(x - y)
    return Paired(ratio, low, high, p_value, n, confidence, note or (FEW_NOTE if n < FEW else None))


def wilcoxon_p(differences: np.ndarray) -> tuple[float | None, str | None]:
    """The two-sided Wilcoxon signed-rank p-value of paired differences (zeros dropped, scipy's
    default), or None and why where there is no test."""
    d = _clean(differences)
    if len(d) < 2:
        return None, "fewer than two pairs: no test"
    if np.all(d == 0):  # scipy answers p = 1 with a warning; no test is the honest answer
        return None, "every difference is zero: no test"
    with warnings.catch_warnings():  # scipy warns of ties and small samples: its p-value stands
        warnings.simplefilter("ignore")
        p = float(stats.wilcoxon(d).pvalue)
    return (None, "the test gave no p-value") if np.isnan(p) else (p, None)


def _bootstrap(data: tuple[np.ndarray, ...], statistic: Callable[..., Any], paired: bool,
               confidence: float, resamples: int, seed: int) -> tuple[float | None, float | None]:
    # percentile, not BCa: BCa has no interval where every resample agrees (B = 2 A exactly),
    # and its jackknife is unsteady for a p95 of a few values
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = stats.bootstrap(data, statistic, n_resamples=resamples, paired=paired, vectorized=True,
                                 confidence_level=confidence, method="percentile",
                                 rng=np.random.default_rng(seed))
    low, high = (float(v) for v in result.confidence_interval)
    return (None if np.isnan(low) else low), (None if np.isnan(high) else high)


def _mean(x: np.ndarray, axis: int = -1) -> Any:
    return np.mean(x, axis=axis)


def _ratio(x: np.ndarray, y: np.ndarray, axis: int = -1) -> Any:
    with np.errstate(divide="ignore", invalid="ignore"):
        value = np.mean(x, axis=axis) / np.mean(y, axis=axis)
    return float(value) if np.ndim(value) == 0 else value


def _clean(sample: Sequence[float] | np.ndarray) -> np.ndarray:
    x = np.asarray(sample, dtype=float).ravel()
    return x[~np.isnan(x)]
