"""Style classifier: "does this reply sound like the character?" — a probability in [0, 1].

Used by the Performer to rerank candidate replies and by the evaluation report.

    rolecast style train PACK                  # what `rolecast prepare` runs: train_style(pack)

    >>> report = train_style(pack)                                   # doctest: +SKIP
    >>> scorer = StyleScorer.load(pack)                              # doctest: +SKIP
    >>> scorer.score("Is it lupus?", "It's never lupus.")           # doctest: +SKIP
    0.71
    >>> scorer.score_many(["Is it lupus?"] * 2, ["It's never lupus.", "Let me check the chart."])  # doctest: +SKIP

Data. Positives are the character's lines, negatives the other characters' lines of the
same episodes (narration, "(several)" and "(unknown)" left out), both of 2+ words as in
the examples. The pack's episode split is kept: train episodes to fit (2 negatives per
positive, class-weighted back to balance), validation episodes (balanced) to choose C,
calibrate (Platt / blend weights) and set ``threshold``, test episodes (balanced) for the
report. The context of a line is the nearest of the 3 lines before it in its scene said
by another character ("" when none); for scoring it is the last line said to the character.

Model (``method="auto"`` = ``"tfidf"``): TF-IDF of the reply, word 1–2-grams and char_wb
2–5-grams, plus 20 features of the reply and of the context–reply pair (lengths,
punctuation, question answered by a question, word TF-IDF cosine to the context), one
logistic regression (C chosen on validation, from 1 down while it helps). Features of
the context alone are left out on purpose: the score judges the reply, so it ranks the
candidates for one message and compares models fairly.
A loaded classifier is numpy and dicts only (``tfidf.npz``, ``tfidf_terms.json``: no
pickle, no sklearn import): on House it trains in ~1 minute (2 on busy cores), loads in
0.1 s (0.25 s in a fresh process, imports included) and scores 4 candidates in ~0.3 ms.

Opt-in ``method="minilm"``: the same, blended on validation with an MLP (256 relu) on the
frozen all-MiniLM-L6-v2 embedding of the reply. +0.006 test AUC on House, +0.012 on
Chandler, but it embeds the training lines (as many as ``max_minutes`` allows: give it 20
on House), costs one MiniLM pass per scoring call (~22 ms for 4 candidates, more on busy
cores) and 5–7 s to load in a fresh process — for the evaluation report rather than the
chat request path. It is kept only when the blend beats tfidf on the validation episodes.

Measured on House, 2 shared CPU cores (stand-in pack: seasons 1–6 train, 7 validation,
8 test; 3,830 balanced test lines; ``benchmarks/style_explore.py`` re-runs all of it):

=============================================================  =======  ========  ========  =============
method (training data 1:1 unless said)                         val AUC  test AUC  test acc  train s
=============================================================  =======  ========  ========  =============
TF-IDF word 1–2-grams + LR                                     0.682    0.694     0.633     9
TF-IDF char_wb 2–5-grams + LR                                  0.685    0.708     0.650     27
TF-IDF word + char + LR                                        0.699    0.717     0.655     34
TF-IDF word + char, NB-weighted (NB-SVM) + LR                  0.694    0.705     0.644     16
MiniLM embedding + LR                                          0.653    0.658     0.609     400 + 2
MiniLM embedding + MLP 256                                     0.682    0.683     0.628     400 + 81
TF-IDF word + char hstacked with MiniLM embedding, LR          0.710    0.726     0.660     400 + 30
MiniLM fine-tuned (1 epoch, max_len 48, batch 32)              —        0.69 [1]  —         ~3000 [2]
tfidf: word + char + pair features + LR                        0.702    0.720     0.655     66
tfidf 1:1 + MiniLM MLP, blended on validation                  0.721    0.732     0.663     400 + 150
tfidf, 2 negatives per positive: THE DEFAULT ("auto")          0.706    0.727     0.664     66 (110 busy)
minilm: the default + MLP on 24k embedded lines, blended       0.720    0.733     0.674     740
=============================================================  =======  ========  ========  =============

"400 +": embedding the 42k lines took ~400 s. [1] measured before this module, seasons 7–8
held out. [2] a fine-tune step (batch 32) took ~3 s on the shared cores, ~50 min an epoch:
past any sensible budget, so it gave way to the MLP on frozen embeddings, which gets about
its AUC for one forward pass and no second model in memory.

Other packs: the House pack from ``rolecast prepare`` (seasons as episodes, season 1
validation, 4 test): tfidf 0.705 test AUC, 84 s. Friends, Chandler Bing (seasons 1–8
train, 9 validation, 10 test): tfidf 0.603 (40 s), minilm 0.615 (9 min) — his lines are
harder to tell from the other five friends' than House's from his team's.
"""

