"""The statistics every judge and report shares: bootstrap intervals on scipy, Wilson intervals for votes.

    lo, hi = bootstrap_ci(values)                         # the mean's 95% interval, resampling the rows
    lo, hi = bootstrap_ci(rows, statistic=perplexity)     # any statistic of whole rows (columns kept together)
    lo, hi = bootstrap_ci(scores, groups=2)               # paired: row i and row i + n/2 are resampled together
    lo, hi = wilson_ci(wins, n)                           # a win rate from n votes, ties counted half
    roc_auc(labels, scores), best_threshold(labels, probs) # a classifier's AUC and its most accurate cut

One helper replaces the four hand-written percentile bootstraps the evaluation, the pairwise wins,
the discriminator and the votes each had. ``METHOD`` is what the report says it used. A vote
interval is shown only from ``MIN_VOTES`` votes: below that a Wilson interval is honest but wide
enough to say nothing, and a bootstrap of 3 votes of 3 gave (100%, 100%).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from .errors import require

NAN = (float("nan"), float("nan"))
MIN_VOTES = 10
METHOD = ("95% intervals: percentile bootstrap (scipy.stats.bootstrap, 1,000 resamples of the test exchanges, "
          "paired where two figures share them); blind votes: Wilson score intervals, shown from 10 votes")


def bootstrap_ci(values, statistic: Callable | None = None, rounds: int = 1000, seed: int = 13,
                 groups: int = 1) -> tuple[float, float]:
    """A 95% percentile-bootstrap interval of ``statistic`` (default: the mean) over the rows of ``values``.

    Rows are resampled by index, so a statistic of several columns (perplexity: loss and tokens) sees
    whole rows; ``groups`` > 1 splits the rows into that many equal blocks resampled together (row i
    of each block: the pairs of a paired comparison).
    """
    values = np.asarray(values, dtype=float)
    n = len(values) // groups
    if n < 2 or rounds <= 0:
        return NAN
    stats = require("scipy.stats", "chat")
    stat = statistic or np.mean
    offsets = np.arange(groups) * n

    def on_index(idx):
        rows = (idx.astype(int)[:, None] + offsets[None, :]).T.ravel()
        return stat(values[rows])

    result = stats.bootstrap((np.arange(n),), on_index, vectorized=False, n_resamples=rounds, method="percentile",
                             rng=np.random.default_rng(seed))
    low, high = result.confidence_interval
    return float(low), float(high)


def wilson_ci(wins: float, n: int) -> tuple[float, float]:
    """The Wilson score 95% interval of a win rate (``wins`` may count ties as halves); none below MIN_VOTES."""
    if n < MIN_VOTES:
        return NAN
    if float(wins).is_integer():
        stats = require("scipy.stats", "chat")
        ci = stats.binomtest(int(wins), n).proportion_ci(confidence_level=0.95, method="wilson")
        return float(ci.low), float(ci.high)
    p, z = wins / n, 1.959963984540054  # the same score interval for a rate with half-counted ties
    centre, half = (p + z * z / (2 * n)) / (1 + z * z / n), z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def roc_auc(y: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC (ties counted half); 0.5 when only one class is present."""
    from sklearn.metrics import roc_auc_score

    if len(set(np.asarray(y).tolist())) < 2:
        return 0.5
    return float(roc_auc_score(y, scores))


def best_threshold(y: np.ndarray, probs: np.ndarray) -> float:
    """The cut (probability >= cut means "the character") with the best accuracy; 0.5 when undecidable."""
    y, probs = np.asarray(y), np.asarray(probs, dtype=np.float64)
    if len(set(y.tolist())) < 2:
        return 0.5
    order = np.argsort(-probs, kind="stable")
    sorted_p, sorted_y = probs[order], y[order]
    cuts = np.unique(sorted_p)[::-1]  # descending
    above = np.searchsorted(-sorted_p, -cuts, side="right")  # rows scored >= each cut
    tp = np.concatenate([[0], np.cumsum(sorted_y)])[above]
    correct = tp + (len(y) - y.sum()) - (above - tp)
    return float(cuts[int(np.argmax(correct))])
