"""rolecast eval: the metrics, bootstrap intervals, variants and the report, on the fake backend and the real model."""

import json

import numpy as np
import pytest

from conftest import FakeBackend
from rolecast.backends import register
from rolecast.backends.base import Completion
from rolecast.evaluation.evaluate import distinct, evaluate, load_cases, recommend, recommendation, rouge_l
from rolecast.pack import Pack
from rolecast.settings import BackendSettings, EvalSettings, GenerationSettings, PerformerSettings

REPLIES = FakeBackend()


class SharedFake(FakeBackend):
    """Every backend the evaluation creates answers from one queue."""

    def __new__(cls, *args, **kwargs):
        return REPLIES


register("evalfake", SharedFake)


def test_rouge_l():
    assert rouge_l("the cat sat on the mat", "the cat sat on the mat") == 1.0
    assert rouge_l("the cat sat", "dogs bark") == 0.0
    assert rouge_l("a b c d", "a c") == pytest.approx(2 * (1.0 * 0.5) / 1.5)


def test_distinct_and_bootstrap():
    assert distinct(["a a a", "a b"], 1) == 2 / 5
    assert distinct(["a b a b"], 2) == 2 / 3
    from rolecast.stats import bootstrap_ci

    low, high = bootstrap_ci(np.array([1.0, 2.0, 3.0, 4.0]), rounds=500, seed=0)
    assert 1.0 <= low < 2.5 < high <= 4.0


def test_test_cases_take_the_last_line_said_to_the_character(sample_pack):
    cases = load_cases(Pack.open(sample_pack), 1000, 1)
    assert cases and all(c["message"] and c["reply"] for c in cases)
    assert all(":" not in c["message"][:15] or not c["message"].split(":")[0].isupper() for c in cases)
    assert load_cases(Pack.open(sample_pack), 5, 1) == cases[:5]


def test_evaluate_writes_the_report(sample_pack):
    pack = Pack.open(sample_pack)
    REPLIES.replies.clear()
    REPLIES.queue(*["Juno: no way.\nSit down before you fall down."] * 1000)
    settings = EvalSettings(variants=["base", "prompt", "retrieval", "rerank"], limit=12, bootstrap=50, probe_limit=3)
    metrics = evaluate(pack, settings, BackendSettings(backend="evalfake"), GenerationSettings())
    assert list(metrics["variants"]) == ["base", "prompt", "retrieval", "rerank"]
    base = metrics["variants"]["base"]
    assert base["impersonation_raw"]["mean"] == 1.0, "every raw reply opens with another speaker's line"
    for name, m in metrics["variants"].items():
        assert m["impersonation"]["mean"] == 0.0, name
        assert 0 <= m["style"]["mean"] <= 1 and m["perplexity"]["mean"] > 1
        assert m["probes"] == 3
    assert metrics["variants"]["retrieval"]["perplexity"]["mean"] <= metrics["variants"]["base"]["perplexity"]["mean"], \
        "more of the character's words in the prompt: the fake scorer finds the real reply likelier"
    folder = sample_pack / "eval"
    for name in ("report.md", "metrics.json", "samples.jsonl", "perplexity.png"):
        assert (folder / name).exists(), name
    for key in ("coherence", "held_apart"):  # a chart only for a judge that passed its check
        assert (folder / f"{key}.png").exists() == metrics["judges"][key]["trusted"], key
    report = (folder / "report.md").read_text()
    assert "| **rerank** |" in report and "## Ten exchanges" in report
    for section in ("## The judges and their checks", "## Pairwise win rates", "## Replayed scenes",
                    "## Knowledge probes"):
        assert section in report, section
    assert json.loads((folder / "metrics.json").read_text())["examples"] == 12
    assert pack.info["parts"]["eval"]["recommended"] == recommend(metrics)
    gains = {(g["variant"], g["over"]): g for g in metrics["rerank_gain"]}
    assert set(gains) == {("rerank", "retrieval")}, "the rerank measured beside the same variant with one candidate"
    assert metrics["variants"]["rerank"]["coherence_blind"]["mean"] > 0, "the blind judge scored the replies"
    g = gains["rerank", "retrieval"]
    assert g["gain"] == pytest.approx(metrics["variants"]["rerank"]["coherence"]["mean"]
                                      - metrics["variants"]["retrieval"]["coherence"]["mean"], abs=1e-4)
    assert ("## What the rerank's coherence gain is made of" in report) == metrics["judges"]["coherence"]["trusted"]
    for name, m in metrics["variants"].items():  # one constant reply everywhere: every judge must see it
        assert m["scenes"]["self_repetition"] > 0.9, name
        assert m["knowledge"]["probes"] > 0
    info = metrics["judges"]
    assert {"versus_others", "halves", "trusted"} <= set(info["discriminator"])
    for name, m in metrics["variants"].items():  # a constant reply must be caught
        assert m["discriminator"]["auc"] >= 0.95, name
    assert set(metrics["pairwise"]) == {"coherence", "held_apart", "style"}
    for key, pairs in metrics["pairwise"].items():  # each variant against the character's own lines, as a yardstick
        assert {f"{n} vs real replies" for n in metrics["variants"]} <= set(pairs), key
    assert "real replies" not in metrics["recommendation"]["rank"]