from __future__ import annotations

import json
import logging
import math
import random
import re
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import EmptyResultError, PackError, SettingsError
from ..files import atomic_dir, atomic_write, write_json
from ..ingest.script import NON_CHARACTERS, Script
from ..pack import Pack
from ..pack.examples import SplitOf
from ..stats import best_threshold, roc_auc

log = logging.getLogger(__name__)

SPLITS = ("train", "validation", "test")
METHODS = ("auto", "tfidf", "minilm")
DEFAULT_METHOD = "tfidf"
#: Training negatives per positive (class-weighted back to balance); validation and test are balanced.
NEGATIVES = 2.0
FORMAT = "rolecast-style/1"


# ----------------------------------------------------------------------------- data


@dataclass
class Data:
    """Rows of (context, reply, label): 1 for the character's lines, 0 for the others'."""

    contexts: list[str] = field(default_factory=list)
    replies: list[str] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.replies)

    @property
    def y(self) -> np.ndarray:
        return np.asarray(self.labels, dtype=np.int64)


def load_data(pack: Pack, seed: int = 13, min_words: int = 2, negatives: float = 1.0) -> dict[str, Data]:
    """The character's lines (1) and other characters' lines (0) of each split, each with its context.

    The context of a line is the nearest of the 3 lines before it in its scene said by
    another character ("" when none). Lines shorter than ``min_words`` words are left out of
    both classes (the examples leave them out too). The negatives are a seeded sample:
    ``negatives`` per positive in train, one per positive in validation and test.
    """
    split_of = SplitOf(pack)
    character = pack.character
    pos: dict[str, list[tuple[str, str]]] = {name: [] for name in SPLITS}
    neg: dict[str, list[tuple[str, str]]] = {name: [] for name in SPLITS}
    for lines in Script.load(pack.require("script")).scenes():
        scene: list[tuple[str, str]] = []  # (speaker, text) of the scene so far
        for line in lines:
            speaker, text = line.speaker, line.text
            name = split_of(line.episode, line.scene)
            if name and line.is_character and len(text.split()) >= min_words:
                context = next((t for s, t in reversed(scene[-3:]) if s != speaker and s not in NON_CHARACTERS), "")
                (pos if speaker == character else neg)[name].append((context, text))
            scene.append((speaker, text))
    out: dict[str, Data] = {}
    for i, name in enumerate(SPLITS):
        rng = random.Random(seed * 1000 + i)
        ratio = negatives if name == "train" else 1.0
        sampled = rng.sample(neg[name], min(len(neg[name]), int(round(len(pos[name]) * ratio))))
        rows = [(c, r, 1) for c, r in pos[name]] + [(c, r, 0) for c, r in sampled]
        rng.shuffle(rows)
        out[name] = Data([r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows])
    if len(set(out["train"].labels)) < 2:
        raise EmptyResultError(
            f"the training episodes have no lines of {character} or none of other speakers",
            "the style classifier needs both; check the pack's script.jsonl and examples/")
    return out


# ----------------------------------------------------------------------------- metrics


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -30, 30)))


