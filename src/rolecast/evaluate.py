"""``rolecast eval``: what each part of the pipeline buys, measured on episodes never trained on.

    rolecast eval packs/house --variants base,prompt,retrieval,lora,lora+rerank --limit 200

For every variant, replies are generated for up to ``limit`` examples of the pack's
test split (the last line said to the character is the message, the scene before it
the history), then scored against the character's real reply:

- style: the pack's classifier (the real replies' mean is the ceiling, ``base`` the floor)
- ROUGE-L F1 and embedding similarity to the real reply
- perplexity of the real reply under the variant's prompt (reply tokens only)
- distinct-1/2, loop rate, impersonation rate before and after post-processing
- persona breaks on the probe set (``probes.py``), mean words, tokens/s, latency

with 95% bootstrap confidence intervals. Writes ``eval/report.md``, ``eval/metrics.json``,
``eval/samples.jsonl`` and PNG charts into the pack.
"""

from __future__ import annotations

import json
import logging
import math
import random
import re
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from .backends import Backend, create
from .errors import PackError, SettingsError
from .examples import read_examples
from .files import atomic_dir, write_json
from .pack import Pack
from .performer import Performer, pack_adapter
from .postprocess import _LINE_START_NAME, _PERSONA, _loops
from .probes import probes
from .prompt import build_prompt
from .settings import BackendSettings, EvalSettings, GenerationSettings, PerformerSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Variant:
    card: bool  # the card's system prompt
    examples: int  # retrieved real exchanges in the prompt
    adapter: bool  # the pack's LoRA adapter
    candidates: int  # sampled and reranked


VARIANTS: dict[str, Variant] = {
    "base": Variant(card=False, examples=0, adapter=False, candidates=1),
    "prompt": Variant(card=True, examples=0, adapter=False, candidates=1),
    "retrieval": Variant(card=True, examples=4, adapter=False, candidates=1),
    "rerank": Variant(card=True, examples=4, adapter=False, candidates=4),
    "lora": Variant(card=True, examples=4, adapter=True, candidates=1),
    "lora+rerank": Variant(card=True, examples=4, adapter=True, candidates=4),
}
PER_EXAMPLE = ("style", "rouge_l", "similarity", "words", "latency_s", "loop", "impersonation_raw", "impersonation")


def evaluate(pack: Pack, settings: EvalSettings, backend: BackendSettings, gen: GenerationSettings) -> dict[str, Any]:
    """Run every variant, write the report into ``pack/eval``, return the metrics."""
    unknown = [v for v in settings.variants if v not in VARIANTS]
    if unknown:
        raise SettingsError(f"unknown variant(s) {', '.join(unknown)}; valid: {', '.join(VARIANTS)}")
    cases = load_cases(pack, settings.limit, settings.seed)
    from .embeddings import embedder
    from .style import StyleScorer

    style = StyleScorer.load(pack)  # the judge; PackError naming the command when the pack has none
    model = embedder()
    backends = _Backends(pack, backend)
    results: dict[str, Any] = {}
    samples: dict[str, list[dict]] = {}
    try:
        for name in settings.variants:
            variant = VARIANTS[name]
            if variant.adapter and not backends.has_adapter():
                log.warning("skipped variant %s: the pack has no adapter for the %s backend (rolecast train, then "
                            "rolecast export)", name, backend.backend)
                continue
            performer = backends.performer(variant)
            log.info("eval %s: %d examples", name, len(cases))
            rows = [run_case(performer, variant, case, gen.updated(seed=settings.seed + i)) for i, case in enumerate(cases)]
            breaks = probe_breaks(performer, variant, gen, settings) if settings.probes else None
            results[name] = summarise(rows, style, model, breaks, settings.bootstrap, settings.seed)
            samples[name] = rows
    finally:
        backends.close()
    real = [c["reply"] for c in cases]
    ceiling = float(np.mean(style.score_many([c["message"] for c in cases], real))) if cases else 0.0
    metrics = {"pack": pack.character, "examples": len(cases), "variants": results, "style_ceiling": ceiling,
               "settings": settings.model_dump(), "generation": gen.model_dump()}
    write_report(pack, metrics, samples, cases)
    return metrics


