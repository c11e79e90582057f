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

import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import random
import re
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..backends import Backend, create
from ..chat.performer import (
    VARIANTS,
    Performer,
    Variant,
    pack_postprocessor,
    repetition,
    variant_settings,
)
from ..chat.postprocess import breaks_persona, loops
from ..chat.served import pack_adapter, pack_backend
from ..errors import PackError, SettingsError
from ..files import atomic_dir, write_json
from ..ingest.script import NAME_PREFIX
from ..pack import Pack, slug
from ..pack.examples import read_examples
from ..progress import bar
from ..settings import BackendSettings, EvalSettings, GenerationSettings, PerformerSettings
from ..stats import bootstrap_ci
from .judges import (
    COPY_MIN_WORDS,
    TRUST,
    CopyFinder,
    Judges,
    character_corpus,
    discriminator,
    mean_wins,
    messages_context,
    pairwise,
)
from .probes import probes
from .replay import answered, held_out_scenes, knowledge, replay

log = logging.getLogger(__name__)


PER_EXAMPLE = ("coherence", "coherence_blind", "off_topic", "held_apart", "style", "copy", "rouge_l", "similarity", "words", "latency_s",
               "loop", "impersonation_raw", "impersonation")


def evaluate(pack: Pack, settings: EvalSettings, backend: BackendSettings, gen: GenerationSettings,
             perf: PerformerSettings | None = None) -> dict[str, Any]:
    """Run every variant (reusing finished ones), judge them, write the report into ``pack/eval``, return the metrics.

    ``perf`` is what the user serves with (their ``[performer]`` config and ``ROLECAST_*`` variables, as the CLI
    resolves them); each variant changes only what defines it (``variant_settings``)."""
    perf = perf or PerformerSettings()
    unknown = [v for v in settings.variants if v not in VARIANTS]
    if unknown:
        raise SettingsError(f"unknown variant(s) {', '.join(unknown)}; valid: {', '.join(VARIANTS)}")
    if settings.votes and not Path(settings.votes).is_file():  # before minutes of generation, not after
        raise SettingsError(f"no vote database at {settings.votes}",
                            "give the --db file of a 'rolecast serve --blind' run", param="votes")
    cases = load_cases(pack, settings.limit, settings.seed)
    from ..chat.style import StyleScorer
    from ..models.embeddings import embedder

    style = StyleScorer.load(pack)  # the reranker's own classifier: shown, never trusted alone
    scenes = held_out_scenes(pack, settings.scenes, settings.seed) if settings.scenes else []
    asked = knowledge(pack) if settings.knowledge else []
    cache = RunCache(pack, settings, backend, gen, perf)
    backends = _Backends(pack, backend, perf)
    runs: dict[str, dict] = {}
    try:
        pending = []
        for name in settings.variants:
            if VARIANTS[name].adapter and not backends.has_adapter():
                log.warning("skipped variant %s: the pack has no adapter for the %s backend (rolecast train, then "
                            "rolecast export)", name, backend.backend)
                continue
            run = cache.load(name) if settings.resume else None
            if run is None:
                pending.append(name)
            else:
                log.info("eval %s: reusing the finished run in %s", name, cache.folder)
                runs[name] = run
        for family in prompt_families(pending):
            performers = {name: backends.performer(VARIANTS[name]) for name in family}
            for name, run in run_family(performers, cases, scenes, asked, gen, settings).items():
                cache.save(name, run)
                runs[name] = run
    finally:
        backends.close()
    runs = {name: runs[name] for name in settings.variants if name in runs}
    log.info("fitting the held-apart judges")
    started = time.perf_counter()
    judges = Judges.fit(pack, settings.seed, embedder(), cache=cache.folder.parent)
    fitted = time.perf_counter()
    recompute(pack, runs)
    metrics = judge_runs(pack, runs, cases, judges, style, settings)
    judges.encoder.save()
    metrics["seconds"] = {"variants": {n: r.get("seconds") for n, r in runs.items()},
                          "judges_fit": round(fitted - started, 1), "judging": round(time.perf_counter() - fitted, 1)}
    metrics["settings"], metrics["generation"] = settings.model_dump(), gen.model_dump()
    if settings.votes:
        from .votes import vote_summary

        metrics["votes"] = vote_summary(settings.votes, pack.name)
    write_report(pack, metrics, {name: run["rows"] for name, run in runs.items()}, cases)
    return metrics