# ----------------------------------------------------------------------------- text features
#
# The analyzers are plain functions shared by training (given to sklearn's TfidfVectorizer)
# and scoring (numpy and dicts only), so a loaded classifier needs neither sklearn nor pickle.

_WORD = re.compile(r"(?u)\b\w\w+\b")
_SPACES = re.compile(r"\s\s+")
_SENTENCE_END = re.compile(r"[.!?]+")
N_PAIR = 20


def word_terms(text: str) -> list[str]:
    """Lower-cased words of 2+ characters and their bigrams (sklearn's default word analyzer)."""
    words = _WORD.findall(text.lower())
    return words + [f"{a} {b}" for a, b in zip(words, words[1:], strict=False)]


def char_terms(text: str, low: int = 2, high: int = 5) -> list[str]:
    """Character n-grams inside word boundaries, case kept (sklearn's char_wb analyzer)."""
    out = []
    for word in _SPACES.sub(" ", text).split():
        word = f" {word} "
        size = len(word)
        for n in range(low, high + 1):
            if n >= size:  # a short word counts once, whole
                out.append(word)
                break
            out.extend(word[i:i + n] for i in range(size - n + 1))
    return out


def pair_features(contexts: list[str], replies: list[str], cosine: np.ndarray) -> np.ndarray:
    """Features of the reply and of the (context, reply) pair; ``cosine``: their word TF-IDF similarity."""
    out = np.zeros((len(replies), N_PAIR), dtype=np.float64)
    for i, (ctx, reply) in enumerate(zip(contexts, replies, strict=True)):
        words = reply.split()
        n_words = math.log1p(len(words))
        r_end, c_end = reply.rstrip()[-1:], ctx.rstrip()[-1:]
        r_q, c_q = r_end == "?", c_end == "?"
        out[i] = (
            n_words, math.log1p(len(reply)), reply.count("?"), reply.count("!"), reply.count(","),
            reply.count("..."), reply.count("-"), r_q, r_end == "!",
            sum(ch.isupper() for ch in reply) / max(1, len(reply)), any(ch.isdigit() for ch in reply),
            len(_SENTENCE_END.findall(reply)), sum(map(len, words)) / max(1, len(words)),
            cosine[i], not ctx, c_q, math.log1p(len(ctx.split())), r_q and c_q, c_q * n_words, cosine[i] * n_words,
        )
    return out


def _row_dots(a, b) -> np.ndarray:
    """Row-wise dot products of two sparse matrices of the same shape (cosines of l2-normed TF-IDF rows)."""
    return np.asarray(a.multiply(b).sum(axis=1)).ravel()


class _Tfidf:
    """A fitted TF-IDF space (sublinear tf, smooth idf, l2 norm) applied without sklearn."""

    def __init__(self, terms: list[str], idf: np.ndarray, analyzer):
        self.terms = terms
        self.index = {t: i for i, t in enumerate(terms)}
        self.idf = np.asarray(idf, dtype=np.float64)
        self.analyzer = analyzer

    def vector(self, text: str) -> dict[int, float]:
        counts: dict[int, int] = {}
        for term in self.analyzer(text):
            j = self.index.get(term)
            if j is not None:
                counts[j] = counts.get(j, 0) + 1
        weights = {j: (1.0 + math.log(c)) * self.idf[j] for j, c in counts.items()}
        norm = math.sqrt(sum(w * w for w in weights.values()))
        return {j: w / norm for j, w in weights.items()} if norm else {}


# ----------------------------------------------------------------------------- the default: tfidf


