"""The independent judges: each one shown able to fail before it is trusted (sample pack, real MiniLM)."""

import numpy as np
import pytest

from rolecast.evaluate import load_cases
from rolecast.files import tree_checksum
from rolecast.judges import CopyFinder, Judges, character_corpus, discriminator, mean_wins, messages_context, pairwise
from rolecast.pack import Pack


@pytest.fixture(scope="module")
def judges(sample_pack):
    return Judges.fit(Pack.open(sample_pack))


@pytest.fixture(scope="module")
def cases(sample_pack):
    return load_cases(Pack.open(sample_pack), 1000, 1)


def test_coherence_prefers_the_real_reply_over_a_shuffled_one(judges, cases):
    assert judges.coherence_validation["auc"] > 0.55, judges.coherence_validation  # a tiny pack: 300 lines
    contexts = [messages_context(c["history"], c["message"]) for c in cases]
    real = [c["reply"] for c in cases]
    shuffled = real[1:] + real[:1]
    assert judges.coherence(contexts, real).mean() > judges.coherence(contexts, shuffled).mean()


def test_coherence_does_not_reward_an_echo_of_the_message(judges, cases):
    contexts = [messages_context(c["history"], c["message"]) for c in cases]
    real = judges.coherence(contexts, [c["reply"] for c in cases])
    echo = judges.coherence(contexts, [c["message"] for c in cases])
    assert judges.coherence_validation["echo_auc"] > 0.6, judges.coherence_validation  # a tiny pack: 300 lines
    assert real.mean() > echo.mean(), "saying the message back is not answering it"


def test_held_apart_judge_tells_the_character_from_others_and_never_touches_the_pack(sample_pack, monkeypatch):
    import rolecast.style

    def refuse(*args, **kwargs):
        raise AssertionError("the held-apart judge loaded the reranker's classifier")

    monkeypatch.setattr(rolecast.style.StyleScorer, "load", refuse)
    before = tree_checksum(sample_pack)
    judges = Judges.fit(Pack.open(sample_pack))
    assert tree_checksum(sample_pack) == before, "fitting the judges wrote into the pack"
    v = judges.style_validation
    assert v["auc"] > 0.6 and v["character_mean"] > v["other_mean"], v
    assert v["lines"] == 2 * v["character_lines"], "balanced: as many other speakers' test lines as the character's"


def test_held_apart_judge_is_fitted_on_test_episodes_only(sample_pack):
    from rolecast.judges import read_lines
    from rolecast.style import split_episodes

    lines = read_lines(Pack.open(sample_pack))
    test = split_episodes(Pack.open(sample_pack))["test"]
    assert lines["test"] and all(line.id.rsplit("-", 2)[0] in test for line in lines["test"])
    judges = Judges.fit(Pack.open(sample_pack))
    characters = sum(line.speaker == "Maggie" for line in lines["test"])
    assert judges.style_validation["character_lines"] == characters


def test_discriminator_is_half_for_the_real_replies_and_one_for_a_constant(judges, cases):
    real = [c["reply"] for c in cases]
    same = discriminator(judges.encoder, real, real, rounds=200)
    assert 0.4 <= same["auc"] <= 0.6, same
    constant = discriminator(judges.encoder, real, ["Hm."] * len(real), rounds=200)
    assert constant["auc"] >= 0.95, constant
    low, high = constant["ci"]
    assert low <= constant["auc"] <= high


def test_copy_rate_catches_near_verbatim_training_lines(sample_pack):
    corpus = character_corpus(Pack.open(sample_pack))
    long = next(t for t in corpus if len(t.split()) >= 6)
    finder = CopyFinder(corpus)
    found = finder.copies([long, long.upper().rstrip(".!?") + "!", "Completely new words about harbor cranes today.",
                           "Yes."])
    assert found.tolist() == [1.0, 1.0, 0.0, 0.0]


def test_pairwise_win_rates_and_intervals():
    scores = {"a": np.array([1.0, 1.0, 1.0, 0.0]), "b": np.array([0.0, 0.0, 1.0, 1.0])}
    pairs = pairwise(scores, rounds=200, seed=0)
    p = pairs["a vs b"]
    assert p["win"] == pytest.approx((1 + 1 + 0.5 + 0) / 4)
    assert p["ci"][0] <= p["win"] <= p["ci"][1]
    assert mean_wins(pairs, ["a", "b"]) == {"a": 0.625, "b": 0.375}
