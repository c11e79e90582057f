"""Exploration for the style classifier (``rolecast.chat.style``): stand-in packs and method comparison.

    # a stand-in House pack (seasons 1-6 train, 7 validation, 8 test) when `rolecast prepare` is unavailable
    python benchmarks/style_explore.py pack-house /tmp/style_packs/house
    # a stand-in Friends pack for one character (seasons 1-8 train, 9 validation, 10 test)
    python benchmarks/style_explore.py pack-friends /tmp/style_packs/chandler --character "Chandler Bing"
    # train methods of rolecast.chat.style on a pack, print their reports, load time and scoring latency
    python benchmarks/style_explore.py compare /tmp/style_packs/house --methods auto,minilm --max-minutes 12
    # the variants that lost (numbers in rolecast/style.py's docstring); --cache keeps the embeddings
    python benchmarks/style_explore.py baselines /tmp/style_packs/house --cache /tmp/emb_house

Reads the corpora from ../shared/data at run time; no corpus text is kept in the repository.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"

_DIRECTION = re.compile(r"\[[^\]]*\]|\([^)]*\)")


def _clean(text: str) -> str:
    return " ".join(_DIRECTION.sub(" ", text).split())


def _write_pack(out: Path, rows: list[dict], character: str, show: str, split_of: dict[str, str],
                context_turns: int = 10) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "examples").mkdir(exist_ok=True)
    with open(out / "script.jsonl", "w", encoding="utf-8") as fh:
        for i, row in enumerate(rows):
            row["index"] = i
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    splits: dict[str, list[dict]] = {"train": [], "validation": [], "test": []}
    scene: list[dict] = []
    for pos, row in enumerate(rows):
        if pos == 0 or (row["episode"], row["scene"]) != (rows[pos - 1]["episode"], rows[pos - 1]["scene"]):
            scene = []
        if row["speaker"] == character and row["episode"] in split_of:
            messages: list[dict] = []
            for prev in scene[-context_turns:]:
                role = "assistant" if prev["speaker"] == character else "user"
                content = prev["text"] if role == "assistant" else f"{prev['speaker']}: {prev['text']}"
                if messages and messages[-1]["role"] == role:
                    messages[-1]["content"] += "\n" + content
                else:
                    messages.append({"role": role, "content": content})
            splits[split_of[row["episode"]]].append({
                "id": f"{row['episode']}-{row['scene']}-{row['index']}", "episode": row["episode"],
                "scene": row["scene"], "messages": messages,
                "completion": [{"role": "assistant", "content": row["text"]}],
            })
        scene.append(row)
    for name, items in splits.items():
        with open(out / "examples" / f"{name}.jsonl", "w", encoding="utf-8") as fh:
            for item in items:
                fh.write(json.dumps(item, ensure_ascii=False) + "\n")
    name = re.sub(r"[^a-z0-9]+", "-", character.lower()).strip("-")
    (out / "pack.json").write_text(json.dumps(
        {"format": "rolecast-pack/1", "name": name, "character": character, "show": show, "parts": {}}, indent=2))
    print(f"{out}: {len(rows)} lines, " + ", ".join(f"{k} {len(v)}" for k, v in splits.items()))


def pack_house(out: Path) -> None:
    rows = []
    for season in range(1, 9):
        with open(DATA / "house-md" / f"season{season}.csv", encoding="utf-8-sig", newline="") as fh:
            for n, rec in enumerate(csv.DictReader(fh)):
                speaker, text = (rec.get("name") or "").strip(), _clean(rec.get("line") or "")
                if not speaker or not text:
                    continue
                rows.append({"show": "House MD", "episode": f"season{season}", "scene": str(n // 40), "index": 0,
                             "speaker": speaker, "text": text, "raw_speaker": speaker, "raw_text": text})
    split_of = {f"season{s}": "train" for s in range(1, 7)} | {"season7": "validation", "season8": "test"}
    _write_pack(out, rows, "House", "House MD", split_of)


def pack_friends(out: Path, character: str) -> None:
    rows = []
    with open(DATA / "friends" / "friends.csv", encoding="utf-8-sig", newline="") as fh:
        for rec in csv.DictReader(fh):
            speaker, text = (rec.get("speaker") or "").strip(), _clean(rec.get("text") or "")
            if not text:
                continue
            if not speaker or speaker.lower() in {"scene directions", "#all#"}:
                speaker = "(narration)" if speaker.lower() == "scene directions" else "(several)"
            episode = f"s{int(rec['season']):02d}e{int(rec['episode']):02d}"
            rows.append({"show": "Friends", "episode": episode, "scene": rec["scene"], "index": 0,
                         "speaker": speaker, "text": text, "raw_speaker": speaker, "raw_text": text})
    split_of = {}
    for row in rows:
        season = int(row["episode"][1:3])
        split_of[row["episode"]] = "test" if season == 10 else "validation" if season == 9 else "train"
    _write_pack(out, rows, character, "Friends", split_of)


def compare(pack_path: Path, methods: list[str], seed: int, max_minutes: float) -> None:
    sys.path.insert(0, str(ROOT / "src"))
    from rolecast.chat.style import StyleScorer, train_style
    from rolecast.pack import Pack

    pack = Pack.open(pack_path)
    for method in methods:
        start = time.perf_counter()
        report = train_style(pack, method=method, seed=seed, max_minutes=max_minutes)
        took = time.perf_counter() - start
        print(json.dumps({k: v for k, v in report.items() if k != "tried"}), f"total {took:.1f}s", flush=True)
        for row in report["tried"]:
            print("   ", row, flush=True)
        start = time.perf_counter()
        scorer = StyleScorer.load(pack)
        load = time.perf_counter() - start
        code = ("import time; t = time.perf_counter(); from rolecast.pack import Pack; "
                "from rolecast.chat.style import StyleScorer; s = StyleScorer.load(Pack.open(" + repr(str(pack.path)) + ")); "
                "print(time.perf_counter() - t)")
        cold = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
        print(f"    load in a fresh process (imports included): {cold.stdout.strip() or cold.stderr[-300:]} s")
        contexts = ["Why are you late?"] * 4
        replies = ["I missed the bus.", "Everybody lies.", "It's not lupus.", "Sure, whatever you say."]
        scorer.score_many(contexts, replies)
        times = []
        for _ in range(50):
            start = time.perf_counter()
            scorer.score_many(contexts, replies)
            times.append(time.perf_counter() - start)
        times.sort()
        print(f"    load {load * 1000:.0f} ms, score_many(4) median {times[25] * 1000:.1f} ms, "
              f"p90 {times[45] * 1000:.1f} ms", flush=True)


def baselines(pack_path: Path, cache: Path | None) -> None:
    """Re-measure the variants that lost against ``tfidf``: validation / test ROC AUC, test accuracy, seconds.

    Balanced training data (1:1). Seconds include vectorising, not embedding (printed apart).
    """
    sys.path.insert(0, str(ROOT / "src"))
    import numpy as np
    import scipy.sparse as sp
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier

    from rolecast.chat.style import TfidfModel, load_data
    from rolecast.pack import Pack
    from rolecast.stats import best_threshold, roc_auc

    data = load_data(Pack.open(pack_path), seed=13)
    tr, va, te = data["train"], data["validation"], data["test"]

    def report(name: str, fit) -> tuple[np.ndarray, np.ndarray]:
        start = time.perf_counter()
        score_va, score_te = fit()
        cut = best_threshold(va.y, score_va)
        print(f"{name:52s} val {roc_auc(va.y, score_va):.4f}  test {roc_auc(te.y, score_te):.4f}  "
              f"acc {np.mean((score_te >= cut) == te.y):.4f}  {time.perf_counter() - start:6.1f}s", flush=True)
        return score_va, score_te

    def lr(xs, cs=(0.25, 0.5, 1.0)):
        best = max((LogisticRegression(C=c, solver="liblinear", max_iter=2000).fit(xs[0], tr.y) for c in cs),
                   key=lambda m: roc_auc(va.y, m.decision_function(xs[1])))
        return best.decision_function(xs[1]), best.decision_function(xs[2])

    def vectorise(**options):
        vec = TfidfVectorizer(sublinear_tf=True, **options)
        return [vec.fit_transform(tr.replies), vec.transform(va.replies), vec.transform(te.replies)]

    words = {"ngram_range": (1, 2), "min_df": 2}
    chars = {"analyzer": "char_wb", "ngram_range": (2, 5), "min_df": 3, "lowercase": False}
    report("TF-IDF word 1-2 + LR", lambda: lr(vectorise(**words)))
    report("TF-IDF char_wb 2-5 + LR", lambda: lr(vectorise(**chars)))
    wc: list = []

    def word_char():
        wc.extend(sp.hstack(pair, format="csr") for pair in zip(vectorise(**words), vectorise(**chars), strict=True))
        return lr(wc)

    def nb_svm():
        binary = (wc[0] > 0).astype(np.float64)
        p = np.asarray(binary[tr.y == 1].sum(0)).ravel() + 1
        q = np.asarray(binary[tr.y == 0].sum(0)).ravel() + 1
        r = np.log(p / p.sum()) - np.log(q / q.sum())
        return lr([x.multiply(r).tocsr() for x in wc], cs=(0.1, 0.5, 1.0))

    def tfidf_balanced():
        model = TfidfModel(13)
        model.fit(tr, va, time.monotonic() + 900)
        return model.logits(va.contexts, va.replies), model.logits(te.contexts, te.replies)

    report("TF-IDF word + char + LR", word_char)
    report("TF-IDF word + char, NB-weighted (NB-SVM)", nb_svm)
    tfidf = report("tfidf (word + char + pair features), 1:1 negatives", tfidf_balanced)

    texts = sorted({t for split in (tr, va, te) for t in split.replies})
    if cache and cache.with_suffix(".npy").exists():
        vectors = np.load(cache.with_suffix(".npy"))
        texts = json.loads(cache.with_suffix(".json").read_text())
    else:
        from rolecast.models.embeddings import embedder

        start = time.perf_counter()
        vectors = embedder().encode(texts, batch_size=128)
        print(f"embedded {len(texts)} lines in {time.perf_counter() - start:.0f}s", flush=True)
        if cache:
            np.save(cache.with_suffix(".npy"), vectors)
            cache.with_suffix(".json").write_text(json.dumps(texts))
    row = {t: i for i, t in enumerate(texts)}
    e = [vectors[[row[t] for t in split.replies]] for split in (tr, va, te)]

    def emb_lr():
        m = LogisticRegression(C=2.0, max_iter=3000).fit(e[0], tr.y)
        return m.decision_function(e[1]), m.decision_function(e[2])

    def emb_mlp():
        m = MLPClassifier(hidden_layer_sizes=(256,), alpha=1e-3, early_stopping=True, max_iter=60,
                          random_state=13).fit(e[0], tr.y)
        logit = lambda p: np.log(np.clip(p, 1e-6, 1)) - np.log(np.clip(1 - p, 1e-6, 1))  # noqa: E731
        return logit(m.predict_proba(e[1])[:, 1]), logit(m.predict_proba(e[2])[:, 1])

    def stacked():
        xs = [sp.hstack([x, sp.csr_matrix(v * 0.5)], format="csr") for x, v in zip(wc, e, strict=True)]
        return lr(xs, cs=(0.5, 1.0))

    report("MiniLM embedding + LR", emb_lr)
    mlp = report("MiniLM embedding + MLP 256", emb_mlp)
    report("TF-IDF word + char hstacked with MiniLM embedding, LR", stacked)

    def blend():
        blender = LogisticRegression().fit(np.column_stack([tfidf[0], mlp[0]]), va.y)
        return (blender.decision_function(np.column_stack([tfidf[0], mlp[0]])),
                blender.decision_function(np.column_stack([tfidf[1], mlp[1]])))

    report("tfidf 1:1 + MiniLM MLP, blended on validation", blend)

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pack-house")
    p.add_argument("out", type=Path)
    p = sub.add_parser("pack-friends")
    p.add_argument("out", type=Path)
    p.add_argument("--character", default="Chandler Bing")
    p = sub.add_parser("compare")
    p.add_argument("pack", type=Path)
    p.add_argument("--methods", default="auto")
    p.add_argument("--seed", type=int, default=13)
    p.add_argument("--max-minutes", type=float, default=5.0)
    p = sub.add_parser("baselines")
    p.add_argument("pack", type=Path)
    p.add_argument("--cache", type=Path, default=None)
    args = parser.parse_args()
    if args.cmd == "pack-house":
        pack_house(args.out)
    elif args.cmd == "pack-friends":
        pack_friends(args.out, args.character)
    elif args.cmd == "baselines":
        baselines(args.pack, args.cache)
    else:
        compare(args.pack, args.methods.split(","), args.seed, args.max_minutes)


if __name__ == "__main__":
    main()