class TfidfModel:
    """TF-IDF of the reply (words + characters) and pair features → one logistic regression."""

    name = "tfidf"
    grid = (1.0, 0.5, 0.25, 0.125)  # C values tried in this order, while validation AUC improves and time allows
    pair_weight = 0.3  # scale of the standardised pair features next to the TF-IDF ones
    sklearn = vectorizers = None  # set by fit, in the fitting process only (a loaded model scores with numpy)

    def __init__(self, seed: int = 13):
        self.seed = seed

    # training (sklearn) ----------------------------------------------------------
    def fit(self, train: Data, valid: Data, deadline: float, later_lines: int = 0) -> dict[str, Any]:
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression

        tiny = len(train) < 200  # keep every n-gram of a tiny corpus
        options = {"sublinear_tf": True, "lowercase": False, "token_pattern": None}
        word = TfidfVectorizer(analyzer=word_terms, min_df=1 if tiny else 2, **options)
        char = TfidfVectorizer(analyzer=char_terms, min_df=1 if tiny else 3, **options)
        n = len(train)
        # One pass of the (pure Python) analyzers over the training rows: fit and transform at once.
        words = word.fit_transform(train.replies + train.contexts)
        chars = char.fit_transform(train.replies)
        self.word = _Tfidf(list(word.get_feature_names_out()), word.idf_, word_terms)
        self.char = _Tfidf(list(char.get_feature_names_out()), char.idf_, char_terms)
        raw = pair_features(train.contexts, train.replies, _row_dots(words[:n], words[n:]))
        self.mean, self.scale = raw.mean(axis=0), raw.std(axis=0) + 1e-6
        x_train = self._stack(words[:n], chars, raw)
        self.vectorizers = (word, char)
        x_valid = self.sparse(valid.contexts, valid.replies) if len(set(valid.labels)) == 2 else None
        best: tuple[float, float, Any] | None = None
        for C in self.grid if x_valid is not None else self.grid[:1]:
            # tol 1e-3 (liblinear's 1e-4 by default): 20% faster, House's validation AUC the same to 4 decimals
            model = LogisticRegression(C=C, solver="liblinear", tol=1e-3, max_iter=2000, class_weight="balanced",
                                       random_state=self.seed).fit(x_train, train.y)
            auc = roc_auc(valid.y, model.decision_function(x_valid)) if x_valid is not None else 0.5
            log.info("style tfidf C=%s validation AUC %.4f", C, auc)
            if best is not None and auc <= best[0]:
                break
            best = (auc, C, model)
            if time.monotonic() > deadline:
                break
        assert best is not None
        _, self.C, model = best
        coef = model.coef_[0].astype(np.float64)
        n_word, n_char = len(self.word.terms), len(self.char.terms)
        self.coef_word, self.coef_char = coef[:n_word], coef[n_word:n_word + n_char]
        self.coef_pair, self.intercept = coef[n_word + n_char:], float(model.intercept_[0])
        self.sklearn = model
        if x_valid is not None:  # the numpy scorer must be the model that was validated
            sample = slice(0, 200)
            mine = self.numpy_logits(valid.contexts[sample], valid.replies[sample])
            theirs = model.decision_function(x_valid[sample])
            assert np.allclose(mine, theirs, atol=1e-6), float(np.abs(mine - theirs).max())
        return {"C": self.C, "features": int(x_train.shape[1])}

    def _stack(self, words, chars, raw: np.ndarray):
        import scipy.sparse as sp

        pair = (raw - self.mean) / self.scale * self.pair_weight
        return sp.hstack([words, chars, sp.csr_matrix(pair)], format="csr")

    def sparse(self, contexts: list[str], replies: list[str]):
        """The feature matrix of (context, reply) pairs through the fitted sklearn vectorizers."""
        word, char = self.vectorizers
        words = word.transform(replies)
        raw = pair_features(contexts, replies, _row_dots(words, word.transform(contexts)))
        return self._stack(words, char.transform(replies), raw)

    # scoring -----------------------------------------------------------------------
    def logits(self, contexts: list[str], replies: list[str]) -> np.ndarray:
        """Logits of P(the character said it): sklearn's in the process that fitted the model (the same figures:
        ``fit`` checks them against the numpy scorer), numpy's once loaded (serving needs no sklearn)."""
        if self.sklearn is not None and replies:
            return self.sklearn.decision_function(self.sparse(contexts, replies))
        return self.numpy_logits(contexts, replies)

    def numpy_logits(self, contexts: list[str], replies: list[str]) -> np.ndarray:
        out = np.full(len(replies), self.intercept, dtype=np.float64)
        cosine = np.zeros(len(replies))
        for i, (ctx, reply) in enumerate(zip(contexts, replies, strict=True)):
            w, c = self.word.vector(reply), self.char.vector(reply)
            out[i] += sum(v * self.coef_word[j] for j, v in w.items()) + sum(v * self.coef_char[j] for j, v in c.items())
            if ctx and w:
                wc = self.word.vector(ctx)
                cosine[i] = sum(v * wc.get(j, 0.0) for j, v in w.items())
        pair = (pair_features(contexts, replies, cosine) - self.mean) / self.scale * self.pair_weight
        return out + pair @ self.coef_pair

    def save(self, folder: Path) -> None:
        np.savez(folder / "tfidf.npz", word_idf=self.word.idf, char_idf=self.char.idf, coef_word=self.coef_word,
                 coef_char=self.coef_char, coef_pair=self.coef_pair, intercept=self.intercept, mean=self.mean,
                 scale=self.scale, pair_weight=self.pair_weight)
        atomic_write(folder / "tfidf_terms.json", json.dumps({"word": self.word.terms, "char": self.char.terms},
                                                              ensure_ascii=False))

    @classmethod
    def load(cls, folder: Path) -> TfidfModel:
        self = cls()
        terms = json.loads((folder / "tfidf_terms.json").read_text(encoding="utf-8"))
        with np.load(folder / "tfidf.npz", allow_pickle=False) as z:
            self.word = _Tfidf(terms["word"], z["word_idf"], word_terms)
            self.char = _Tfidf(terms["char"], z["char_idf"], char_terms)
            self.coef_word, self.coef_char, self.coef_pair = z["coef_word"], z["coef_char"], z["coef_pair"]
            self.intercept, self.mean, self.scale = float(z["intercept"]), z["mean"], z["scale"]
            self.pair_weight = float(z["pair_weight"])
        return self