def prompt_families(names: list[str]) -> list[list[str]]:
    """The variants grouped by what their prompts and model depend on (card, examples, adapter, system turn): in
    one family they differ only in how many candidates they sample (lora and lora+rerank; retrieval and rerank)."""
    families: dict[tuple, list[str]] = {}
    for name in names:
        v = VARIANTS[name]
        families.setdefault((v.card, v.examples, v.adapter, v.system_turn), []).append(name)
    return list(families.values())


def run_family(performers: dict[str, Performer], cases: list[dict], scenes: list[dict], asked: list[dict],
               gen: GenerationSettings, settings: EvalSettings) -> dict[str, dict[str, Any]]:
    """Every reply each variant of one prompt family gives: test exchanges, probes, replayed scenes and knowledge
    probes, as ``{variant: run}``.

    The family's variants answer each exchange one after the other, so the backend evaluates the exchange's
    prompt once (its KV cache holds the prompt for the next variant: House's rerank after retrieval evaluates one
    token, not 1,000), and the real reply's likelihood, the same under the same prompt and model, is computed
    once. A reply's ``latency_s`` is its own: the later variants' leave out the prompt. Scenes are replayed per
    variant: each turn's history holds that variant's own replies."""
    names = list(performers)
    seconds = dict.fromkeys(names, 0.0)

    def answer(name: str, case: dict, seed: int, score: bool = False) -> dict[str, Any]:
        start = time.perf_counter()
        row = run_case(performers[name], case, gen.updated(seed=seed), score=score)
        seconds[name] += time.perf_counter() - start
        return row

    def everyone(case: dict, seed: int) -> dict[str, dict[str, Any]]:  # one prompt, every variant in turn
        return {name: answer(name, case, seed) for name in names}

    log.info("eval %s: %d exchanges, %d scenes, %d knowledge probes", ", ".join(names), len(cases), len(scenes),
             len(asked))
    rows: dict[str, list[dict]] = {name: [] for name in names}
    for i, case in enumerate(bar(cases, f"eval {', '.join(names)}")):
        first = answer(names[0], case, settings.seed + i, score=True)
        rows[names[0]].append(first)
        for name in names[1:]:
            rows[name].append(answer(name, case, settings.seed + i) | {"nll": first["nll"],
                                                                        "nll_tokens": first["nll_tokens"]})
    probed = {name: [] for name in names}
    for i, message in enumerate(probe_messages(performers[names[0]], settings)):
        case = {"id": f"probe{i}", "history": [], "message": message, "reply": "."}
        for name, row in everyone(case, settings.seed + 7 * i).items():
            probed[name].append({"message": message, "raw": row["raw"], "reply": row["reply"]})
    known = {name: [] for name in names}
    for i, probe in enumerate(asked):
        case = {"id": f"knowledge{i}", "history": [], "message": probe["message"], "reply": "."}
        for name, row in everyone(case, settings.seed + 13 * i).items():
            known[name].append({**probe, "reply": row["reply"], "answered": answered(row["reply"], probe["expect"])})
    played = {name: [] for name in names}
    for name in names:
        for k, scene in enumerate(bar(scenes, f"eval {name}: scenes")):
            def reply(line_id, history, message, real, turn, k=k, name=name):
                case = {"id": line_id, "history": history, "message": message, "reply": real}
                return answer(name, case, settings.seed + 101 * k + turn)
            played[name] += replay(scene, performers[name].pack.character, reply)
    return {name: {"rows": rows[name], "probes": probed[name], "scenes": played[name], "knowledge": known[name],
                   "seconds": round(seconds[name], 1)} for name in names}


