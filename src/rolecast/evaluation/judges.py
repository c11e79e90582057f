"""Judges for ``rolecast eval`` that the reranker cannot game, each validated before it is trusted.

    judges = Judges.fit(pack, seed=13)                      # ~2.5 minutes on House (MiniLM embeddings)
    judges.style_validation, judges.coherence_validation    # their AUCs on checks they could fail
    judges.style(cases, replies)                            # P(the character said it), held apart
    judges.coherence(contexts, replies)                     # P(the reply answers this context)
    discriminator(real, replies)                            # can a classifier tell the bot from the character?
    copy_rate(replies, corpus)                              # near-verbatim repeats of training/retrieval lines
    pairwise(scores)                                        # win rates of every pair of variants, with intervals

None of them is the pack's style classifier (``style/``), the scorer the ``rerank``
variants maximise, and none is written into the pack or loaded by the Performer:

- **Held-apart style**: logistic regression on the frozen all-MiniLM-L6-v2 embedding of a
  line and 8 length and punctuation counts (not TF-IDF, not pair features), fitted only on lines of the
  *validation and test* episodes — which neither the pack's classifier nor the LoRA trained on (validation
  only chose the classifier's C) — by cross-fitting: the episodes (or their scenes, when there are few) fall
  into ``FOLDS`` groups and a reply is scored by the model that did not see its episode. Its validation:
  out-of-fold AUC on the character's lines against other speakers' lines of the same episodes. With the
  validation episodes' lines too, House's rose from 0.611 to 0.655; Chandler's stays at 0.53 (0.525 on the
  test episodes alone): on Friends the judge needs other features, not more lines.
- **Coherence**: "is this the reply to this context?" — logistic regression on how the
  MiniLM embedding of the reply relates to those of the context (the last turns before
  it) and of the last turn, learned from the scripts themselves: the real next line of
  the character (1) against lines of the same character from other scenes and an echo of
  the message (0), on the train and validation episodes. Its two checks, on the test
  episodes: AUC of real vs shuffled replies, and of real replies vs echoes of the
  message; below ``TRUST`` (0.70) on either, the report does not show it as a metric.
- **Discriminator**: per variant, a classifier (MiniLM embedding and a few surface
  features) cross-validated to separate that variant's replies from the real replies to
  the same contexts. AUC 0.5: indistinguishable; 1.0: trivially a bot. It is fitted to
  each variant's own output, so no reranker can aim at it.
- **Copy rate**: replies of 4+ words that repeat a line of the training or retrieval set
  near-verbatim (same words, or character n-gram cosine >= 0.9).

Measured (see ``docs/judges.md`` for the figures and how to re-run them).
"""

from __future__ import annotations

import hashlib
import logging
import re
import zlib
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import EmptyResultError
from ..files import atomic_path
from ..ingest.script import NAME_PREFIX, Script
from ..pack import Pack
from ..pack.examples import SPLITS, SplitOf
from ..stats import bootstrap_ci, roc_auc

log = logging.getLogger(__name__)

#: Cross-fitting groups of the held-apart judge, and folds of the discriminator.
FOLDS = 5
#: A judge whose validation AUC is below this is reported as untrusted and not used.
TRUST = 0.70
#: Context turns the coherence judge reads before a reply (House: 1 turn 0.704 AUC, 2 0.711, 3 0.720).
CONTEXT_TURNS = 3
#: Lines per cross-fitting group when the test split's groups are scenes of a script without scene breaks.
BLOCK = 200
#: Near-verbatim: character n-gram TF-IDF cosine at least this (or the same words).
COPY_COSINE = 0.9
COPY_MIN_WORDS = 4
#: Shuffled replies per real one in the coherence judge's training pairs.
NEGATIVES = 3


# ----------------------------------------------------------------------------- data


@dataclass
class Line:
    id: str
    group: str  # the cross-fitting unit: episode, or scene when the test split has few episodes
    speaker: str
    text: str
    context: str  # the last CONTEXT_TURNS lines before it in its scene, one per line