# ----------------------------------------------------------------------------- opt-in: MiniLM + MLP


class MinilmModel:
    """A small MLP on the frozen all-MiniLM-L6-v2 embedding of the reply (the shared embedder)."""

    name = "minilm"
    hidden = 256

    def __init__(self, seed: int = 13):
        self.seed = seed

    def fit(self, train: Data, valid: Data, deadline: float, later_lines: int = 0) -> dict[str, Any]:
        from sklearn.neural_network import MLPClassifier

        from ..models.embeddings import embedder

        self.encoder = embedder()
        # measure the encoding speed, then encode as many training lines as the time allows
        # (the rows are shuffled, so a prefix is a random sample) and keep time to score the rest
        probe = min(len(train), 256)
        start = time.monotonic()
        head = self.encoder.encode(train.replies[:probe])
        per_line = (time.monotonic() - start) / max(1, probe)
        budget = deadline - time.monotonic() - later_lines * per_line - 10.0
        n = max(probe, min(len(train), probe + int(budget / max(per_line, 1e-6))))
        x = np.vstack([head, self.encoder.encode(train.replies[probe:n])]) if n > probe else head
        mlp = MLPClassifier(hidden_layer_sizes=(self.hidden,), alpha=1e-3, early_stopping=n >= 200, max_iter=60,
                            random_state=self.seed).fit(x, train.y[:n])
        self.w1, self.w2 = mlp.coefs_
        self.b1, self.b2 = mlp.intercepts_
        return {"encoded_lines": int(n), "of": len(train), "iterations": int(mlp.n_iter_)}

    def logits(self, contexts: list[str], replies: list[str]) -> np.ndarray:
        x = self.encoder.encode(replies).astype(np.float64)
        return (np.maximum(x @ self.w1 + self.b1, 0.0) @ self.w2 + self.b2)[:, 0]

    def save(self, folder: Path) -> None:
        np.savez(folder / "minilm_mlp.npz", w1=self.w1, b1=self.b1, w2=self.w2, b2=self.b2)

    @classmethod
    def load(cls, folder: Path) -> MinilmModel:
        from ..models.embeddings import embedder

        self = cls()
        with np.load(folder / "minilm_mlp.npz", allow_pickle=False) as z:
            self.w1, self.b1, self.w2, self.b2 = z["w1"], z["b1"], z["w2"], z["b2"]
        self.encoder = embedder()
        return self


