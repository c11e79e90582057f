"""The Performer: prompt assembly, candidates, reranking, resampling and the fallback; real-model probes."""

import json

import numpy as np
import pytest

from conftest import FakeBackend
from rolecast.chat.performer import Performer, repetition
from rolecast.errors import MessageError
from rolecast.pack import Pack, new_pack_info
from rolecast.settings import GenerationSettings, PerformerSettings


@pytest.fixture
def pack(tmp_path):
    card = {"spec": "chara_card_v2", "spec_version": "2.0", "data": {
        "name": "Maggie", "description": "Keeps the lighthouse.", "system_prompt": "You are {{char}}.",
        "post_history_instructions": "", "extensions": {"rolecast": {"fallback": "Tide's turning."}}}}
    (tmp_path / "card.json").write_text(json.dumps(card))
    (tmp_path / "pack.json").write_text(json.dumps(new_pack_info("Maggie", "Harbor Lights") | {"speakers": ["Otto", "Priya"]}))
    return Pack.open(tmp_path)


class KeywordStyle:
    """A stand-in style scorer: replies mentioning the sea sound like Maggie."""

    def score_many(self, contexts, replies):
        return np.array([0.9 if "sea" in r else 0.2 for r in replies])


def test_reply_cleans_and_sends_stop_strings(pack):
    backend = FakeBackend().queue("Maggie: Sit down.\nOtto: Why?")
    performer = Performer(pack, backend, index=None, style=None)
    reply = performer.reply([], "Evening.")
    assert reply.text == "Sit down."
    assert reply.candidates[0].rules == ["strip_name", "cut_speaker"]
    sent = backend.calls[0]
    assert sent["messages"][0] == {"role": "system", "content": "You are Maggie.\n\nKeeps the lighthouse."}
    assert sent["messages"][-1] == {"role": "user", "content": "Evening."}
    assert "\nOtto:" in sent["settings"].stop and "\nUser:" in sent["settings"].stop


def test_rerank_picks_best_scored_candidate(pack):
    backend = FakeBackend().queue("I like cake.", "The sea is calm tonight.", "Otto: hi", "I like cake.")
    performer = Performer(pack, backend, perf=PerformerSettings(candidates=4), index=None, style=KeywordStyle())
    history = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "I like cake."}]
    reply = performer.reply(history, "How is the weather?")
    assert reply.text == "The sea is calm tonight."
    assert backend.calls[0]["n"] == 4, "candidates come from one call"
    scored = {c.text: c for c in reply.candidates}
    assert scored["I like cake."].scores["repetition"] == 1.0
    assert scored["The sea is calm tonight."].total > scored["I like cake."].total
    assert "" in scored, "the impersonating candidate is cleaned to nothing and never chosen"


def test_a_candidate_the_loop_rule_repaired_ranks_below_one_it_did_not(pack):
    looped = "The sea, the sea, the sea, the sea is calm."
    backend = FakeBackend().queue(looped, "Calm enough tonight.")
    performer = Performer(pack, backend, perf=PerformerSettings(candidates=2), index=None, style=KeywordStyle())
    reply = performer.reply([], "How is it out there?")
    scored = {c.raw: c for c in reply.candidates}
    assert scored[looped].rules == ["loops"] and scored[looped].scores["looped"] == 1.0
    assert scored[looped].scores["style"] > scored["Calm enough tonight."].scores["style"], "style alone would pick the loop"
    assert reply.text == "Calm enough tonight."


class TopicIndex:
    """A stand-in index whose embedder puts texts about the weather together (unit vectors); it retrieves nothing."""

    def search(self, message, k):
        return []

    class model:
        @staticmethod
        def encode(texts):
            def vector(t):
                weather = 1.0 if "weather" in t else 0.6 if "rain" in t.lower() else 0.4 if "cake" in t else 0.0
                return np.array([weather, (1 - weather**2) ** 0.5, 0.0]) if "sea" not in t else np.array([0.0, 0.0, 1.0])
            return np.array([vector(t) for t in texts])


@pytest.mark.parametrize(("floor", "chosen"), [(0.1, "Rain all night, and more coming."), (0.0, "The sea is calm tonight.")])
def test_style_counts_only_for_candidates_that_answer(pack, floor, chosen):
    backend = FakeBackend().queue("The sea is calm tonight.", "Rain all night, and more coming.", "How is the weather?")
    performer = Performer(pack, backend, perf=PerformerSettings(candidates=3, relevance_floor=floor), index=TopicIndex(),
                          style=KeywordStyle())
    reply = performer.reply([], "How is the weather?")
    assert reply.text == chosen
    echo = next(c for c in reply.candidates if c.text == "How is the weather?")
    assert echo.scores["on_topic"] == 0.0 and echo.total < min(c.total for c in reply.candidates if c is not echo)


def test_below_the_gate_relevance_decides(pack):
    backend = FakeBackend().queue("The sea is calm tonight.", "I like cake.")
    performer = Performer(pack, backend, perf=PerformerSettings(candidates=2, relevance_floor=0.5), index=TopicIndex(),
                          style=KeywordStyle())
    assert performer.reply([], "How is the weather?").text == "I like cake."