def context_text(turns: list[str]) -> str:
    """What the coherence judge reads of a context: its last CONTEXT_TURNS turns, names dropped."""
    kept = [NAME_PREFIX.sub("", t.strip()) for t in turns if t and t.strip()][-CONTEXT_TURNS:]
    return "\n".join(kept)


def messages_context(messages: list[dict], message: str | None = None) -> str:
    """The coherence context of a chat history (and the message answered), as ``context_text`` reads it."""
    turns = [line for m in messages for line in str(m.get("content", "")).split("\n")]
    return context_text([*turns, message] if message else turns)


def by_scene(pack: Pack) -> bool:
    """Whether the cross-fitting groups are scenes (the test split has fewer than FOLDS episodes) or episodes."""
    return len(SplitOf(pack).episodes_in("test")) < FOLDS


def read_lines(pack: Pack) -> dict[str, list[Line]]:
    """Every split's lines of real speakers with 2+ words, each with its scene context."""
    split_of = SplitOf(pack)
    scenes = by_scene(pack)
    out: dict[str, list[Line]] = {name: [] for name in SPLITS}
    for lines in Script.load(pack.require("script")).scenes():
        said: list[str] = []
        for line in lines:
            episode, scene = str(line.episode), str(line.scene)
            split = split_of(episode, scene)
            if split and line.is_character and len(line.text.split()) >= 2:
                group = f"{episode}/{scene}/{line.index // BLOCK}" if scenes else episode
                out[split].append(Line(f"{episode}-{scene}-{line.index}", group, line.speaker, line.text,
                                       context_text(said[-CONTEXT_TURNS:])))
            said.append(line.text)
    return out


def by_scene_groups(rows: list[Line]) -> bool:
    return any(row.group.count("/") == 2 for row in rows)


def fold_of(group: str, seed: int) -> int:
    """A stable fold for a cross-fitting group (the same in every run with the same seed)."""
    return zlib.crc32(f"{seed}:{group}".encode()) % FOLDS


# ----------------------------------------------------------------------------- surface features


def surface(texts: list[str]) -> np.ndarray:
    """Length and punctuation of each text (what an embedding of meaning barely sees)."""
    rows = []
    for t in texts:
        words = t.split()
        rows.append((np.log1p(len(words)), np.log1p(len(t)), t.count("?"), t.count("!"), t.count(","),
                     t.count("..."), sum(c.isupper() for c in t) / max(1, len(t)), t.rstrip()[-1:] == "?"))
    return np.asarray(rows, dtype=np.float64).reshape(len(texts), 8)


class Memo:
    """An embedder that encodes each distinct text once (the judges see the same lines many times).

    With ``path``, the vectors of an earlier run are read from it (``save`` writes them): the judges' fit embeds
    some 30,000 lines of House, two of its two and a half minutes, and a re-run (after more training) needs the
    same ones. The file is named by the embedder and its bulk precision (``Embedder.key``)."""

    def __init__(self, encoder, path: Path | None = None):
        self.encoder, self.path = encoder, path
        # by the text's SHA-1: House's file takes 53 MB, 238 with the texts themselves
        self.vectors: dict[bytes, np.ndarray] = {}
        self.used: set[bytes] = set()
        if path is not None and path.exists():
            try:
                with np.load(path, allow_pickle=False) as saved:
                    self.vectors = dict(zip(saved["digests"].tolist(), saved["vectors"]))
            except (OSError, ValueError, KeyError):  # a damaged cache is recomputed, not trusted
                log.warning("ignored the damaged embedding cache %s", path)

    def save(self) -> None:
        """Write the vectors of the texts this run asked for to ``path`` (atomically): the cache never grows
        with earlier runs' replies."""
        if self.path is None or not self.used:
            return
        keys = list(self.used)
        with atomic_path(self.path) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, digests=np.array(keys, dtype="S40"), vectors=np.stack([self.vectors[k] for k in keys]))

    def encode(self, texts: list[str]) -> np.ndarray:
        keys = [_digest(t) for t in texts]
        self.used.update(keys)
        new = {k: t for k, t in zip(keys, texts) if k not in self.vectors}
        if new:
            self.vectors.update(zip(new, self.encoder.encode(list(new.values()))))
        if not texts:
            return np.zeros((0, self.encoder.dim), dtype=np.float32)
        return np.stack([self.vectors[k] for k in keys])