class RunCache:
    """Finished variants of one evaluation setup, so that a failure or Ctrl-C keeps them and a re-run resumes.

    Keyed by everything a variant's replies depend on: the settings (but the report-only
    ones), the performer settings served with, the pack's examples, index, style classifier,
    adapter and card, rolecast's version and the source of the code that makes a reply (an
    upgrade that changes the loop rule or the rerank runs the variants again).
    """

    def __init__(self, pack: Pack, settings: EvalSettings, backend: BackendSettings, gen: GenerationSettings,
                 perf: PerformerSettings):
        parts = {p: pack.info.get("parts", {}).get(p, {}).get("checksum") for p in
                 ("examples", "index", "style", "adapter", "adapter_gguf", "card")}
        fixed = settings.model_dump(exclude={"variants", "bootstrap", "votes", "resume"})
        blob = json.dumps([fixed, backend.model_dump(), gen.model_dump(), perf.model_dump(), parts, CACHE_FORMAT,
                           reply_code()], sort_keys=True, default=str)
        self.folder = pack.path / ".eval-runs" / hashlib.sha256(blob.encode()).hexdigest()[:16]

    def load(self, name: str) -> dict | None:
        path = self.folder / f"{slug(name)}.json"
        try:
            return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None
        except ValueError:  # a damaged file is redone, not trusted
            return None

    def save(self, name: str, run: dict) -> None:
        write_json(self.folder / f"{slug(name)}.json", run)


CACHE_FORMAT = "rolecast-eval-run/2"
#: The modules whose code decides a reply's text.
REPLY_CODE = ("chat.performer", "chat.postprocess", "chat.prompt", "chat.served", "chat.retrieval", "chat.style",
              "pack.system_turn", "models.templates", "backends.base", "backends.llamacpp", "backends.hf",
              "backends.openai")


def reply_code() -> str:
    """rolecast's version and a digest of the source of every module that makes a reply."""
    import importlib.metadata
    import importlib.util

    digest = hashlib.sha256()
    for name in REPLY_CODE:
        spec = importlib.util.find_spec(f"rolecast.{name}")
        if spec is None or spec.origin is None:  # a module that moved: a cache keyed without it would go stale
            raise ImportError(f"rolecast.{name} is gone: update evaluate.REPLY_CODE")
        digest.update(Path(spec.origin).read_bytes())
    try:
        version = importlib.metadata.version("rolecast")
    except importlib.metadata.PackageNotFoundError:
        version = "source"
    return f"{version}:{digest.hexdigest()[:16]}"


def recompute(pack: Pack, runs: dict[str, dict]) -> None:
    """Every per-row figure that the current code derives from a stored reply, derived again: a resumed run keeps
    its replies, never the loop, impersonation or persona-break figures of the code that made them."""
    post = pack_postprocessor(pack)
    for run in runs.values():
        for row in [*run["rows"], *run.get("scenes", [])]:
            row.update(loop=float(loops(row["raw"])), impersonation_raw=float(post.impersonates(row["raw"])),
                       impersonation=float(post.impersonates(row["reply"])))
        probed = run.get("probes")
        if probed:
            run["breaks"] = {"persona_break_raw": _mean([bool(breaks_persona(r["raw"]) or post.impersonates(r["raw"]))
                                                         for r in probed]),
                             "persona_break": _mean([bool(breaks_persona(r["reply"]) or post.impersonates(r["reply"]))
                                                     for r in probed]), "probes": len(probed)}


def load_cases(pack: Pack, limit: int, seed: int) -> list[dict[str, Any]]:
    """Test-split examples whose last context turn is said to the character: history, message, real reply."""
    path = pack.require("examples") / "test.jsonl"
    cases = []
    for ex in read_examples(path):
        msgs = ex["messages"]
        if not msgs or msgs[-1]["role"] != "user":
            continue
        message = NAME_PREFIX.sub("", msgs[-1]["content"].split("\n")[-1])
        cases.append({"id": ex["id"], "history": msgs[:-1], "message": message, "context": msgs,
                      "reply": ex["completion"][0]["content"]})
    if not cases:
        raise PackError(f"the pack {pack.path} has no test examples with a line said to the character",
                        "re-run rolecast prepare with a test split")
    random.Random(seed).shuffle(cases)
    return cases[:limit]