MODELS = {"tfidf": TfidfModel, "minilm": MinilmModel}


# ----------------------------------------------------------------------------- training


def _calibrate(logits: np.ndarray, y: np.ndarray, seed: int) -> tuple[list[float], float]:
    """Weights and bias of a logistic regression on the models' validation logits (Platt / blend)."""
    if len(set(y.tolist())) < 2:
        return [1.0] * logits.shape[1], 0.0
    from sklearn.linear_model import LogisticRegression

    lr = LogisticRegression(C=1.0, random_state=seed).fit(logits, y)
    return [float(w) for w in lr.coef_[0]], float(lr.intercept_[0])


def _evaluate(name: str, probs: np.ndarray, data: Data, threshold: float, seconds: float) -> dict[str, Any]:
    return {
        "method": name,
        "roc_auc": round(roc_auc(data.y, probs), 4),
        "accuracy": round(float(np.mean((probs >= threshold) == data.y)) if len(data) else 0.0, 4),
        "train_seconds": round(seconds, 1),
    }


def train_style(pack: Pack, method: str = "auto", seed: int = 13, max_minutes: float = 5.0) -> dict[str, Any]:
    """Train the style classifier of ``pack``, write ``style/`` (atomically) and return the report.

    ``method``: "auto" (= "tfidf", about 35 s on House on 2 CPU cores), "tfidf", or
    "minilm" (tfidf, then an MLP on MiniLM embeddings, blended; kept only when the blend
    beats tfidf on the validation episodes; give it ``max_minutes=15`` on House — with
    less it embeds only a sample of the training lines). Training stops adding work
    (C values, embedded lines) once ``max_minutes`` are spent.
    """
    if method not in METHODS:
        raise SettingsError(f"unknown style method {method!r}", "use one of: " + ", ".join(METHODS), param="method")
    chosen = DEFAULT_METHOD if method == "auto" else method
    started = time.monotonic()
    deadline = started + max_minutes * 60
    data = load_data(pack, seed=seed, negatives=NEGATIVES)
    train, valid, test = data["train"], data["validation"], data["test"]
    if not len(test):  # a pack without test episodes: report on validation, say so
        log.warning("the pack has no test lines; the style report uses the validation episodes")
        test = valid
    random.seed(seed)
    np.random.seed(seed)

    names = ["tfidf"] + (["minilm"] if chosen == "minilm" else [])
    models: dict[str, Any] = {}
    details: dict[str, Any] = {}
    tried: list[dict[str, Any]] = []
    val_logits: dict[str, np.ndarray] = {}
    test_logits: dict[str, np.ndarray] = {}
    for i, name in enumerate(names):
        t0 = time.monotonic()
        # leave the later models their share of the time
        share = deadline if i == len(names) - 1 else t0 + (deadline - t0) * 0.25
        model = MODELS[name](seed=seed)
        details[name] = model.fit(train, valid, share, later_lines=len(valid) + len(test))
        seconds = time.monotonic() - t0
        models[name] = model
        val_logits[name] = model.logits(valid.contexts, valid.replies)
        test_logits[name] = model.logits(test.contexts, test.replies)
        weights, bias = _calibrate(val_logits[name][:, None], valid.y, seed)
        probs_val = _sigmoid(val_logits[name] * weights[0] + bias)
        probs = _sigmoid(test_logits[name] * weights[0] + bias)
        tried.append(_evaluate(name, probs, test, best_threshold(valid.y, probs_val), seconds)
                     | {"validation_roc_auc": round(roc_auc(valid.y, probs_val), 4)})
    if len(names) > 1:
        t0 = time.monotonic()
        stack_val = np.column_stack([val_logits[n] for n in names])
        weights, bias = _calibrate(stack_val, valid.y, seed)
        probs_val = _sigmoid(stack_val @ np.asarray(weights) + bias)
        probs = _sigmoid(np.column_stack([test_logits[n] for n in names]) @ np.asarray(weights) + bias)
        seconds = sum(row["train_seconds"] for row in tried) + time.monotonic() - t0
        tried.append(_evaluate("+".join(names), probs, test, best_threshold(valid.y, probs_val), seconds)
                     | {"validation_roc_auc": round(roc_auc(valid.y, probs_val), 4)})
    # keep the best on validation among what was tried
    best = max(range(len(tried)), key=lambda k: tried[k]["validation_roc_auc"])
    kept = names if best == len(names) else [names[best]]
    final_val = np.column_stack([val_logits[n] for n in kept])
    weights, bias = _calibrate(final_val, valid.y, seed)
    threshold = best_threshold(valid.y, _sigmoid(final_val @ np.asarray(weights) + bias))
    result = tried[best]
    report = {
        "method": "+".join(kept),
        "requested": method,
        "character": pack.character,
        "roc_auc": result["roc_auc"],
        "accuracy": result["accuracy"],
        "validation_roc_auc": result["validation_roc_auc"],
        "threshold": round(threshold, 4),
        "n_train": len(train),
        "n_validation": len(valid),
        "n_test": len(test),
        "tried": tried,
        "details": {n: details[n] for n in kept},
        "negatives_per_positive": NEGATIVES,
        "seed": seed,
        "seconds": round(time.monotonic() - started, 1),
    }
    with atomic_dir(pack.path / "style") as tmp:
        for name in kept:
            models[name].save(tmp)
        write_json(tmp / "model.json", {"format": FORMAT, "models": kept, "weights": weights, "bias": bias,
                                        "threshold": threshold})
        write_json(tmp / "report.json", report)
    pack.record("style", method=report["method"], roc_auc=report["roc_auc"])
    log.info("style classifier %s: test ROC AUC %.3f (%s)", report["method"], report["roc_auc"], pack.path / "style")
    return report