def test_an_untrusted_coherence_judge_is_hidden_and_not_used(sample_pack, monkeypatch):
    from rolecast.evaluation.judges import Judges
    from rolecast.evaluation.report import markdown

    real_fit = Judges.fit

    def weak(*args, **kwargs):
        judges = real_fit(*args, **kwargs)
        judges.coherence_validation = {**judges.coherence_validation, "auc": 0.55}
        return judges

    monkeypatch.setattr(Judges, "fit", weak)
    pack = Pack.open(sample_pack)
    settings = EvalSettings(variants=["base", "prompt"], limit=4, bootstrap=20, probes=False, scenes=0,
                            knowledge=False)
    metrics = evaluate(pack, settings, BackendSettings(backend="evalfake"), GenerationSettings())
    if not metrics["judges"]["held_apart"]["trusted"]:
        pytest.skip("the sample's held-apart judge failed too: see the no-trusted-judge test")
    assert metrics["recommendation"]["judges"] == ["held_apart"]
    assert "coherence failed its check and was not used" in metrics["recommendation"]["why"]
    report = markdown(pack, metrics, {})
    assert "(untrusted)" in report and "**not trusted**" in report and "**coherence**" not in report


def test_with_no_trusted_judge_nothing_is_recommended_and_no_judge_figure_appears(sample_pack, monkeypatch):
    """A show whose judges both fail: the report says why and what would fix it, shows no coherence or held-apart
    figure in the table, the pairwise wins, the scenes or a chart, and records no recommended variant."""
    import re

    from rolecast.evaluation.judges import Judges

    real_fit = Judges.fit

    def weak(*args, **kwargs):
        judges = real_fit(*args, **kwargs)
        judges.coherence_validation = {**judges.coherence_validation, "auc": 0.55}
        judges.style_validation = {**judges.style_validation, "auc": 0.52}
        return judges

    monkeypatch.setattr(Judges, "fit", weak)
    pack = Pack.open(sample_pack)
    REPLIES.replies.clear()
    settings = EvalSettings(variants=["base", "prompt"], limit=6, bootstrap=20, probes=False, scenes=2,
                            knowledge=False, seed=5)
    metrics = evaluate(pack, settings, BackendSettings(backend="evalfake"), GenerationSettings())
    rec = metrics["recommendation"]
    assert rec["variant"] is None and recommend(metrics) is None
    assert "no judge passed its check" in rec["why"] and "test episodes" in rec["why"]
    report = (sample_pack / "eval" / "report.md").read_text()
    assert "**No recommendation**" in report and "Serve `" not in report
    assert "**coherence**" not in report and "**held-apart style**" not in report, "no pairwise table of them"
    scenes = report.split("## Replayed scenes")[1].split("##")[0]
    assert not re.search(r"\| [+-]\d\.\d{3} \|", scenes), "no drift figure of an untrusted judge"
    assert not (sample_pack / "eval" / "coherence.png").exists() and not (sample_pack / "eval" / "held_apart.png").exists()
    assert pack.info["parts"]["eval"]["recommended"] is None