class _Backends:
    """The base model and, when needed, the base with the pack's adapter: each loaded once."""

    def __init__(self, pack: Pack, settings: BackendSettings, perf: PerformerSettings):
        self.pack, self.settings, self.perf = pack, settings, perf
        self.loaded: dict[bool, Backend] = {}
        self.performers: dict[Variant, Performer] = {}

    def has_adapter(self) -> bool:
        return pack_adapter(self.pack, self.settings.updated(no_adapter=False)) is not None

    def backend(self, adapter: bool) -> Backend:
        """The pack's base (the one its adapter was trained on), with the adapter or without."""
        if adapter not in self.loaded:
            served = pack_backend(self.pack, self.settings.updated(no_adapter=False))
            self.loaded[adapter] = create(served.updated(adapter=served.adapter if adapter else None,
                                                         no_adapter=not adapter))
        return self.loaded[adapter]

    def performer(self, variant: Variant) -> Performer:
        perf = variant_settings(variant, self.perf)
        return Performer(self.pack, self.backend(variant.adapter), perf=perf, card=variant.card)

    def close(self) -> None:
        for backend in self.loaded.values():
            backend.close()


def run_case(performer: Performer, case: dict, gen: GenerationSettings,
             score: bool = True) -> dict[str, Any]:
    """A variant's reply to one case; with ``score``, also the log-likelihood of the real reply under its prompt."""
    start = time.perf_counter()
    reply = performer.reply(case["history"], case["message"], gen=gen)
    chosen = [c for c in reply.candidates if c.text == reply.text]
    # A fallback line matches no candidate: every sample was cleaned away, and the raw figures (loops, lines for
    # others) count what the model wrote first. A cancelled or empty reply has no sample at all.
    first = reply.candidates[0].raw if reply.candidates else reply.text
    raw = max(chosen, key=lambda c: c.total).raw if chosen else first
    text, tokens = reply.text, reply.completion_tokens
    seconds = time.perf_counter() - start
    row = {"id": case["id"], "message": case["message"], "context": messages_context(case["history"], case["message"]),
           "real": case["reply"], "reply": text, "raw": raw, "tokens": tokens, "latency_s": seconds,
           "loop": float(loops(raw)), "impersonation_raw": float(performer.post.impersonates(raw)),
           "impersonation": float(performer.post.impersonates(text))}
    if score:
        logprob, n = performer.score_reply(case["history"], case["message"], case["reply"])
        row.update(nll=-logprob, nll_tokens=n)
    return row


def probe_messages(performer: Performer, settings: EvalSettings) -> list[str]:
    """The probe set (``recompute`` counts the persona breaks in its replies), addressed to the character's first
    partner; none when ``settings.probes`` is off."""
    if not settings.probes:
        return []
    partners = performer.card["data"].get("extensions", {}).get("rolecast", {}).get("stats", {}).get("partners", [])
    return probes(partners[0]["name"] if partners else "your friend")[: settings.probe_limit]


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


def summarise(rows: list[dict], encoder, rounds: int, seed: int) -> dict[str, Any]:
    """Means with 95% bootstrap intervals of every per-example figure, perplexity, distinct-n and speed."""
    replies, reals = [r["reply"] for r in rows], [r["real"] for r in rows]
    vectors = encoder.encode(replies + reals)
    sims = np.sum(vectors[: len(rows)] * vectors[len(rows):], axis=1)
    for row, sim in zip(rows, sims):
        row["similarity"] = float(sim)
        row["rouge_l"] = rouge_l(row["real"], row["reply"])
        row["words"] = len(row["reply"].split())
    out: dict[str, Any] = {}
    for key in PER_EXAMPLE:
        values = np.array([r[key] for r in rows], dtype=float)
        out[key] = {"mean": float(values.mean()), "ci": bootstrap_ci(values, rounds=rounds, seed=seed)}
    nll = np.array([[r["nll"], r["nll_tokens"]] for r in rows], dtype=float)
    ppl = lambda a: math.exp(a[:, 0].sum() / a[:, 1].sum())  # noqa: E731 - token-weighted, as perplexity is defined
    out["perplexity"] = {"mean": ppl(nll), "ci": bootstrap_ci(nll, ppl, rounds, seed)}
    out["distinct_1"], out["distinct_2"] = distinct(replies, 1), distinct(replies, 2)
    seconds = sum(r["latency_s"] for r in rows)
    out["tokens_per_s"] = sum(r["tokens"] for r in rows) / seconds if seconds else 0.0
    return out


