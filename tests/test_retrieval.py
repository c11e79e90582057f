"""Retrieval: nearest real exchanges, de-duplicated, long enough, and never from the test episodes."""

import json

import numpy as np
import pytest

from rolecast.chat.retrieval import LineIndex, exchanges_from_examples
from rolecast.pack import Pack
from rolecast.pack.examples import read_examples


class Axes:
    """A stand-in embedder: one axis per keyword, so the nearest exchange is known in advance."""

    name, dim = "axes", 3
    WORDS = ("tea", "storm", "boat")

    def encode(self, texts, **kwargs):
        out = np.zeros((len(texts), 3), dtype=np.float32)
        for i, text in enumerate(texts):
            for j, word in enumerate(self.WORDS):
                out[i, j] = text.lower().count(word)
            out[i] /= max(np.linalg.norm(out[i]), 1e-6)
        return out


def index(items):
    model = Axes()
    return LineIndex(items, model.encode([it["prompt"] or it["reply"] for it in items]), model)


ITEMS = [
    {"id": "1", "prompt": "More tea?", "reply": "Always more tea, love."},
    {"id": "2", "prompt": "Tea again?", "reply": "Always more tea, love."},  # the same reply: shown once
    {"id": "3", "prompt": "A storm is coming.", "reply": "Then tie the boats down."},
    {"id": "4", "prompt": "Tea or coffee?", "reply": "Tea."},  # too short for min_words=3
    {"id": "5", "prompt": "The boat leaks.", "reply": "Bail faster, then."},
]


def test_search_finds_the_nearest_exchange():
    found = index(ITEMS).search("Is there a storm tonight?", k=1)
    assert [e.id for e in found] == ["3"] and found[0].reply == "Then tie the boats down."


def test_search_removes_duplicate_replies_and_short_ones():
    found = index(ITEMS).search("tea", k=4)
    replies = [e.reply for e in found]
    assert replies.count("Always more tea, love.") == 1, replies
    assert "Tea." not in replies, "a one-word reply is below min_words"
    assert "Tea." in [e.reply for e in index(ITEMS).search("tea", k=4, min_words=1)]
    assert index(ITEMS).search("tea", k=0) == []


def test_exclude_and_scores_are_ordered():
    found = index(ITEMS).search("tea storm boat", k=3, exclude={"3"})
    assert "3" not in [e.id for e in found]
    assert [e.score for e in found] == sorted((e.score for e in found), reverse=True)


def test_exchanges_take_the_last_line_said_to_the_character():
    rows = [{"id": "a", "messages": [{"role": "user", "content": "Otto: Hi.\nJuno: Tea?"}],
             "completion": [{"role": "assistant", "content": "Yes."}]},
            {"id": "b", "messages": [], "completion": [{"role": "assistant", "content": "Morning."}]}]
    assert exchanges_from_examples(rows) == [{"id": "a", "prompt": "Tea?", "reply": "Yes."},
                                             {"id": "b", "prompt": "", "reply": "Morning."}]


def test_no_test_episode_line_can_ever_be_retrieved(sample_pack):
    pack = Pack.open(sample_pack)
    test_ids = {ex["id"] for ex in read_examples(pack.part("examples") / "test.jsonl")}
    items = [json.loads(row) for row in (pack.part("index") / "items.jsonl").read_text().splitlines()]
    assert test_ids and items
    assert not test_ids & {it["id"] for it in items}, "the index holds a test-episode exchange"
    real = LineIndex.load(pack)
    for ex in list(read_examples(pack.part("examples") / "test.jsonl"))[:20]:
        for found in real.search(ex["completion"][0]["content"], k=8, min_words=1):
            assert found.id not in test_ids


@pytest.mark.parametrize("damage", ["items", "vectors"])
def test_a_damaged_index_names_the_command_to_rebuild_it(sample_pack, tmp_path, damage):
    import shutil

    from rolecast.errors import PackError

    copy = tmp_path / "pack"
    shutil.copytree(sample_pack, copy)
    if damage == "items":
        (copy / "index" / "items.jsonl").write_text('{"id": "x"}\n')
    else:
        (copy / "index" / "vectors.npy").write_bytes(b"junk")
    with pytest.raises(PackError, match="rolecast index"):
        LineIndex.load(Pack.open(copy))