def test_the_recommendation_picks_the_better_variant_and_never_an_impersonating_one():
    from rolecast.evaluation.judges import pairwise

    rng = np.random.default_rng(0)
    base = rng.normal(0.5, 0.1, 60)
    scores = {"worse": base - 0.2, "better": base + 0.2, "impersonating": base + 0.4}
    variant = lambda imp: {"impersonation": {"mean": imp}, "latency_s": {"mean": 1.0}}  # noqa: E731
    metrics = {"variants": {"worse": variant(0.0), "better": variant(0.0), "impersonating": variant(0.1)},
               "judges": {"coherence": {"trusted": True, "auc": 0.8, "bar": 0.7},
                          "held_apart": {"trusted": True, "auc": 0.7, "bar": 0.6}},
               "pairwise": {"coherence": pairwise(scores, 50), "held_apart": pairwise(scores, 50)}}
    rec = recommendation(metrics)
    assert rec["variant"] == "better" and "another speaker's line" in rec["why"]
    metrics["variants"]["impersonating"] = variant(0.0)
    assert recommendation(metrics)["variant"] == "impersonating", "the same variant, cleaned, wins on the judges"


def test_a_failed_variant_keeps_the_finished_ones_and_a_rerun_resumes(sample_pack, monkeypatch):
    import rolecast.evaluation.evaluate as ev

    pack = Pack.open(sample_pack)
    settings = EvalSettings(variants=["base", "prompt"], limit=3, bootstrap=10, probes=False, scenes=0,
                            knowledge=False, seed=99)
    real_run = ev.run_family
    ran = []

    def failing(performers, *args):
        ran.append(list(performers))
        if "prompt" in performers:
            raise KeyboardInterrupt
        return real_run(performers, *args)

    monkeypatch.setattr(ev, "run_family", failing)
    with pytest.raises(KeyboardInterrupt):
        evaluate(pack, settings, BackendSettings(backend="evalfake"), GenerationSettings())
    ran.clear()
    monkeypatch.setattr(ev, "run_family", lambda performers, *args: (ran.append(list(performers)),
                                                                     real_run(performers, *args))[1])
    metrics = evaluate(pack, settings, BackendSettings(backend="evalfake"), GenerationSettings())
    assert ran == [["prompt"]], "base was kept from the interrupted run"
    assert list(metrics["variants"]) == ["base", "prompt"]
    ran.clear()
    evaluate(pack, settings.updated(resume=False), BackendSettings(backend="evalfake"), GenerationSettings())
    assert len(ran) == 2, "--no-resume runs every variant again"


class SeededFake(FakeBackend):
    """Replies that depend only on the prompt, the seed and the candidate, as a real sampler's do."""

    scored = 0

    def complete(self, messages, settings, n=1, cancel=None):
        import hashlib

        words = ["Sit", "down", "lupus", "never", "fine", "Wilson", "idiot", "pain", "why", "no"]
        out = []
        for i in range(n):
            digest = hashlib.sha256(f"{messages}{settings.seed}{i}".encode()).digest()
            text = " ".join(words[b % 10] for b in digest[:6]) + "."
            out.append(Completion(text, 6))
        return out

    def score_reply(self, messages, reply):
        SeededFake.scored += 1
        return super().score_reply(messages, reply)


register("seededfake", SeededFake)


