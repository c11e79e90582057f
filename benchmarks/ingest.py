"""Ingest speed: `rolecast prepare` on House (all eight seasons) and on Chandler (Friends).

    .venv/bin/python benchmarks/ingest.py

For each pack it prints lines per second and seconds per stage (from the pack's
meta.json), for the core pack (ingest → examples → card → files; target: under 10 s
on a 2-core machine) and, separately, the retrieval index and the style classifier
that `prepare` also builds by default (target for the whole pack: under 60 s on House).
The baselines, measured in the same run: a bare `csv.reader` pass over the same files
(the ratio says how much the cleaning, repairs, examples and card cost over merely
reading the rows), and the index embedded as before (fp32, batches of 128, every line),
with how far today's vectors and nearest neighbours are from it.
"""

from __future__ import annotations

import csv
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
CASES = [("House", lambda: sorted((SHARED / "house-md").glob("season*.csv"))),
         ("Chandler Bing", lambda: [SHARED / "friends" / "friends.csv"])]


def bare_read(files: list[Path]) -> tuple[float, int]:
    start = time.perf_counter()
    rows = 0
    for path in files:
        with open(path, encoding="utf-8-sig", newline="") as fh:
            rows += sum(1 for _ in csv.reader(fh))
    return time.perf_counter() - start, rows


def index_baseline(pack) -> tuple[float, str]:
    """The index embedded as before this change (fp32, batch 128, duplicates too), and today's agreement with it."""
    import numpy as np
    import torch

    from rolecast.chat.retrieval import LineIndex, exchanges_from_examples
    from rolecast.models.embeddings import embedder
    from rolecast.pack.examples import read_examples

    rows = [r for split in ("train", "validation") for r in read_examples(pack.path / "examples" / f"{split}.jsonl")]
    texts = [it["prompt"] or it["reply"] for it in exchanges_from_examples(rows)]
    model = embedder()
    start = time.perf_counter()
    before = model.model.encode(texts, batch_size=128, normalize_embeddings=True, convert_to_numpy=True)
    seconds = time.perf_counter() - start
    today = LineIndex.load(pack).vectors
    tests = list(read_examples(pack.path / "examples" / "test.jsonl"))
    sample = [r for r in tests[:: max(1, len(tests) // 500)] if r["messages"]]
    queries = [r["messages"][-1]["content"].split("\n")[-1] for r in sample]
    with torch.inference_mode():
        q = model.encode(queries)
    k = 4
    old, new = np.argsort(-(before @ q.T), axis=0)[:k].T, np.argsort(-(today @ q.T), axis=0)[:k].T
    overlap = np.mean([len(set(a) & set(b)) / k for a, b in zip(old, new)])
    cosine = (before * today).sum(axis=1)
    return seconds, (f"nearest-{k} overlap {overlap:.1%} over {len(queries)} test messages, vector cosine "
                     f"min {cosine.min():.5f}")


def main() -> None:
    if not SHARED.exists():
        sys.exit(f"{SHARED} is absent: this benchmark needs the real corpora")
    from rolecast.chat.retrieval import build_index
    from rolecast.chat.style import train_style
    from rolecast.pack import Pack
    from rolecast.prepare import prepare
    from rolecast.settings import PrepareSettings

    out_root = Path(tempfile.mkdtemp(prefix="rolecast-ingest-"))
    for character, files in CASES:
        files = files()
        baseline, rows = bare_read(files)
        out = out_root / character.split()[0].lower()
        start = time.perf_counter()
        prepare(files, PrepareSettings(character=character, index=False, style=False), out)
        core = time.perf_counter() - start
        meta = json.loads((out / "meta.json").read_text())
        stages = ", ".join(f"{k} {v:.2f} s" for k, v in meta["timings_s"].items())
        pack = Pack.open(out)
        start = time.perf_counter()
        build_index(pack)
        index_s = time.perf_counter() - start
        start = time.perf_counter()
        report = train_style(pack)
        style_s = time.perf_counter() - start
        baseline_s, agreement = index_baseline(pack)
        print(f"{character}: {rows:,} rows → {meta['counts']['lines']:,} lines, {sum(meta['examples'].values()):,} examples")
        print(f"  prepare (core): {core:.2f} s = {meta['counts']['lines'] / core:,.0f} lines/s "
              f"({core / baseline:.1f}× a bare csv.reader pass of {baseline:.2f} s); target < 10 s")
        print(f"  stages: {stages}")
        print(f"  + retrieval index {index_s:.1f} s, + style classifier ({report['method']}, AUC "
              f"{report['roc_auc']:.3f}) {style_s:.1f} s; whole pack {core + index_s + style_s:.0f} s (target < 60 s)")
        print(f"  index as before (fp32, batches of 128): {baseline_s:.1f} s, {baseline_s / index_s:.2f}x today's; "
              f"{agreement}")


if __name__ == "__main__":
    main()
