"""Prompt building: card macros, retrieved examples, history trimming to the context window."""

import pytest

from conftest import FakeBackend
from rolecast.chat.prompt import build_prompt
from rolecast.chat.retrieval import Exchange
from rolecast.errors import MessageError
from rolecast.pack.system_turn import system_prompt
from rolecast.settings import BackendSettings, GenerationSettings, PerformerSettings

CARD = {"spec": "chara_card_v2", "data": {
    "name": "Maggie", "description": "{{char}} keeps the lighthouse.", "personality": "dry, blunt",
    "scenario": "", "system_prompt": "You are {{char}}, talking to {{user}}.",
    "post_history_instructions": "Answer as {{char}}."}}
EXAMPLES = [Exchange("1", "Is it cold?", "Colder than your manners."), Exchange("2", "", "Opener line."),
            Exchange("3", "Any news?", "The tide came in. Again.")]


def history(n):
    return [{"role": "user" if i % 2 == 0 else "assistant", "content": f"turn {i} " + "word " * 10} for i in range(n)]


def test_order_system_examples_history_message_post():
    perf = PerformerSettings(post_history="after_history")
    p = build_prompt(CARD, history(2), "Hello?", EXAMPLES, FakeBackend(), perf, GenerationSettings())
    assert [m["role"] for m in p.messages] == ["system", "user", "assistant", "user", "assistant", "user", "assistant",
                                               "user", "system"]
    assert p.messages[0]["content"].startswith("You are Maggie, talking to User.\n\nMaggie keeps the lighthouse.")
    assert p.messages[1:5] == [{"role": "user", "content": "Is it cold?"},
                               {"role": "assistant", "content": "Colder than your manners."},
                               {"role": "user", "content": "Any news?"},
                               {"role": "assistant", "content": "The tide came in. Again."}], "exchanges without a prompt are skipped"
    assert p.messages[-2:] == [{"role": "user", "content": "Hello?"}, {"role": "system", "content": "Answer as Maggie."}]
    assert p.notices == []


def test_post_history_instructions_end_the_system_prompt_by_default():
    p = build_prompt(CARD, [], "Hello?", [], FakeBackend(), PerformerSettings(), GenerationSettings())
    assert p.messages[0]["content"].endswith("dry, blunt\n\nAnswer as Maggie.")
    assert p.messages[-1] == {"role": "user", "content": "Hello?"}


def test_history_trimmed_first_then_examples_then_message():
    backend = FakeBackend(BackendSettings(backend="fake", n_ctx=256))
    gen = GenerationSettings(max_tokens=64)
    p = build_prompt(CARD, history(20), "Hello?", EXAMPLES, backend, PerformerSettings(history_turns=20), gen)
    assert p.tokens <= 256 - 64 - 8
    assert 0 < p.history_kept < 20 and p.history_kept % 2 == 0, p.history_kept
    assert p.messages[0]["role"] == "system", "the system prompt is never dropped"
    assert p.notices == ["older turns of the conversation were left out to fit the context"]
    long = "blah " * 500
    p = build_prompt(CARD, history(6), long, EXAMPLES, backend, PerformerSettings(), gen)
    assert p.history_kept == 0 and p.examples == []
    assert p.tokens <= 256 - 64 - 8 and p.messages[-1]["content"].startswith("blah blah")
    assert any("message was too long" in n for n in p.notices)


def test_system_prompt_alone_too_long():
    card = {"data": {**CARD["data"], "description": "lore " * 400}}
    backend = FakeBackend(BackendSettings(backend="fake", n_ctx=256))
    with pytest.raises(MessageError, match="raise --n-ctx"):
        build_prompt(card, [], "Hi", [], backend, PerformerSettings(), GenerationSettings(max_tokens=64))


def test_default_system_prompt_when_card_has_none():
    card = {"data": {"name": "Bob"}}
    assert system_prompt(card).startswith("You are Bob. Stay in character")
