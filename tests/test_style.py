"""The style classifier: learns an invented, very distinctive character; scores, saves, loads."""

from __future__ import annotations

import csv
import json
import random
import re
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("sklearn")

from conftest import needs_shared_data
from rolecast.chat.style import StyleScorer, load_data, train_style
from rolecast.errors import PackError, SettingsError  # noqa: E402
from rolecast.pack import Pack  # noqa: E402
from rolecast.stats import roc_auc  # noqa: E402

# An invented show: Zorp always talks about spaceships and shouts; the others are calm and plain.
ZORP_WORDS = ["spaceship", "spaceships", "rocket", "thrusters", "hyperdrive", "galaxy", "launch", "orbit"]
ZORP_OPENERS = ["Wow", "Blast off", "Whoa", "Zoom", "Yes yes yes"]
PLAIN_SUBJECTS = ["the report", "the meeting", "my sister", "the kitchen", "our budget", "the garden", "the bus"]
PLAIN_VERBS = ["is fine", "needs a look", "was late again", "looks tidy", "can wait until Monday", "seems quiet"]
OTHERS = ["Mildred", "Otto", "Priya"]
SPLIT_OF = {f"e{i}": "train" for i in range(1, 9)} | {"e9": "validation", "e10": "validation",
                                                         "e11": "test", "e12": "test"}


def zorp_line(rng: random.Random) -> str:
    return f"{rng.choice(ZORP_OPENERS)}, the {rng.choice(ZORP_WORDS)} {rng.choice(['goes', 'flies', 'roars'])} " \
           f"to the {rng.choice(ZORP_WORDS)}!"


def plain_line(rng: random.Random) -> str:
    return f"I think {rng.choice(PLAIN_SUBJECTS)} {rng.choice(PLAIN_VERBS)}."


def write_pack(folder: Path, seed: int = 0, split_of: dict[str, str] | None = None) -> Pack:
    """A pack folder with the files the style classifier reads: script, examples, pack.json."""
    rng = random.Random(seed)
    split_of = split_of or SPLIT_OF
    rows = []
    for episode in split_of:
        for scene in range(3):
            for _ in range(12):
                speaker = rng.choice(["Zorp", "Zorp", *OTHERS])
                text = zorp_line(rng) if speaker == "Zorp" else plain_line(rng)
                rows.append({"show": "Star Lane", "episode": episode, "scene": str(scene), "index": len(rows),
                             "speaker": speaker, "text": text, "raw_speaker": speaker, "raw_text": text})
            rows.append({"show": "Star Lane", "episode": episode, "scene": str(scene), "index": len(rows),
                         "speaker": "(narration)", "text": "The lights flicker.", "raw_speaker": "", "raw_text": ""})
    folder.mkdir(parents=True)
    (folder / "examples").mkdir()
    with open(folder / "script.jsonl", "w", encoding="utf-8") as fh:
        fh.writelines(json.dumps(row) + "\n" for row in rows)
    for split in ("train", "validation", "test"):
        with open(folder / "examples" / f"{split}.jsonl", "w", encoding="utf-8") as fh:
            for row in rows:
                if row["speaker"] == "Zorp" and split_of[row["episode"]] == split:
                    fh.write(json.dumps({"id": str(row["index"]), "episode": row["episode"], "scene": row["scene"],
                                         "messages": [], "completion": [{"role": "assistant",
                                                                         "content": row["text"]}]}) + "\n")
    (folder / "pack.json").write_text(json.dumps({"format": "rolecast-pack/1", "name": "zorp", "character": "Zorp",
                                                  "show": "Star Lane", "parts": {}}))
    return Pack.open(folder)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    pack = write_pack(tmp_path_factory.mktemp("style") / "zorp")
    report = train_style(pack, seed=13, max_minutes=1.0)
    return pack, report