def _digest(text: str) -> bytes:
    # hex: numpy's fixed-width bytes drop trailing NULs, which a raw digest may end in
    return hashlib.sha1(text.encode("utf-8")).hexdigest().encode("ascii")


def _logistic(C: float = 1.0, seed: int = 13, balanced: bool = False):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=2000, random_state=seed,
                                                              class_weight="balanced" if balanced else None))


# ----------------------------------------------------------------------------- the fitted judges


class Judges:
    """The held-apart style judge and the coherence judge of one pack, with their validation figures."""

    def __init__(self, encoder, style_models: list, style_validation: dict, coherence_model,
                 coherence_validation: dict, by_scene: bool, seed: int, blind_model=None, blind_validation=None):
        self.encoder = encoder
        self.style_models = style_models
        self.style_validation = style_validation
        self.coherence_model = coherence_model
        self.coherence_validation = coherence_validation
        # The coherence judge without the message's features (the reranker's): reported, never deciding.
        self.blind_model = blind_model
        self.blind_validation = blind_validation or {}
        self.by_scene = by_scene
        self.seed = seed

    @property
    def coherence_trusted(self) -> bool:
        """Both checks passed: real replies beat shuffled ones and beat an echo of the message."""
        v = self.coherence_validation
        return v.get("auc", 0.0) >= TRUST and v.get("echo_auc", 0.0) >= TRUST

    @classmethod
    def fit(cls, pack: Pack, seed: int = 13, encoder=None, max_coherence_pairs: int = 16_000,
            cache: Path | None = None) -> Judges:
        """``cache``: a folder that keeps the lines' embeddings between runs (``Memo``)."""
        from ..models.embeddings import embedder

        encoder = encoder or embedder()
        encoder = Memo(encoder, cache / f"embeddings-{encoder.key}.npz" if cache is not None else None)
        lines = read_lines(pack)
        test = lines.get("test") or []
        if not test:
            raise EmptyResultError(f"the pack {pack.path} has no test episodes to fit the held-apart judges on",
                                   "re-run rolecast prepare with a test split (--split 0.8,0.1,0.1)")
        style_models, style_validation = fit_style((lines.get("validation") or []) + test, pack.character, encoder,
                                                   seed)
        train = (lines.get("train") or []) + (lines.get("validation") or [])
        coherence, coherence_validation = fit_coherence(train, test, pack.character, encoder, seed,
                                                        max_coherence_pairs)
        blind, blind_validation = fit_coherence(train, test, pack.character, encoder, seed, max_coherence_pairs,
                                                message=False)
        return cls(encoder, style_models, style_validation, coherence, coherence_validation, by_scene(pack), seed,
                   blind, blind_validation)

    def group(self, line_id: str) -> str:
        """The cross-fitting group of a test line, from its id (``episode-scene-index``, as examples name it)."""
        episode, scene, index = [*line_id.rsplit("-", 2), "", ""][:3]
        return f"{episode}/{scene}/{int(index) // BLOCK if index.isdigit() else index}" if self.by_scene else episode

    def style(self, case_ids: list[str], replies: list[str]) -> np.ndarray:
        """P(the character said it) for each reply, by the model that never saw the case's episode."""
        if not replies:
            return np.zeros(0)
        x = style_features(self.encoder, replies)
        folds = np.array([fold_of(self.group(c), self.seed) for c in case_ids])
        out = np.zeros(len(replies))
        for f, model in enumerate(self.style_models):
            mask = folds == f
            if mask.any():
                out[mask] = model.predict_proba(x[mask])[:, 1]
        return out

    def coherence(self, contexts: list[str], replies: list[str], blind: bool = False) -> np.ndarray:
        """P(the reply answers the context) for each (context, reply) pair; ``blind``: by the judge without the
        message's features, which the reranker works on (reported, never deciding)."""
        model = self.blind_model if blind else self.coherence_model
        if not replies or model is None:
            return np.zeros(len(replies))
        return model.predict_proba(pair_matrix(self.encoder, contexts, replies, message=not blind))[:, 1]


