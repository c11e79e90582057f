"""Training rows: whole scenes with the loss on every line of the character, and one row per reply."""

from __future__ import annotations

from collections import Counter

import pytest

from rolecast.errors import PackError
from rolecast.ingest.script import Line
from rolecast.pack import Pack
from rolecast.settings import TrainSettings
from rolecast.training.data import (
    SCENE_START,
    conversation,
    fit,
    load_rows,
    scene_conversations,
    stretches,
    training_system_prompt,
)


def words(messages) -> int:
    """A stand-in tokenizer: one token per word, two per turn."""
    return sum(len(m["content"].split()) + 2 for m in messages)


def row(*turns, reply="I am the reply."):
    return {"prompt": [{"role": "system", "content": "Be Ann."}, *turns],
            "completion": [{"role": "assistant", "content": reply}]}


def user(text):
    return {"role": "user", "content": text}


def test_conversation_keeps_the_last_turns_and_opens_a_scene_with_a_user_turn():
    example = {"messages": [user("one"), {"role": "assistant", "content": "two"}, user("three")],
               "completion": [{"role": "assistant", "content": "four"}]}
    pc = conversation(example, "SYS", max_turns=2)
    assert pc["prompt"] == [{"role": "system", "content": "SYS"}, user(SCENE_START),
                            {"role": "assistant", "content": "two"}, user("three")]
    assert pc["completion"] == [{"role": "assistant", "content": "four"}]
    opener = conversation({"messages": [], "completion": example["completion"]}, "SYS", max_turns=4)
    assert opener["prompt"][1:] == [user(SCENE_START)]


def test_fit_drops_the_oldest_context_and_never_the_reply():
    long = row(user("old " * 30), {"role": "assistant", "content": "mid " * 5}, user("new " * 5))
    fitted, n = fit(long, words, max_length=30)
    assert n <= 30 and fitted["completion"] == long["completion"]
    assert fitted["prompt"][-1] == user("new " * 5)
    assert all("old" not in m["content"] for m in fitted["prompt"])


def test_fit_cuts_the_start_of_a_single_long_turn_and_skips_replies_that_cannot_fit():
    fitted, n = fit(row(user("a b c d e f g h i j k l m n o p q r s t")), words, max_length=20)
    assert n <= 20 and fitted["prompt"][-1]["content"].endswith("s t")
    assert fit(row(user("hi"), reply="word " * 40), words, max_length=20) is None


def test_training_uses_the_system_prompt_the_chat_engine_sends():
    from conftest import FakeBackend
    from rolecast.chat.prompt import build_prompt
    from rolecast.pack.card import render
    from rolecast.settings import GenerationSettings, PerformerSettings

    card = {"data": {"name": "Ann", "system_prompt": "You are {{char}}.", "description": "A nurse.",
                     "post_history_instructions": "Answer as {{char}}."}}
    sent = build_prompt(card, [], "Hi", [], FakeBackend(), PerformerSettings(), GenerationSettings())
    assert sent.messages[0] == {"role": "system", "content": training_system_prompt(card)}
    assert render("{{char}}", "Ann") in training_system_prompt(card)
    compact = build_prompt(card, [], "Hi", [], FakeBackend(), PerformerSettings(system_turn="compact"), GenerationSettings())
    assert compact.messages[0] == {"role": "system", "content": training_system_prompt(card, "compact")}
    assert "A nurse." in training_system_prompt(card) and "A nurse." not in training_system_prompt(card, "compact")
    assert "Answer as Ann." in training_system_prompt(card, "compact")


# ----------------------------------------------------------------------------- whole scenes


def lines(*speakers: str) -> list[Line]:
    return [Line("Show", "e1", "1", i, who, f"line {i}") for i, who in enumerate(speakers)]


def test_stretches_start_before_the_character_and_end_at_a_long_silence():
    scene = lines("A", "B", "A", "B", "A", "Ann", "B", "Ann", "A", "B", "A", "B", "A", "B", "Ann", "A")
    parts = stretches(scene, "Ann", lead=2)
    assert [[x.index for x in p] for p in parts] == [[3, 4, 5, 6, 7], [12, 13, 14]]
    assert stretches(lines("A", "B"), "Ann", lead=2) == []
    assert [[x.index for x in p] for p in stretches(lines("Ann", "A", "Ann"), "Ann", lead=0)] == [[0], [2]]


def labelled(tokenizer, ids, mask) -> list[str]:
    out, cur = [], []
    for token, bit in zip([*ids, None], [*mask, 0]):
        if bit:
            cur.append(token)
        elif cur:
            out.append(tokenizer.decode(cur))
            cur = []
    return out


@pytest.mark.parametrize("max_length", [160, 512])
def test_scene_rows_train_every_line_of_the_character_and_nothing_else(tokenizer, short_pack, max_length):
    pack = Pack.open(short_pack)
    settings = TrainSettings(max_length=max_length)
    data = load_rows(pack, "train", tokenizer, settings)
    assert data.rows and max(data.lengths) <= max_length
    said = [t["content"] for turns in scene_conversations(pack, "train", settings.max_context_turns)
            for t in turns if t["role"] == "assistant"]
    trained = [seg for row in data.rows for seg in labelled(tokenizer, row["input_ids"], row["assistant_masks"])]
    assert all(seg.endswith("<|im_end|>\n") for seg in trained), trained[:3]
    trained = [seg.removesuffix("<|im_end|>\n") for seg in trained]
    assert len(trained) == data.replies and not Counter(trained) - Counter(said), "only the character's lines"
    missing = Counter(said) - Counter(trained)
    assert sum(missing.values()) == data.skipped, f"lines never trained: {list(missing)[:3]}"
    from rolecast.pack.examples import read_examples

    def lines(*splits):
        return {ex["completion"][0]["content"] for split in splits
                for ex in read_examples(short_pack / "examples" / f"{split}.jsonl")}

    held_out_only = lines("validation", "test") - lines("train")  # what no train scene says
    assert held_out_only and not held_out_only & set(trained), "a validation or test scene reached a train row"
    text = "".join(tokenizer.decode(row["input_ids"]) for row in data.rows)
    assert not [line for line in held_out_only if len(line) > 25 and line in text], "not even as context"
    replies = load_rows(pack, "train", tokenizer, TrainSettings(data="replies", max_length=max_length))
    assert sum(data.lengths) < 0.6 * sum(replies.lengths), "a scene should read its prompt once for all its replies"


def test_scene_rows_through_trl_label_exactly_the_masked_tokens(tokenizer, short_pack, tmp_path):
    transformers = pytest.importorskip("transformers")
    from rolecast.training.sft import build_trainer

    settings = TrainSettings(max_length=256)
    data = load_rows(Pack.open(short_pack), "train", tokenizer, settings, limit=6)
    config = transformers.LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                      num_attention_heads=2, num_key_value_heads=1)
    trainer = build_trainer(transformers.LlamaForCausalLM(config), tokenizer, data, None, settings, tmp_path, progress=False)
    prepared = trainer.train_dataset
    assert len(prepared) == len(data.rows)
    for row, ids, labels in zip(data.rows, prepared["input_ids"], prepared["labels"]):
        assert ids == row["input_ids"]
        assert labels == [t if m else -100 for t, m in zip(ids, row["assistant_masks"])]


def test_scene_rows_need_the_packs_script(tokenizer, short_pack, tmp_path):
    import shutil

    copy = tmp_path / "pack"
    shutil.copytree(short_pack, copy)
    (copy / "script.jsonl").unlink()
    with pytest.raises(PackError, match="rolecast prepare"):
        load_rows(Pack.open(copy), "train", tokenizer, TrainSettings())