def load_cases(pack: Pack, limit: int, seed: int) -> list[dict[str, Any]]:
    """Test-split examples whose last context turn is said to the character: history, message, real reply."""
    path = pack.require("examples") / "test.jsonl"
    cases = []
    for ex in read_examples(path):
        msgs = ex["messages"]
        if not msgs or msgs[-1]["role"] != "user":
            continue
        message = re.sub(r"^[^:\n]{1,40}: ", "", msgs[-1]["content"].split("\n")[-1])
        cases.append({"id": ex["id"], "history": msgs[:-1], "message": message, "context": msgs,
                      "reply": ex["completion"][0]["content"]})
    if not cases:
        raise PackError(f"the pack {pack.path} has no test examples with a line said to the character",
                        "re-run rolecast prepare with a test split")
    random.Random(seed).shuffle(cases)
    return cases[:limit]


class _Backends:
    """The base model and, when needed, the base with the pack's adapter: each loaded once."""

    def __init__(self, pack: Pack, settings: BackendSettings):
        self.pack, self.settings = pack, settings
        self.loaded: dict[bool, Backend] = {}
        self.performers: dict[Variant, Performer] = {}

    def has_adapter(self) -> bool:
        return pack_adapter(self.pack, self.settings.updated(no_adapter=False)) is not None

    def backend(self, adapter: bool) -> Backend:
        if adapter not in self.loaded:
            path = pack_adapter(self.pack, self.settings.updated(no_adapter=False)) if adapter else None
            self.loaded[adapter] = create(self.settings.updated(adapter=path, no_adapter=not adapter))
        return self.loaded[adapter]

    def performer(self, variant: Variant) -> Performer:
        perf = PerformerSettings(candidates=variant.candidates, examples=variant.examples)
        return Performer(self.pack, self.backend(variant.adapter), perf=perf)

    def close(self) -> None:
        for backend in self.loaded.values():
            backend.close()


def variant_messages(performer: Performer, variant: Variant, history: list[dict], message: str) -> list[dict]:
    """The prompt a variant sends: the bare conversation for ``base``, the Performer's otherwise; both fit the context."""
    if not variant.card:
        message = performer.check_message(message)[0]
        return build_prompt(None, history, message, [], performer.backend, performer.perf, performer.gen).messages
    return performer.prompt(history, message).messages


def run_case(performer: Performer, variant: Variant, case: dict, gen: GenerationSettings) -> dict[str, Any]:
    start = time.perf_counter()
    if variant.card:
        reply = performer.reply(case["history"], case["message"], gen=gen)
        raw = max(reply.candidates, key=lambda c: c.total if c.text == reply.text else -1e9).raw if reply.candidates else ""
        text, tokens = reply.text, reply.completion_tokens
    else:
        settings = gen.model_copy(update={"stop": [*gen.stop, *performer.post.stop_strings]})
        completion = performer.backend.complete(variant_messages(performer, variant, case["history"], case["message"]),
                                                settings, n=1)[0]
        raw, text, tokens = completion.text, performer.post(completion.text).text or performer.fallback, completion.tokens
    seconds = time.perf_counter() - start
    logprob, n = performer.backend.score_reply(variant_messages(performer, variant, case["history"], case["message"]),
                                               case["reply"])
    return {"id": case["id"], "message": case["message"], "real": case["reply"], "reply": text, "raw": raw,
            "tokens": tokens, "latency_s": seconds, "nll": -logprob, "nll_tokens": n,
            "loop": float(_loops(raw) != raw.strip()), "impersonation_raw": float(_impersonates(performer, raw)),
            "impersonation": float(_impersonates(performer, text))}


def _impersonates(performer: Performer, text: str) -> bool:
    return bool(performer.post._other_line.search(text) or _LINE_START_NAME.search(text))


def probe_breaks(performer: Performer, variant: Variant, gen: GenerationSettings, settings: EvalSettings) -> dict[str, float]:
    """Share of probe replies that break character (say they are an AI, speak as someone else): raw and cleaned."""
    partners = performer.card["data"].get("extensions", {}).get("rolecast", {}).get("stats", {}).get("partners", [])
    messages = probes(partners[0]["name"] if partners else "your friend")[: settings.probe_limit]
    raw_breaks = clean_breaks = 0
    for i, message in enumerate(messages):
        row = run_case(performer, variant, {"id": f"probe{i}", "history": [], "message": message, "reply": "."},
                       gen.updated(seed=settings.seed + 7 * i))
        raw_breaks += bool(_PERSONA.search(row["raw"]) or row["impersonation_raw"])
        clean_breaks += bool(_PERSONA.search(row["reply"]) or row["impersonation"])
    return {"persona_break_raw": raw_breaks / len(messages), "persona_break": clean_breaks / len(messages),
            "probes": len(messages)}