def style_features(encoder, texts: list[str]) -> np.ndarray:
    """The held-apart judge's view of a line: its MiniLM embedding and its length and punctuation."""
    return np.hstack([encoder.encode(texts).astype(np.float64), surface(texts)])


def fit_style(lines: list[Line], character: str, encoder, seed: int) -> tuple[list, dict]:
    """Cross-fitted models on held-apart episodes' lines (the character's vs a balanced sample of others')."""
    pos = [line for line in lines if line.speaker == character]
    neg = [line for line in lines if line.speaker != character]
    if len(pos) < 10 or len(neg) < 10:
        raise EmptyResultError(f"the validation and test episodes have {len(pos)} lines of {character} and "
                               f"{len(neg)} of others", "the held-apart judge needs 10 of each: give the validation "
                               "and test splits more episodes (prepare --split)")
    rng = np.random.default_rng(seed)
    neg = [neg[i] for i in sorted(rng.choice(len(neg), size=min(len(neg), len(pos)), replace=False))]
    rows = pos + neg
    y = np.array([1] * len(pos) + [0] * len(neg))
    x = style_features(encoder, [r.text for r in rows])
    folds = np.array([fold_of(r.group, seed) for r in rows])
    oof = np.full(len(rows), 0.5)
    models = []
    for f in range(FOLDS):
        held = folds == f
        if len(set(y[~held].tolist())) < 2:
            # Fitted on every row, this fold's model would score its own lines in-sample: refused instead.
            raise EmptyResultError(f"the held-apart judge cannot be cross-fitted: outside one of its {FOLDS} groups of "
                                   f"held-apart {'scenes' if by_scene_groups(rows) else 'episodes'} there are no "
                                   f"lines of {'others' if y[~held].all() else character}",
                                   "give the validation and test splits more episodes (prepare --split), so that "
                                   "every group has both")
        model = _logistic(C=0.5, seed=seed).fit(x[~held], y[~held])
        if held.any():
            oof[held] = model.predict_proba(x[held])[:, 1]
        models.append(model)
    validation = {"auc": round(roc_auc(y, oof), 4), "lines": len(rows), "character_lines": len(pos),
                  "groups": len({r.group for r in rows}), "other_mean": round(float(oof[y == 0].mean()), 4),
                  "character_mean": round(float(oof[y == 1].mean()), 4)}
    log.info("held-apart style judge: out-of-fold AUC %.3f on %d held-apart lines", validation["auc"], len(rows))
    return models, validation


def pair_matrix(encoder, contexts: list[str], replies: list[str], message: bool = True) -> np.ndarray:
    """Features of (context, reply) pairs: the element-wise products of the reply's embedding with the last
    turn's (the message) and with the whole context's, both cosines and their squares; without ``message``,
    the whole context's alone.

    The message's cosine with the reply is what the reranker's relevance gate works on (rank correlation
    0.74 with this judge on House, benchmarks/relevance.py), and a linear model on the products rebuilds it.
    Without the message's features the judge fails its checks on House (real vs shuffled 0.661, real vs echo
    0.649, against 0.726 and 0.996), so it decides nothing: fitted beside the judge, it says how much of a
    rerank's coherence gain comes through another route than that feature (``rerank_gain`` in evaluate.py).

    The embeddings alone are left out: against shuffled replies of the same character both
    classes have the same contexts and the same replies, only the pairing differs. The
    squares let the judge learn that a reply can be too close to what was said: an echo
    of the message is not an answer (see ``fit_coherence``).
    """
    contexts = [ctx or "" for ctx in contexts]
    c = encoder.encode(contexts).astype(np.float64)
    last = encoder.encode([last_turn(ctx) for ctx in contexts]).astype(np.float64) if message else None
    r = encoder.encode(replies).astype(np.float64)
    whole = np.sum(c * r, axis=1, keepdims=True)
    if not message:
        return np.hstack([c * r, whole, whole ** 2])
    near = np.sum(last * r, axis=1, keepdims=True)
    return np.hstack([last * r, c * r, near, whole, near ** 2, whole ** 2])