def test_empty_candidates_are_resampled_then_fallback(pack):
    backend = FakeBackend().queue("Otto: hi", "(sighs)", "Finally, words.")
    reply = Performer(pack, backend, perf=PerformerSettings(retries=2), index=None, style=None).reply([], "Hi")
    assert reply.text == "Finally, words." and not reply.fallback
    seeds = [call["settings"].seed for call in backend.calls]
    assert len(seeds) == 3 and len(set(seeds)) == 3, f"each retry samples with a new seed: {seeds}"
    backend = FakeBackend().queue("Otto: hi", "User: x", "(nothing)")
    reply = Performer(pack, backend, perf=PerformerSettings(retries=2), index=None, style=None).reply([], "Hi")
    assert (reply.text, reply.fallback) == ("Tide's turning.", True)


def test_stream_yields_clean_pieces_and_a_reply(pack):
    backend = FakeBackend().queue("Maggie: Sit down before you fall down. Otto: Rude.")
    stream = Performer(pack, backend, index=None, style=None).stream([], "Evening.")
    pieces = list(stream)
    assert "".join(pieces) == "Sit down before you fall down."
    assert pieces[0] == "Sit", pieces
    assert stream.reply.text == "Sit down before you fall down."
    assert stream.reply.first_token_seconds is not None


def test_a_stream_closed_before_its_first_piece_does_not_resample(pack):
    backend = FakeBackend().queue("Otto: not mine to say.")
    stream = Performer(pack, backend, index=None, style=None).stream([], "Evening.")
    stream.close()  # the client went away before anything came
    assert list(stream) == []
    assert [c["method"] for c in backend.calls] == ["stream"], "nothing is sampled for a client that is gone"
    assert stream.reply.finish_reason == "cancelled"


def test_stream_with_candidates_sends_the_best_whole(pack):
    backend = FakeBackend().queue("No.", "The sea says no.")
    performer = Performer(pack, backend, perf=PerformerSettings(candidates=2), index=None, style=KeywordStyle())
    assert list(performer.stream([], "Well?")) == ["The sea says no."]


def test_empty_and_huge_messages(pack):
    performer = Performer(pack, FakeBackend(), index=None, style=None)
    with pytest.raises(MessageError, match="empty"):
        performer.reply([], "   ")
    reply = performer.reply([], "word " * 5000, perf=PerformerSettings(max_message_chars=100))
    assert reply.notices and "cut to its first" in reply.notices[0]


def test_generation_settings_reach_the_backend(pack):
    backend = FakeBackend()
    Performer(pack, backend, index=None, style=None).reply([], "Hi", gen=GenerationSettings(temperature=0.1, seed=5))
    assert (backend.calls[0]["settings"].temperature, backend.calls[0]["settings"].seed) == (0.1, 5)


def test_repetition():
    assert repetition("the tide came in", ["the tide came in again"]) == 1.0
    assert repetition("something else entirely", ["the tide came in"]) == 0.0
    assert repetition("anything", []) == 0.0


# -- the real default model (SmolLM2-135M through llama.cpp) -----------------------------------------

def check_probes(pack_path):
    from rolecast.chat.postprocess import ends_sentence
    from rolecast.evaluation.probes import probes

    performer = Performer.load(pack_path)
    partner = performer.card["data"]["extensions"]["rolecast"]["stats"]["partners"][0]["name"]
    speakers = [s for s in performer.pack.info["speakers"] if s != performer.character]
    failures = []
    for i, message in enumerate(probes(partner)):
        reply = performer.reply([], message, gen=performer.gen.updated(seed=i))
        text = reply.text
        if not text.strip():
            failures.append((message[:40], "empty", text))
        elif not ends_sentence(text):
            failures.append((message[:40], "unfinished", text))
        elif performer.post._cut_point(text) is not None or any(f"{s}:" in text for s in speakers):
            failures.append((message[:40], "another speaker's line", text))
    return failures, len(probes(partner))


@pytest.mark.slow
def test_probes_on_the_sample_pack(sample_pack):
    failures, n = check_probes(sample_pack)
    assert n >= 40
    assert failures == [], failures


@pytest.mark.slow
def test_probes_on_house(house_pack):
    failures, n = check_probes(house_pack)
    assert failures == [], failures


def test_a_lora_gets_the_system_turn_it_was_trained_with(pack):
    description = pack.card()["data"]["description"]
    pack.info = {**pack.info, "parts": {**pack.info.get("parts", {}), "adapter": {"system_turn": "compact"}}}
    sent = {}
    for adapter in (None, "lora.gguf"):
        backend = FakeBackend(adapter=adapter)
        Performer(pack, backend, index=None, style=None).reply([], "Hello?")
        sent[adapter] = backend.calls[0]["messages"][0]["content"]
    assert description in sent[None] and description not in sent["lora.gguf"]
    card = Performer(pack, FakeBackend(adapter="lora.gguf"), index=None, style=None,
                     perf=PerformerSettings(system_turn="card"))
    assert description in card.prompt([], "Hello?").messages[0]["content"]