def judge_runs(pack: Pack, runs: dict[str, dict], cases: list[dict], judges: Judges, style,
               settings: EvalSettings) -> dict[str, Any]:
    """Every judge on every variant's replies and on the real replies; pairwise wins; the recommendation."""
    rounds, seed, encoder = settings.bootstrap, settings.seed, judges.encoder
    ids, messages = [c["id"] for c in cases], [c["message"] for c in cases]
    real = [c["reply"] for c in cases]
    contexts = [messages_context(c["history"], c["message"]) for c in cases]
    copies = CopyFinder(character_corpus(pack))

    def scores(replies: list[str]) -> dict[str, np.ndarray]:
        return {"style": style.score_many(messages, replies), "held_apart": judges.style(ids, replies),
                "coherence": judges.coherence(contexts, replies), "copy": copies.copies(replies),
                "coherence_blind": judges.coherence(contexts, replies, blind=True)}

    truth = scores(real)
    floor = float(np.percentile(truth["coherence"], 10))
    results: dict[str, Any] = {}
    per_judge: dict[str, dict[str, np.ndarray]] = {key: {} for key in PAIRWISE}
    for name, run in runs.items():
        rows = run["rows"]
        found = scores([r["reply"] for r in rows])
        for i, row in enumerate(rows):
            row.update({key: float(found[key][i]) for key in found})
            row["off_topic"] = float(found["coherence"][i] < floor)
        out = summarise(rows, encoder, rounds, seed)
        out["discriminator"] = discriminator(encoder, real, [r["reply"] for r in rows], rounds, seed)
        out.update(run.get("breaks") or {})
        if run.get("scenes"):
            out["scenes"] = scene_summary(run["scenes"], judges)
        if run.get("knowledge"):
            out["knowledge"] = knowledge_summary(run["knowledge"])
        results[name] = out
        for key in PAIRWISE:
            per_judge[key][name] = found[key]
    if runs:
        for key in PAIRWISE:  # last, so each pair reads "variant vs real replies"; the recommendation skips it
            per_judge[key][REAL] = truth[key]
    others = [c["message"] for c in cases]  # another speaker's line in each same context (names dropped)
    info = judge_info(pack, judges, truth, floor, encoder, real, others, rounds, seed)
    metrics = {"pack": pack.character, "examples": len(cases), "variants": results, "judges": info,
               "style_ceiling": float(np.mean(truth["style"])) if cases else 0.0,
               "pairwise": {key: pairwise(per_judge[key], rounds, seed) for key in PAIRWISE}}
    metrics["rerank_gain"] = rerank_gain(results)
    metrics["recommendation"] = recommendation(metrics)
    return metrics


def rerank_gain(results: dict[str, dict]) -> list[dict[str, Any]]:
    """For each reranking variant measured beside the same variant with one candidate: its coherence gain on the
    judge, and on the judge blind to the message's embedding (which the reranker works on): the share of the
    gain that survives without that feature."""
    out = []
    for name, variant in VARIANTS.items():
        plain = next((n for n, v in VARIANTS.items() if v == dataclasses.replace(variant, candidates=1)), None)
        if variant.candidates == 1 or plain not in results or name not in results:
            continue
        gain = results[name]["coherence"]["mean"] - results[plain]["coherence"]["mean"]
        blind = results[name]["coherence_blind"]["mean"] - results[plain]["coherence_blind"]["mean"]
        out.append({"variant": name, "over": plain, "gain": round(gain, 4), "gain_blind": round(blind, 4),
                    "survives": round(blind / gain, 3) if gain > 0 else None})
    return out