def last_turn(context: str) -> str:
    return context.rsplit("\n", 1)[-1]


def shuffled_pairs(lines: list[Line], character: str, seed: int, limit: int,
                   negatives: int = 1) -> tuple[list[str], list[str], np.ndarray]:
    """The character's (context, real reply) pairs and, per pair, ``negatives`` pairs of the same context with
    the character's reply from another scene. ``limit`` caps the real pairs at ``limit // 2``."""
    rows = [line for line in lines if line.speaker == character and line.context]
    rng = np.random.default_rng(seed)
    if len(rows) > limit // 2:
        rows = [rows[i] for i in sorted(rng.choice(len(rows), size=limit // 2, replace=False))]
    if len(rows) < 2:
        return [], [], np.zeros(0)
    scenes = [r.id.rsplit("-", 1)[0] for r in rows]
    contexts, replies = [r.context for r in rows], [r.text for r in rows]
    for _ in range(negatives):
        other = rng.permutation(len(rows))
        for i in range(len(rows)):  # a reply from another scene: move off any match (a few passes suffice)
            j = 0
            while scenes[other[i]] == scenes[i] and j < 10:
                k = rng.integers(len(rows))
                other[i], other[k] = other[k], other[i]
                j += 1
        contexts += [r.context for r in rows]
        replies += [rows[k].text for k in other]
    return contexts, replies, np.array([1] * len(rows) + [0] * (len(rows) * negatives))


def fit_coherence(train: list[Line], test: list[Line], character: str, encoder, seed: int,
                  limit: int, message: bool = True) -> tuple[Any, dict]:
    """The coherence model, fitted on train+validation pairs and validated on the test episodes' pairs.

    Negatives: the character's replies from other scenes (three per real reply: more pairs
    from the same embeddings) and an echo of the message (the last turn said back). Without
    the echoes the judge preferred a parroted message to the real reply in 99.5% of House's
    test pairs, which a reranker on similarity to the message (and a small model that
    parrots) would win; with them, 0.4%. Two checks, both reported: real vs shuffled and
    real vs echo.
    """
    contexts, replies, y = shuffled_pairs(train, character, seed, limit, negatives=NEGATIVES)
    real = [i for i in range(len(y)) if y[i] == 1]
    contexts += [contexts[i] for i in real]
    replies += [last_turn(contexts[i]) for i in real]
    y = np.concatenate([y, np.zeros(len(real), dtype=y.dtype)])
    model = _logistic(C=0.05, seed=seed, balanced=True).fit(pair_matrix(encoder, contexts, replies, message), y)
    t_ctx, t_rep, t_y = shuffled_pairs(test, character, seed + 1, 2000)
    probs = model.predict_proba(pair_matrix(encoder, t_ctx, t_rep, message))[:, 1] if len(t_y) else np.zeros(0)
    truth = probs[t_y == 1]
    echoes = [t_ctx[i] for i in range(len(t_y)) if t_y[i] == 1]
    echo = model.predict_proba(pair_matrix(encoder, echoes, [last_turn(c) for c in echoes], message))[:, 1] \
        if echoes else truth
    validation = {"auc": round(roc_auc(t_y, probs), 4) if len(t_y) else 0.0,
                  "echo_auc": round(roc_auc(np.r_[np.ones(len(truth)), np.zeros(len(echo))], np.r_[truth, echo]), 4),
                  "pairs": int(len(t_y)), "train_pairs": int(len(y))}
    log.info("coherence judge%s: real vs shuffled AUC %.3f, real vs echo %.3f on %d test pairs",
             "" if message else " without the message's features", validation["auc"], validation["echo_auc"], len(t_y))
    return model, validation


# ----------------------------------------------------------------------------- discriminator


def discriminator(encoder, real: list[str], replies: list[str], rounds: int = 1000, seed: int = 13) -> dict[str, Any]:
    """AUC of a cross-validated classifier separating ``replies`` from ``real`` (pairs of one context fold together)."""
    n = len(real)
    if n != len(replies):
        raise ValueError(f"{n} real replies for {len(replies)} replies")
    if n < FOLDS * 2:
        return {"auc": float("nan"), "ci": (float("nan"), float("nan")), "n": n}
    texts = real + replies
    x = np.hstack([encoder.encode(texts).astype(np.float64), surface(texts)])
    y = np.array([0] * n + [1] * n)
    fold = np.tile(np.random.default_rng(seed).permutation(n) % FOLDS, 2)
    oof = np.zeros(2 * n)
    for f in range(FOLDS):
        held = fold == f
        oof[held] = _logistic(C=0.1, seed=seed).fit(x[~held], y[~held]).predict_proba(x[held])[:, 1]
    auc = roc_auc(y, oof)
    # A pair (a real reply and the variant's reply to the same context) is resampled together.
    ci = bootstrap_ci(np.c_[y, oof], lambda rows: roc_auc(rows[:, 0], rows[:, 1]), rounds, seed + 1, groups=2)
    return {"auc": round(float(auc), 4), "ci": ci, "n": n}


# ----------------------------------------------------------------------------- copies


def normalise(text: str) -> str:
    return " ".join(re.findall(r"\w+", text.casefold()))


class CopyFinder:
    """Near-verbatim matches of replies in a corpus (the character's training and retrieval lines)."""

    def __init__(self, corpus: list[str]):
        from sklearn.feature_extraction.text import TfidfVectorizer

        self.corpus = [t for t in dict.fromkeys(corpus) if len(t.split()) >= COPY_MIN_WORDS]
        self.exact = {normalise(t) for t in self.corpus}
        self.vectorizer = TfidfVectorizer(analyzer="char_wb", ngram_range=(3, 5), sublinear_tf=True, min_df=1)
        self.matrix = self.vectorizer.fit_transform(self.corpus) if self.corpus else None

    def copies(self, replies: list[str]) -> np.ndarray:
        """1.0 for a reply that repeats a corpus line near-verbatim, else 0.0."""
        out = np.zeros(len(replies))
        if self.matrix is None or not replies:
            return out
        long = [i for i, r in enumerate(replies) if len(r.split()) >= COPY_MIN_WORDS]
        if not long:
            return out
        sims = self.vectorizer.transform([replies[i] for i in long]) @ self.matrix.T
        best = np.asarray(sims.max(axis=1).todense()).ravel()
        for i, s in zip(long, best):
            out[i] = float(s >= COPY_COSINE or normalise(replies[i]) in self.exact)
        return out


def character_corpus(pack: Pack) -> list[str]:
    """The character's lines the model may have memorised or retrieved: the train and validation replies."""
    from ..pack.examples import read_examples

    out = []
    for split in ("train", "validation"):
        path = pack.require("examples") / f"{split}.jsonl"
        if path.exists():
            out += [ex["completion"][0]["content"] for ex in read_examples(path)]
    return out


# ----------------------------------------------------------------------------- pairwise


def pairwise(scores: dict[str, np.ndarray], rounds: int = 1000, seed: int = 13) -> dict[str, dict[str, Any]]:
    """For every pair of variants (same cases, same order): how often the first's score beats the second's.

    Ties count half. ``{"a vs b": {"win": 0.62, "ci": (0.55, 0.69), "n": 200}}``.
    """
    out = {}
    for a, b in combinations(scores, 2):
        sa, sb = np.asarray(scores[a], dtype=float), np.asarray(scores[b], dtype=float)
        n = min(len(sa), len(sb))
        if not n:
            continue
        wins = (sa[:n] > sb[:n]) + 0.5 * (sa[:n] == sb[:n])
        ci = bootstrap_ci(wins, rounds=rounds, seed=seed)
        out[f"{a} vs {b}"] = {"a": a, "b": b, "win": round(float(wins.mean()), 4), "ci": ci, "n": int(n)}
    return out


def mean_wins(pairs: dict[str, dict[str, Any]], names: list[str]) -> dict[str, float]:
    """Each variant's mean win rate against every other variant."""
    total = {n: [] for n in names}
    for p in pairs.values():
        if p["a"] in total and p["b"] in total:
            total[p["a"]].append(p["win"])
            total[p["b"]].append(1.0 - p["win"])
    return {n: float(np.mean(v)) if v else 0.5 for n, v in total.items()}