# ----------------------------------------------------------------------------- scoring


class StyleScorer:
    """Loads ``style/`` of a pack and scores replies: P(the character said it)."""

    def __init__(self, models: list[Any], weights: list[float], bias: float, threshold: float, method: str):
        self.models = models
        self.weights = np.asarray(weights, dtype=np.float64)
        self.bias = float(bias)
        self.threshold = float(threshold)
        self.method = method

    @classmethod
    def load(cls, pack: Pack) -> StyleScorer:
        folder = pack.require("style")
        path = folder / "model.json"
        try:
            meta = json.loads(path.read_text(encoding="utf-8"))
            if meta.get("format") != FORMAT:
                raise ValueError(f"format {meta.get('format')!r}, expected {FORMAT!r}")
            models = [MODELS[name].load(folder) for name in meta["models"]]
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
            raise PackError(f"the style classifier in {folder} cannot be loaded ({exc})",
                            f"rebuild it with: rolecast style train {pack.path}") from None
        return cls(models, meta["weights"], meta["bias"], meta.get("threshold", 0.5), "+".join(meta["models"]))

    def score_many(self, contexts: list[str], replies: list[str]) -> np.ndarray:
        """One probability per reply, each against its context (the line said to the character)."""
        if len(contexts) != len(replies):
            raise ValueError(f"{len(contexts)} contexts for {len(replies)} replies")
        if not replies:
            return np.zeros(0, dtype=np.float64)
        contexts = [c or "" for c in contexts]
        replies = [r or "" for r in replies]
        logits = np.column_stack([m.logits(contexts, replies) for m in self.models])
        return _sigmoid(logits @ self.weights + self.bias)

    def score(self, context: str, reply: str) -> float:
        return float(self.score_many([context], [reply])[0])
