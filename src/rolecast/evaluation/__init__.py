"""``rolecast eval``: the variants' replies on held-out exchanges and scenes (``evaluate``),
judges the reranker does not use (``judges``), scene replays and knowledge probes
(``replay``, ``probes``), the web chat's blind votes (``votes``) and the report (``report``).
"""