def test_load_data_splits_by_episode_and_balances(tmp_path):
    pack = write_pack(tmp_path / "zorp")
    data = load_data(pack, seed=13)
    for name, split in data.items():
        assert sum(split.labels) * 2 == len(split), f"{name} is not balanced: {sum(split.labels)} of {len(split)}"
        assert "The lights flicker." not in split.replies, f"narration leaked into the {name} rows"
    assert all("!" in r for r, y in zip(data["train"].replies, data["train"].labels, strict=True) if y == 1), "a positive is not Zorp's"
    assert all("!" not in r for r, y in zip(data["train"].replies, data["train"].labels, strict=True) if y == 0), "a negative is Zorp's"
    assert "" in data["train"].contexts, "a scene opener should have the empty context"


def test_learns_a_distinctive_style(trained):
    pack, report = trained
    assert report["roc_auc"] > 0.9, f"held-out ROC AUC {report['roc_auc']} on an easy invented style"
    assert report["method"] == "tfidf", f"auto picked {report['method']}"
    for key in ("method", "roc_auc", "accuracy", "n_train", "n_test", "tried", "threshold"):
        assert key in report, f"the report lacks {key!r}"
    assert {"method", "roc_auc", "accuracy", "train_seconds"} <= set(report["tried"][0]), report["tried"]
    assert 0.0 <= report["threshold"] <= 1.0, f"threshold {report['threshold']}"
    saved = json.loads((pack.path / "style" / "report.json").read_text())
    assert saved == report, "style/report.json differs from the returned report"
    recorded = json.loads((pack.path / "pack.json").read_text())["parts"]["style"]
    assert recorded["method"] == "tfidf" and recorded["roc_auc"] == report["roc_auc"], recorded


def test_scores_are_probabilities_and_favour_the_style(trained):
    pack, _ = trained
    scorer = StyleScorer.load(pack)
    in_style = scorer.score("What are you doing?", "Zoom, the rocket flies to the galaxy!")
    off_style = scorer.score("What are you doing?", "I think the budget can wait until Monday.")
    assert 0.0 <= off_style <= 1.0 and 0.0 <= in_style <= 1.0, (in_style, off_style)
    assert in_style > off_style + 0.3, f"in-style {in_style:.3f} vs off-style {off_style:.3f}"
    assert isinstance(in_style, float), type(in_style)


def test_empty_context_works(trained):
    scorer = StyleScorer.load(trained[0])
    with_ctx = scorer.score("", "Whoa, the spaceship roars to the orbit!")
    assert 0.5 < with_ctx <= 1.0, f"in-style reply with empty context scored {with_ctx}"
    many = scorer.score_many(["", ""], ["Whoa, the hyperdrive goes!", "I think the bus is fine."])
    assert many.shape == (2,) and many[0] > many[1], many


def test_round_trip_gives_identical_scores(trained):
    pack, report = trained
    data = load_data(pack, seed=13)["test"]
    first = StyleScorer.load(pack).score_many(data.contexts, data.replies)
    second = StyleScorer.load(pack).score_many(data.contexts, data.replies)
    assert np.array_equal(first, second), "two loads of the same style folder score differently"
    assert round(roc_auc(data.y, first), 4) == report["roc_auc"], "the saved model is not the one reported"
    one_by_one = [StyleScorer.load(pack).score(c, r) for c, r in zip(data.contexts[:5], data.replies[:5], strict=True)]
    assert np.allclose(one_by_one, first[:5]), "score() disagrees with score_many()"


def test_training_is_deterministic(tmp_path, trained):
    pack = write_pack(tmp_path / "zorp")
    again = train_style(pack, seed=13, max_minutes=1.0)
    keys = ("roc_auc", "accuracy", "threshold", "n_train", "n_test")
    assert {k: again[k] for k in keys} == {k: trained[1][k] for k in keys}, (again, trained[1])
    replies = ["Wow, the orbit roars!", "I think my sister seems quiet."]
    assert np.array_equal(StyleScorer.load(pack).score_many(["", ""], replies),
                          StyleScorer.load(trained[0]).score_many(["", ""], replies)), "same seed, other scores"


def test_missing_style_names_the_command(tmp_path):
    pack = write_pack(tmp_path / "zorp")
    with pytest.raises(PackError) as err:
        StyleScorer.load(pack)
    assert "rolecast style train" in str(err.value), str(err.value)