#: Judges compared pairwise between variants; the first two steer the recommendation.
PAIRWISE = ("coherence", "held_apart", "style")
#: The character's own replies to the same contexts, compared pairwise with each variant as a yardstick.
REAL = "real replies"
#: The held-apart style judge is used for the recommendation from this validation AUC on.
STYLE_TRUST = 0.60


#: The discriminator is trusted when it tells the character's lines from another speaker's in the same contexts at
#: least this well (the held-apart judge's bar: the same task, one classifier per comparison), and cannot tell
#: two halves of the character's own lines apart beyond it.
DISCRIMINATOR_TRUST = 0.60
#: Random splits of the character's lines in two whose discriminator AUCs are averaged (shown: mean, lowest–highest).
HALF_SPLITS = 5


def discriminator_checks(encoder, real: list[str], others: list[str], rounds: int, seed: int) -> dict[str, Any]:
    """Two checks that can fail: the character vs other speakers (must separate), the character vs itself (must not)."""
    half, rng = len(real) // 2, np.random.default_rng(seed)
    splits = []
    for k in range(HALF_SPLITS):  # one split of 50 + 50 lines is noisy: the mean over several
        order = rng.permutation(len(real))
        splits.append(discriminator(encoder, [real[i] for i in order[:half]], [real[i] for i in order[half:2 * half]],
                                    0, seed + k)["auc"])
    versus_others = discriminator(encoder, real, others, rounds, seed)
    halves = {"auc": round(float(np.mean(splits)), 4), "ci": (float(np.min(splits)), float(np.max(splits))),
              "splits": len(splits)}
    trusted = (versus_others["auc"] >= DISCRIMINATOR_TRUST and not halves["auc"] >= DISCRIMINATOR_TRUST)
    return {"versus_others": versus_others, "halves": halves, "trusted": bool(trusted), "bar": DISCRIMINATOR_TRUST}


def judge_info(pack: Pack, judges: Judges, truth: dict, floor: float, encoder, real: list[str], others: list[str],
               rounds: int, seed: int) -> dict[str, Any]:
    """Each judge's validation figures, with the real replies' scores for scale."""
    report = {}
    if pack.has("style"):
        with contextlib.suppress(OSError, ValueError):
            report = json.loads((pack.part("style") / "report.json").read_text(encoding="utf-8"))
    return {
        "held_apart": {**judges.style_validation, "real_mean": _mean(truth["held_apart"]),
                       "trusted": judges.style_validation["auc"] >= STYLE_TRUST, "bar": STYLE_TRUST},
        "coherence": {**judges.coherence_validation, "real_mean": _mean(truth["coherence"]), "off_topic_floor": floor,
                      "trusted": judges.coherence_trusted, "bar": TRUST},
        "coherence_blind": {**judges.blind_validation, "real_mean": _mean(truth["coherence_blind"])},
        "discriminator": discriminator_checks(encoder, real, others, rounds, seed),
        "style": {"auc": report.get("roc_auc"), "method": report.get("method"), "real_mean": _mean(truth["style"])},
        "copy": {"real_rate": _mean(truth["copy"]), "min_words": COPY_MIN_WORDS},
    }


def _mean(values) -> float:
    return round(float(np.mean(values)), 4) if len(values) else 0.0


