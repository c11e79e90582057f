"""Retrieval of the character's real exchanges: what was said to them, and what they said back.

    rolecast index packs/house                      # (prepare builds it already)

    index = LineIndex.load(Pack.open("packs/house"))
    for ex in index.search("I have chest pain", k=4):
        print(ex.prompt, "→", ex.reply)

The index covers the train and validation splits only, so that evaluation on the
test episodes never retrieves the very reply it is judged against. Each exchange is
embedded by its prompt (the line said to the character), or by the reply when the
character opened the scene; the query is the user's message.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

import numpy as np

from ..errors import PackError
from ..files import atomic_dir, write_json
from ..ingest.script import NAME_PREFIX
from ..models.embeddings import Embedder, embedder
from ..pack import Pack
from ..pack.examples import read_examples
from ..progress import enabled as progress_enabled

log = logging.getLogger(__name__)


@dataclass
class Exchange:
    id: str
    prompt: str
    reply: str
    score: float = 0.0


def exchanges_from_examples(rows) -> list[dict]:
    """One exchange per example: the last line said to the character → the reply."""
    items = []
    for ex in rows:
        users = [m["content"] for m in ex["messages"] if m["role"] == "user"]
        last = ex["messages"][-1] if ex["messages"] else None
        prompt = users[-1].split("\n")[-1] if last and last["role"] == "user" else ""
        items.append({"id": ex["id"], "prompt": NAME_PREFIX.sub("", prompt), "reply": ex["completion"][0]["content"]})
    return items


def build_index(pack: Pack, model: Embedder | None = None) -> LineIndex:
    """Embed the pack's train + validation exchanges into ``index/``."""
    rows = []
    for split in ("train", "validation"):
        path = pack.require("examples") / f"{split}.jsonl"
        if path.exists():
            rows.extend(read_examples(path))
    items = exchanges_from_examples(rows)
    if not items:
        raise PackError(f"the pack {pack.path} has no training examples to index", "re-run rolecast prepare")
    model = model or embedder()
    texts = [it["prompt"] or it["reply"] for it in items]
    unique = list(dict.fromkeys(texts))  # House repeats 5% of its lines ("Yeah.")
    row = {text: i for i, text in enumerate(unique)}
    vectors = model.encode(unique, progress=progress_enabled())[[row[t] for t in texts]]
    with atomic_dir(pack.part("index")) as tmp:
        with open(tmp / "items.jsonl", "w", encoding="utf-8") as fh:
            for it in items:
                fh.write(json.dumps(it, ensure_ascii=False) + "\n")
        np.save(tmp / "vectors.npy", vectors.astype(np.float16))
        write_json(tmp / "meta.json", {"model": model.name, "items": len(items), "dim": int(vectors.shape[1])})
    pack.record("index", items=len(items), model=model.name)
    log.info("indexed %d exchanges of %s", len(items), pack.character)
    return LineIndex(items, vectors, model)


class LineIndex:
    def __init__(self, items: list[dict], vectors: np.ndarray, model: Embedder | None = None):
        self.items = items
        self.vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        self._model = model
        self._words = np.array([len(it["reply"].split()) for it in items])

    @classmethod
    def load(cls, pack: Pack, model: Embedder | None = None) -> LineIndex:
        folder = pack.require("index")
        try:
            items = [json.loads(row) for row in (folder / "items.jsonl").read_text(encoding="utf-8").splitlines() if row]
            vectors = np.load(folder / "vectors.npy")
        except (OSError, ValueError) as exc:
            raise PackError(f"the retrieval index in {folder} is unreadable ({exc})", f"rebuild it: rolecast index {pack.path}") from None
        if len(items) != len(vectors):
            raise PackError(f"the retrieval index in {folder} is inconsistent", f"rebuild it: rolecast index {pack.path}")
        return cls(items, vectors, model)

    @property
    def model(self) -> Embedder:
        if self._model is None:
            self._model = embedder()
        return self._model

    def __len__(self) -> int:
        return len(self.items)

    def search(self, query: str, k: int = 4, min_words: int = 3, exclude: set[str] | None = None) -> list[Exchange]:
        if k <= 0 or not self.items:
            return []
        return self.search_vector(self.model.encode([query])[0], k, min_words, exclude)

    def search_vector(self, vector: np.ndarray, k: int, min_words: int = 3, exclude: set[str] | None = None) -> list[Exchange]:
        scores = self.vectors @ vector
        scores = np.where(self._words >= min_words, scores, -np.inf)
        top = np.argpartition(-scores, min(len(scores) - 1, 4 * k))[: 4 * k]
        out: list[Exchange] = []
        seen: set[str] = set()
        for i in top[np.argsort(-scores[top])]:
            item = self.items[i]
            key = item["reply"].casefold()
            if not np.isfinite(scores[i]) or key in seen or (exclude and item["id"] in exclude):
                continue
            seen.add(key)
            out.append(Exchange(item["id"], item["prompt"], item["reply"], float(scores[i])))
            if len(out) == k:
                break
        return out