def test_variants_of_one_prompt_family_answer_together_as_they_would_alone(sample_pack, monkeypatch):
    """retrieval and rerank share every prompt: run together, each exchange's real reply is scored once, and
    every reply, figure and seed is what the variant gives run alone."""
    import rolecast.evaluation.evaluate as ev

    assert ev.prompt_families(["base", "prompt", "retrieval", "rerank", "lora", "lora+rerank", "lora+card"]) == [
        ["base"], ["prompt"], ["retrieval", "rerank"], ["lora", "lora+rerank"], ["lora+card"]]
    pack = Pack.open(sample_pack)
    settings = EvalSettings(limit=6, bootstrap=0, probe_limit=3, scenes=1, resume=False, seed=5)
    real, seen = ev.run_family, {}
    monkeypatch.setattr(ev, "run_family", lambda performers, *a: seen.update(out := real(performers, *a)) or out)
    runs = {}
    for variants in (["retrieval", "rerank"], ["retrieval"], ["rerank"]):
        SeededFake.scored = 0
        seen.clear()
        evaluate(pack, settings.updated(variants=variants), BackendSettings(backend="seededfake"), GenerationSettings())
        runs[tuple(variants)] = dict(seen)
        if len(variants) == 2:
            assert SeededFake.scored == len(seen["rerank"]["rows"]), "one likelihood per exchange, not per variant"

    def strip(rows):
        return [{k: v for k, v in row.items() if k != "latency_s"} for row in rows]

    together = runs[("retrieval", "rerank")]
    for name in ("retrieval", "rerank"):
        for key in ("rows", "probes", "scenes", "knowledge"):
            assert strip(together[name][key]) == strip(runs[(name,)][name][key]), (name, key)


def test_unknown_variant(sample_pack):
    with pytest.raises(Exception, match="unknown variant"):
        evaluate(Pack.open(sample_pack), EvalSettings(variants=["best"]), BackendSettings(backend="evalfake"),
                 GenerationSettings())


def test_every_variant_prompt_fits_the_context_even_for_a_huge_message(sample_pack):
    """The probes include a 3,000-word message: the bare base variant must be fitted like the Performer's prompt."""
    from rolecast.chat.performer import VARIANTS, Performer, variant_settings

    backend = FakeBackend(BackendSettings(backend="fake", n_ctx=512))
    pack = Pack.open(sample_pack)
    history = [{"role": "user", "content": "word " * 300}, {"role": "assistant", "content": "Fine."}]
    for name in ("base", "prompt", "retrieval"):
        variant = VARIANTS[name]
        performer = Performer(pack, backend, perf=variant_settings(variant, PerformerSettings()), card=variant.card)
        messages = performer.prompt(history, "lupus " * 3000).messages
        assert backend.count_tokens(messages) <= 512 - performer.gen.max_tokens, f"{name} overflows the context"
        assert messages[-1]["content"].startswith("lupus lupus"), f"{name} keeps the start of the message"
    bare = Performer(pack, backend, card=False)
    assert bare.prompt([], "Hello.").messages == [{"role": "user", "content": "Hello."}], "no system turn, no examples"


def test_blind_votes_join_the_report(sample_pack, tmp_path):
    from rolecast.serve.store import Store

    store = Store(tmp_path / "votes.db")
    conv = store.create_conversation("maggie", "web")["id"]
    for choice in ("a", "a", "b", "tie"):
        vote = store.add_vote(conv, "maggie", "Rough night?", ("rerank", "One."), ("prompt", "Two."))
        store.decide_vote(vote, choice, "One.")
    store.close()
    pack = Pack.open(sample_pack)
    settings = EvalSettings(variants=["base"], limit=3, bootstrap=20, probes=False, scenes=0, knowledge=False,
                            votes=str(tmp_path / "votes.db"))
    metrics = evaluate(pack, settings, BackendSettings(backend="evalfake"), GenerationSettings())
    pair = metrics["votes"]["pairs"]["prompt vs rerank"]
    assert pair["n"] == 4 and pair["win"] == (0 + 0 + 1 + 0.5) / 4
    assert "## Blind votes (web chat)" in (sample_pack / "eval" / "report.md").read_text()
    with pytest.raises(Exception, match="no vote database"):
        evaluate(pack, settings.updated(votes=str(tmp_path / "none.db")), BackendSettings(backend="evalfake"),
                 GenerationSettings())