def scene_summary(rows: list[dict], judges: Judges) -> dict[str, Any]:
    """Replayed scenes: judges' scores by turn and their drift, self-repetition, impersonation per scene."""
    replies = [r["reply"] for r in rows]
    coherence = judges.coherence([r["context"] for r in rows], replies)
    held = judges.style([r["id"] for r in rows], replies)
    turns = np.array([r["turn"] for r in rows])
    by_turn = {key: [round(float(v[turns == t].mean()), 4) for t in range(int(turns.max()) + 1)]
               for key, v in (("coherence", coherence), ("held_apart", held))}
    said: dict[str, list[str]] = {}
    repeats = []
    for r in rows:
        earlier = said.setdefault(r["scene"], [])
        if earlier:
            repeats.append(repetition(r["reply"], earlier))
        earlier.append(r["reply"])
    scenes = sorted(said)
    raw = {s for r in rows if r["impersonation_raw"] for s in [r["scene"]]}
    clean = {s for r in rows if r["impersonation"] for s in [r["scene"]]}
    return {"scenes": len(scenes), "turns": len(rows), "by_turn": by_turn,
            "drift": {key: _slope(turns, v) for key, v in (("coherence", coherence), ("held_apart", held))},
            "self_repetition": round(float(np.mean(repeats)), 4) if repeats else 0.0,
            "impersonation_scenes_raw": len(raw) / len(scenes), "impersonation_scenes": len(clean) / len(scenes)}


def _slope(x: np.ndarray, y: np.ndarray) -> float:
    """Least-squares change of a score per turn (0 when every row is one turn)."""
    return round(float(np.polyfit(x, y, 1)[0]), 4) if len(set(x.tolist())) > 1 else 0.0


def knowledge_summary(rows: list[dict]) -> dict[str, Any]:
    topics = sorted({r["topic"] for r in rows})
    by_topic = {t: float(np.mean([r["answered"] for r in rows if r["topic"] == t])) for t in topics}
    return {"rate": float(np.mean([r["answered"] for r in rows])), "probes": len(rows), "by_topic": by_topic}


# ----------------------------------------------------------------------------- report


def write_report(pack: Pack, metrics: dict, samples: dict[str, list[dict]], cases: list[dict]) -> None:
    from .report import charts, markdown

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


def recommendation(metrics: dict) -> dict[str, Any] | None:
    """The variant to serve and why: among those that never impersonate after cleaning, the best mean pairwise
    win rate on the trusted independent judges (coherence, held-apart style); ties go to the faster one."""
    variants = metrics["variants"]
    if not variants:
        return None
    info = metrics["judges"]
    used = [k for k in ("coherence", "held_apart") if info[k]["trusted"]]
    names = {"coherence": "coherence", "held_apart": "held-apart style"}
    if not used:  # an untrusted judge never decides: nothing is recommended, and the report says what would fix it
        failed = ", ".join(f"{names[k]} {info[k]['auc']:.3f} < {info[k]['bar']:.2f}" for k in names)
        return {"variant": None, "judges": [], "rank": {},
                "why": f"no judge passed its check ({failed}), so no variant is recommended; the coherence judge "
                       "learns from the character's training lines (it passed with thousands on House and Friends: "
                       "give the pack more of the show), the held-apart style judge from the validation and test "
                       "episodes (prepare --split 0.7,0.15,0.15 gives it more)"}
    wins = {k: mean_wins(metrics["pairwise"][k], list(variants)) for k in used}
    ok = [k for k, v in variants.items() if v["impersonation"]["mean"] == 0] or list(variants)
    rank = {k: float(np.mean([wins[j][k] for j in used])) for k in ok}
    best = max(ok, key=lambda k: (round(rank[k], 3), -variants[k]["latency_s"]["mean"]))
    why = (f"mean pairwise win rate {rank[best]:.0%} on " + " and ".join(names[j] for j in used) + " ("
           + ", ".join(f"{names[j]} {wins[j][best]:.0%}" for j in used) + ")")
    if len(used) < 2:
        why += "; " + " and ".join(names[k] for k in names if k not in used) + " failed its check and was not used"
    if len(ok) < len(variants):
        why += "; variants letting another speaker's line through are left out"
    return {"variant": best, "why": why, "judges": used, "rank": rank}


def recommend(metrics: dict) -> str | None:
    """The recommended variant's name (see ``recommendation``)."""
    found = metrics.get("recommendation")
    return found["variant"] if found else None
