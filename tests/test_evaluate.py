"""rolecast eval: the metrics, bootstrap intervals, variants and the report, on the fake backend and the real model."""

import json

import numpy as np
import pytest

from conftest import FakeBackend
from rolecast.backends import register
from rolecast.evaluate import bootstrap, distinct, evaluate, load_cases, recommend, rouge_l
from rolecast.pack import Pack
from rolecast.settings import BackendSettings, EvalSettings, GenerationSettings

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
    low, high = bootstrap(np.array([1.0, 2.0, 3.0, 4.0]), np.mean, 500, 0)
    assert 1.0 <= low < 2.5 < high <= 4.0


def test_test_cases_take_the_last_line_said_to_the_character(sample_pack):
    cases = load_cases(Pack.open(sample_pack), 1000, 1)
    assert cases and all(c["message"] and c["reply"] for c in cases)
    assert all(":" not in c["message"][:15] or not c["message"].split(":")[0].isupper() for c in cases)
    assert load_cases(Pack.open(sample_pack), 5, 1) == cases[:5]


def test_evaluate_writes_the_report(sample_pack):
    pack = Pack.open(sample_pack)
    REPLIES.replies.clear()
    REPLIES.queue(*["Juno: no way.\nSit down before you fall down."] * 200)
    settings = EvalSettings(variants=["base", "prompt", "retrieval", "rerank"], limit=4, bootstrap=50, probe_limit=3)
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
    for name in ("report.md", "metrics.json", "samples.jsonl", "style.png", "perplexity.png"):
        assert (folder / name).exists(), name
    report = (folder / "report.md").read_text()
    assert "| **rerank** |" in report and "## Ten exchanges" in report
    assert json.loads((folder / "metrics.json").read_text())["examples"] == 4
    assert pack.info["parts"]["eval"]["recommended"] == recommend(metrics)


def test_unknown_variant(sample_pack):
    with pytest.raises(Exception, match="unknown variant"):
        evaluate(Pack.open(sample_pack), EvalSettings(variants=["best"]), BackendSettings(backend="evalfake"),
                 GenerationSettings())


def test_every_variant_prompt_fits_the_context_even_for_a_huge_message(sample_pack):
    """The probes include a 3,000-word message: the bare base variant must be fitted like the Performer's prompt."""
    from rolecast.evaluate import VARIANTS, variant_messages
    from rolecast.performer import Performer

    backend = FakeBackend(BackendSettings(backend="fake", n_ctx=512))
    performer = Performer(Pack.open(sample_pack), backend)
    history = [{"role": "user", "content": "word " * 300}, {"role": "assistant", "content": "Fine."}]
    for name in ("base", "prompt", "retrieval"):
        messages = variant_messages(performer, VARIANTS[name], history, "lupus " * 3000)
        assert backend.count_tokens(messages) <= 512 - performer.gen.max_tokens, f"{name} overflows the context"
        assert messages[-1]["content"].startswith("lupus lupus"), f"{name} keeps the start of the message"
    assert variant_messages(performer, VARIANTS["base"], [], "Hello.") == [{"role": "user", "content": "Hello."}]
