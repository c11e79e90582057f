"""Training examples: context windows, user/assistant roles, limits and the episode split."""

from collections import Counter

import pytest

from conftest import script_of
from rolecast.errors import EmptyResultError
from rolecast.ingest.script import GROUP, Line
from rolecast.pack.examples import assign_splits, build_examples, context_messages, split_units
from rolecast.settings import PrepareSettings

SCRIPT = script_of([
    ("e1", "1", "Ann", "Morning, everyone here?"),
    ("e1", "1", "Bob", "Present and tired."),
    ("e1", "1", "Cal", "Me too."),
    ("e1", "1", "Ann", "Good. Let us begin the work."),
    ("e1", "2", "Ann", "New scene, who is there?"),
    ("e1", "2", "Bob", "Only me this time."),
    ("e1", "2", "Ann", "Then you get all the coffee."),
    ("e2", "1", GROUP, "Hooray!"),
    ("e2", "1", "Ann", "Hush now everyone."),
])


def settings(**kw):
    return PrepareSettings(character="Ann", **kw)


def test_context_comes_from_the_same_scene_with_roles_and_names():
    examples = build_examples(SCRIPT, "Ann", settings(), Counter())
    by_reply = {ex["completion"][0]["content"]: ex["messages"] for ex in examples}
    assert by_reply["Morning, everyone here?"] == [], "a scene opener has no context"
    assert by_reply["Good. Let us begin the work."] == [
        {"role": "assistant", "content": "Morning, everyone here?"},
        {"role": "user", "content": "Bob: Present and tired.\nCal: Me too."},
    ]
    assert by_reply["New scene, who is there?"] == [], "context never crosses a scene"
    assert by_reply["Then you get all the coffee."] == [
        {"role": "assistant", "content": "New scene, who is there?"},
        {"role": "user", "content": "Only me this time."},
    ], "one other speaker: no name prefix"
    assert by_reply["Hush now everyone."] == [{"role": "user", "content": "Hooray!"}]


def test_context_turns_and_char_limit():
    ex = build_examples(SCRIPT, "Ann", settings(context_turns=1), Counter())[1]
    assert ex["messages"] == [{"role": "user", "content": "Cal: Me too."}]
    lines = [Line("S", "e", "1", 0, "Bob", "x" * 50), Line("S", "e", "1", 1, "Bob", "y" * 50)]
    assert context_messages(lines, "Ann", False, 60) == [{"role": "user", "content": "y" * 50}]


def test_word_filters_and_empty_result_message():
    counts = Counter()
    examples = build_examples(SCRIPT, "Ann", settings(min_words=4), counts)
    assert [ex["completion"][0]["content"] for ex in examples] == [
        "Good. Let us begin the work.", "New scene, who is there?", "Then you get all the coffee."]
    assert counts["filtered_min_words"] == 2
    with pytest.raises(EmptyResultError, match="--min-words 50 removed 5 of 5 lines"):
        build_examples(SCRIPT, "Ann", settings(min_words=50), Counter())


def test_split_by_episode_never_mixes_an_episode():
    rows = [(f"e{e}", str(s), spk, f"line {e} {s} {i}") for e in range(20) for s in range(3)
            for i, spk in enumerate(["Bob", "Ann"] * 2)]
    examples = build_examples(script_of(rows), "Ann", settings(), Counter())
    splits = assign_splits(examples, (0.8, 0.1, 0.1), seed=1)
    episodes = {name: {ex["episode"] for ex in rows} for name, rows in splits.items()}
    assert not (episodes["train"] & episodes["test"] or episodes["train"] & episodes["validation"]
                or episodes["test"] & episodes["validation"])
    assert (len(episodes["train"]), len(episodes["validation"]), len(episodes["test"])) == (16, 2, 2)
    assert assign_splits(examples, (0.8, 0.1, 0.1), seed=1) == splits, "seeded: same split every time"


def test_few_episodes_split_by_blocks_of_scenes():
    rows = [("only", str(s), spk, f"line {s} {spk}") for s in range(200) for spk in ["Bob", "Ann"]]
    examples = build_examples(script_of(rows), "Ann", settings(), Counter())
    units = split_units(examples)
    assert len(set(units)) == 50
    splits = assign_splits(examples, (0.8, 0.1, 0.1), seed=3)
    scenes = {name: {ex["scene"] for ex in rows} for name, rows in splits.items()}
    assert all(scenes[a].isdisjoint(scenes[b]) for a, b in [("train", "test"), ("train", "validation"), ("test", "validation")])
    assert [len(splits[n]) for n in ("train", "validation", "test")] == [160, 20, 20]


def test_a_one_episode_corpus_reads_its_splits_by_scene(tmp_path):
    """A screenplay with no episodes is split by blocks of scenes; the style classifier, the judges and the
    replayed scenes must read those splits by scene (by episode, every line fell in one split)."""
    import random

    from rolecast.chat.style import load_data
    from rolecast.evaluation.judges import read_lines
    from rolecast.evaluation.replay import held_out_scenes
    from rolecast.pack import Pack
    from rolecast.pack.examples import SplitOf, read_examples
    from rolecast.prepare import prepare

    rng = random.Random(0)
    words = ["harbor", "boat", "storm", "tea", "rope", "gull", "lamp", "net", "tide", "fish", "salt", "wind"]
    scenes = ["\n".join(f"{who}: {' '.join(rng.choice(words) for _ in range(5))}." for who in ["Bob", "Ann"] * 3)
              for _ in range(120)]
    script = tmp_path / "play.txt"
    script.write_text("\n\n".join(scenes) + "\n", encoding="utf-8")
    out = tmp_path / "ann"
    prepare([script], PrepareSettings(character="Ann", index=False), out)  # the style classifier trains
    pack = Pack.open(out)
    split_of = SplitOf(pack)
    for name in ("train", "validation", "test"):
        rows = list(read_examples(out / "examples" / f"{name}.jsonl"))
        assert rows and all(split_of(ex["episode"], ex["scene"]) == name for ex in rows), name
    data = load_data(pack)
    assert all(len(data[name]) for name in ("train", "validation", "test"))
    lines = read_lines(pack)
    assert all(split_of(*line.id.rsplit("-", 2)[:2]) == name for name in lines for line in lines[name])
    assert len(lines["train"]) > 5 * len(lines["test"]) > 0
    assert all(split_of(s["episode"], s["scene"]) == "test" for s in held_out_scenes(pack, 50, seed=1))
