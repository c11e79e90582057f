"""The shared statistics: bootstrap intervals that cover, pair, and fail where they should; Wilson for votes."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rolecast.stats import MIN_VOTES, bootstrap_ci, wilson_ci

pytest.importorskip("scipy")


def test_the_mean_interval_covers_the_truth_and_narrows_with_more_rows():
    rng = np.random.default_rng(0)
    small, large = rng.normal(1.0, 1.0, 40), rng.normal(1.0, 1.0, 400)
    lo_s, hi_s = bootstrap_ci(small)
    lo_l, hi_l = bootstrap_ci(large)
    assert lo_s < 1.0 < hi_s and lo_l < 1.0 < hi_l
    assert (hi_l - lo_l) < (hi_s - lo_s) / 2


def test_a_statistic_of_whole_rows_keeps_the_columns_together():
    rows = np.c_[np.linspace(1, 3, 50), np.full(50, 10.0)]  # loss, tokens: a token-weighted mean
    lo, hi = bootstrap_ci(rows, lambda r: r[:, 0].sum() / r[:, 1].sum())
    assert lo < 0.2 < hi


def test_paired_blocks_are_resampled_together():
    """An AUC over (real, reply) pairs: row i and row i + n move together, so every resample keeps both classes."""
    n = 30
    y = np.r_[np.zeros(n), np.ones(n)]
    score = np.r_[np.zeros(n), np.ones(n)]  # perfectly separated
    lo, hi = bootstrap_ci(np.c_[y, score], lambda r: float(np.mean(r[r[:, 0] == 1, 1]) - np.mean(r[r[:, 0] == 0, 1])),
                          groups=2)
    assert lo == hi == 1.0


def test_too_few_rows_or_no_rounds_give_no_interval():
    assert all(math.isnan(v) for v in bootstrap_ci([1.0]))
    assert all(math.isnan(v) for v in bootstrap_ci([1.0, 2.0, 3.0], rounds=0))


def test_wilson_is_scipys_and_no_interval_below_ten_votes():
    assert all(math.isnan(v) for v in wilson_ci(3, 3)), "3 of 3 votes: no interval, not (100%, 100%)"
    lo, hi = wilson_ci(10, 10)
    assert hi == pytest.approx(1.0) and lo == pytest.approx(0.7225, abs=1e-3), "10 of 10 is not certainty"
    # Half-counted ties use the same score interval: continuous across an integer.
    assert wilson_ci(7.5, 12)[0] == pytest.approx((np.array(wilson_ci(7, 12)) + wilson_ci(8, 12))[0] / 2, abs=0.02)
    assert MIN_VOTES == 10
