"""Blind votes from the web chat (``rolecast serve --blind``) as win rates with intervals.

    rolecast serve packs/house --blind --db packs/house.db     # some turns show replies A and B
    rolecast eval packs/house --votes packs/house.db           # the votes join the report

Each vote compares two variants' replies to one message; the page never shows which is
which, and the order is drawn at random. A tie counts half to each side. Intervals are Wilson
score intervals (``stats.wilson_ci``), shown only from ``stats.MIN_VOTES`` votes of a pair.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..errors import SettingsError
from ..stats import wilson_ci


def vote_summary(db: str | Path, character: str) -> dict[str, Any]:
    """``{"votes", "ties", "pairs": {"a vs b": {"a", "b", "win", "ci", "n"}}}`` for one character's decided votes."""
    from ..serve.store import Store

    if not Path(db).is_file():
        raise SettingsError(f"no vote database at {db}", "give the --db file of a 'rolecast serve --blind' run",
                            param="votes")
    store = Store(db)
    try:
        rows = store.votes(character)
    finally:
        store.close()
    outcomes: dict[tuple[str, str], list[float]] = {}
    ties = 0
    for row in rows:
        a, b = row["variant_a"], row["variant_b"]
        score = {"a": 1.0, "b": 0.0, "tie": 0.5}[row["choice"]]
        ties += row["choice"] == "tie"
        key, score = ((a, b), score) if a <= b else ((b, a), 1.0 - score)  # one orientation per pair
        outcomes.setdefault(key, []).append(score)
    pairs = {}
    for (a, b), scores in sorted(outcomes.items()):
        values = np.asarray(scores)
        ci = wilson_ci(float(values.sum()), len(values))
        pairs[f"{a} vs {b}"] = {"a": a, "b": b, "win": round(float(values.mean()), 4), "ci": ci, "n": len(values)}
    return {"votes": len(rows), "ties": ties, "pairs": pairs, "variants": sorted({v for key in outcomes for v in key})}