# ----------------------------------------------------------------------------- metrics


def rouge_l(reference: str, candidate: str) -> float:
    """ROUGE-L F1 over lowercased word tokens (the rouge-score package's definition, without stemming)."""
    a, b = re.findall(r"\w+", reference.lower()), re.findall(r"\w+", candidate.lower())
    if not a or not b:
        return 0.0
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    lcs = prev[-1]
    if lcs == 0:
        return 0.0
    p, r = lcs / len(b), lcs / len(a)
    return 2 * p * r / (p + r)


def distinct(texts: list[str], n: int) -> float:
    grams = [tuple(w[i:i + n]) for t in texts for w in [re.findall(r"\w+", t.lower())] for i in range(len(w) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


def bootstrap(values: np.ndarray, stat, rounds: int, seed: int) -> tuple[float, float]:
    if len(values) < 2 or rounds <= 0:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(values), size=(rounds, len(values)))
    stats = np.array([stat(values[idx]) for idx in picks])
    return float(np.percentile(stats, 2.5)), float(np.percentile(stats, 97.5))


def summarise(rows: list[dict], style, model, breaks: dict | None, rounds: int, seed: int) -> dict[str, Any]:
    replies, reals = [r["reply"] for r in rows], [r["real"] for r in rows]
    for row, s in zip(rows, style.score_many([r["message"] for r in rows], replies)):
        row["style"] = float(s)
    vectors = model.encode(replies + reals)
    sims = np.sum(vectors[: len(rows)] * vectors[len(rows):], axis=1)
    for row, sim in zip(rows, sims):
        row["similarity"] = float(sim)
        row["rouge_l"] = rouge_l(row["real"], row["reply"])
        row["words"] = len(row["reply"].split())
    out: dict[str, Any] = {}
    for key in PER_EXAMPLE:
        values = np.array([r[key] for r in rows], dtype=float)
        out[key] = {"mean": float(values.mean()), "ci": bootstrap(values, np.mean, rounds, seed)}
    nll = np.array([[r["nll"], r["nll_tokens"]] for r in rows], dtype=float)
    ppl = lambda a: math.exp(a[:, 0].sum() / a[:, 1].sum())  # noqa: E731 - token-weighted, as perplexity is defined
    out["perplexity"] = {"mean": ppl(nll), "ci": bootstrap(nll, ppl, rounds, seed)}
    out["distinct_1"], out["distinct_2"] = distinct(replies, 1), distinct(replies, 2)
    seconds = sum(r["latency_s"] for r in rows)
    out["tokens_per_s"] = sum(r["tokens"] for r in rows) / seconds if seconds else 0.0
    if breaks:
        out.update(breaks)
    return out


# ----------------------------------------------------------------------------- report


def write_report(pack: Pack, metrics: dict, samples: dict[str, list[dict]], cases: list[dict]) -> None:
    from .evaluate_report import charts, markdown

    with atomic_dir(pack.part("eval")) as tmp:
        write_json(tmp / "metrics.json", metrics)
        with open(tmp / "samples.jsonl", "w", encoding="utf-8") as fh:
            for name, rows in samples.items():
                for row in rows:
                    fh.write(json.dumps({"variant": name, **row}, ensure_ascii=False) + "\n")
        charts(metrics, tmp)
        (tmp / "report.md").write_text(markdown(pack, metrics, samples), encoding="utf-8")
    best = recommend(metrics)
    pack.record("eval", recommended=best, examples=metrics["examples"], variants=list(metrics["variants"]))


def recommend(metrics: dict) -> str | None:
    """The variant to serve: best style among those that never impersonate after cleaning, then faster."""
    variants = metrics["variants"]
    ok = {k: v for k, v in variants.items() if v["impersonation"]["mean"] == 0} or variants
    if not ok:
        return None
    return max(ok, key=lambda k: (round(ok[k]["style"]["mean"], 3), -ok[k]["latency_s"]["mean"]))