@pytest.mark.slow
def test_real_model_reranks_the_longest_probe_of_the_sample(sample_pack):
    """The sample pack's eval died with 'llama_decode returned 1': four candidates of the 3,000-word probe."""
    from rolecast.chat.performer import Performer
    from rolecast.evaluation.probes import long_message
    from rolecast.settings import PerformerSettings

    performer = Performer.load(sample_pack, BackendSettings(), perf=PerformerSettings(candidates=4))
    try:
        reply = performer.reply([], long_message(), GenerationSettings(seed=3))
        assert reply.text.strip() and 1 <= len(reply.candidates) <= 4
    finally:
        performer.backend.close()


def test_a_resumed_run_is_keyed_on_the_served_settings_and_the_reply_code(sample_pack, monkeypatch):
    import rolecast.evaluation.evaluate as ev
    from rolecast.settings import PerformerSettings

    pack = Pack.open(sample_pack)
    args = (pack, EvalSettings(), BackendSettings(backend="evalfake"), GenerationSettings())
    plain = ev.RunCache(*args, PerformerSettings()).folder
    assert ev.RunCache(*args, PerformerSettings()).folder == plain
    assert ev.RunCache(*args, PerformerSettings(post_history="after_history")).folder != plain
    monkeypatch.setattr(ev, "reply_code", lambda: "0.2.0:another-loop-rule")
    assert ev.RunCache(*args, PerformerSettings()).folder != plain, "an upgrade of the reply code runs again"


def test_the_eval_plays_the_performer_settings_the_user_serves_with(sample_pack):
    from rolecast.settings import PerformerSettings

    REPLIES.replies.clear()
    REPLIES.calls.clear()
    settings = EvalSettings(variants=["prompt"], limit=2, bootstrap=0, probes=False, scenes=0, knowledge=False, seed=21)
    evaluate(Pack.open(sample_pack), settings, BackendSettings(backend="evalfake"), GenerationSettings(),
             PerformerSettings(post_history="after_history"))
    sent = [c["messages"] for c in REPLIES.calls if c["method"] == "complete"]
    assert sent and all(m[-1]["role"] == "system" for m in sent), "the post-history turn goes where the user put it"


def test_resumed_replies_are_judged_with_todays_rules(sample_pack):
    """A stored run keeps its replies; its loop and impersonation figures are derived again from them."""
    import rolecast.evaluation.evaluate as ev
    from rolecast.settings import PerformerSettings

    pack = Pack.open(sample_pack)
    REPLIES.replies.clear()
    settings = EvalSettings(variants=["prompt"], limit=3, bootstrap=0, probes=True, probe_limit=2, scenes=0,
                            knowledge=False, seed=23)
    evaluate(pack, settings, BackendSettings(backend="evalfake"), GenerationSettings())
    cache = ev.RunCache(pack, settings, BackendSettings(backend="evalfake"), GenerationSettings(), PerformerSettings())
    run = cache.load("prompt")
    for row in run["rows"]:  # what an older loop rule wrote
        row.update(loop=1.0, impersonation_raw=1.0, impersonation=1.0)
    run["breaks"] = {"persona_break_raw": 1.0, "persona_break": 1.0, "probes": 2}
    cache.save("prompt", run)
    metrics = evaluate(pack, settings, BackendSettings(backend="evalfake"), GenerationSettings())
    m = metrics["variants"]["prompt"]
    assert m["loop"]["mean"] == 0.0 and m["impersonation"]["mean"] == 0.0 and m["persona_break"] == 0.0