def test_corrupt_style_names_the_command(tmp_path):
    pack = write_pack(tmp_path / "zorp")
    (pack.path / "style").mkdir()
    (pack.path / "style" / "model.json").write_text("{not json")
    with pytest.raises(PackError) as err:
        StyleScorer.load(pack)
    assert "rolecast style train" in str(err.value), str(err.value)


def test_trains_without_validation_episodes(tmp_path):
    split_of = {episode: "test" if split == "test" else "train" for episode, split in SPLIT_OF.items()}
    pack = write_pack(tmp_path / "zorp", split_of=split_of)
    report = train_style(pack, seed=13, max_minutes=1.0)
    assert report["n_validation"] == 0 and report["roc_auc"] > 0.9, report
    assert report["threshold"] == 0.5, f"no validation, yet threshold {report['threshold']}"
    scores = StyleScorer.load(pack).score_many(["", ""], ["Zoom, the rocket flies to the galaxy!", "I think the bus is fine."])
    assert scores[0] > 0.5 > scores[1], f"uncalibrated scores {scores}"


def test_bad_arguments(trained, tmp_path):
    with pytest.raises(SettingsError) as err:
        train_style(write_pack(tmp_path / "zorp"), method="bogus")
    assert "auto" in str(err.value), str(err.value)
    scorer = StyleScorer.load(trained[0])
    assert scorer.score_many([], []).shape == (0,), "no candidates should give an empty array"
    with pytest.raises(ValueError):
        scorer.score_many(["a"], ["b", "c"])


@pytest.mark.slow
def test_minilm_blend_trains_and_round_trips(tmp_path):
    pytest.importorskip("sentence_transformers")
    pack = write_pack(tmp_path / "zorp")
    report = train_style(pack, method="minilm", seed=13, max_minutes=2.0)
    assert [row["method"] for row in report["tried"]] == ["tfidf", "minilm", "tfidf+minilm"], report["tried"]
    assert report["roc_auc"] > 0.9, report
    scorer = StyleScorer.load(pack)
    data = load_data(pack, seed=13)["test"]
    assert round(roc_auc(data.y, scorer.score_many(data.contexts, data.replies)), 4) == report["roc_auc"], report


# ----------------------------------------------------------------------------- real data

_DIRECTION = re.compile(r"\[[^\]]*\]|\([^)]*\)")


def house_pack(folder: Path, seasons: dict[int, str]) -> Pack:
    """A stand-in House pack from the shared CSVs: a season is an episode, 40 rows a scene."""
    shared = needs_shared_data("house-md")
    folder.mkdir(parents=True)
    (folder / "examples").mkdir()
    with open(folder / "script.jsonl", "w", encoding="utf-8") as out:
        for season in seasons:
            with open(shared / f"season{season}.csv", encoding="utf-8-sig", newline="") as fh:
                for n, rec in enumerate(csv.DictReader(fh)):
                    speaker, text = (rec["name"] or "").strip(), " ".join(_DIRECTION.sub(" ", rec["line"] or "").split())
                    if speaker and text:
                        out.write(json.dumps({"show": "House MD", "episode": f"season{season}", "scene": str(n // 40),
                                              "index": n, "speaker": speaker, "text": text}) + "\n")
    for split in ("train", "validation", "test"):
        rows = [{"episode": f"season{s}", "scene": "0", "messages": [], "completion": []}
                for s, name in seasons.items() if name == split]
        (folder / "examples" / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / "pack.json").write_text(json.dumps({"format": "rolecast-pack/1", "name": "house", "character": "House",
                                                  "show": "House MD", "parts": {}}))
    return Pack.open(folder)


@pytest.mark.slow
def test_house_style_beats_chance_on_held_out_seasons(tmp_path):
    pack = house_pack(tmp_path / "house", {1: "train", 2: "train", 3: "train", 4: "validation", 5: "test"})
    report = train_style(pack, seed=13, max_minutes=5.0)
    assert report["roc_auc"] > 0.66, f"House held-out ROC AUC {report['roc_auc']}"
    assert report["seconds"] < 300, f"training took {report['seconds']} s"
    scores = StyleScorer.load(pack).score_many(["Why are you late?"] * 2, ["Everybody lies.", "I missed the bus, sorry."])
    assert len(scores) == 2 and all(0.0 <= s <= 1.0 for s in scores), scores
