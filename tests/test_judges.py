"""The independent judges: each one shown able to fail before it is trusted (sample pack, real MiniLM)."""

import numpy as np
import pytest

from rolecast.evaluation.evaluate import load_cases
from rolecast.evaluation.judges import (
    CopyFinder,
    Judges,
    character_corpus,
    discriminator,
    mean_wins,
    messages_context,
    pairwise,
)
from rolecast.files import tree_checksum
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
    import rolecast.chat.style

    def refuse(*args, **kwargs):
        raise AssertionError("the held-apart judge loaded the reranker's classifier")

    monkeypatch.setattr(rolecast.chat.style.StyleScorer, "load", refuse)
    before = tree_checksum(sample_pack)
    judges = Judges.fit(Pack.open(sample_pack))
    assert tree_checksum(sample_pack) == before, "fitting the judges wrote into the pack"
    v = judges.style_validation
    assert v["auc"] > 0.6 and v["character_mean"] > v["other_mean"], v
    assert v["lines"] == 2 * v["character_lines"], "balanced: as many other speakers' lines as the character's"


def test_held_apart_judge_is_fitted_on_validation_and_test_episodes_only(sample_pack):
    """Never on the train episodes (the LoRA's and the reranker's classifier's), and on every held-apart line."""
    from rolecast.evaluation.judges import read_lines
    from rolecast.pack.examples import SplitOf

    lines = read_lines(Pack.open(sample_pack))
    split_of = SplitOf(Pack.open(sample_pack))
    for name in ("validation", "test"):
        assert lines[name] and all(split_of(*line.id.rsplit("-", 2)[:2]) == name for line in lines[name]), name
    judges = Judges.fit(Pack.open(sample_pack))
    characters = sum(line.speaker == "Maggie" for line in lines["validation"] + lines["test"])
    assert judges.style_validation["character_lines"] == characters


def test_the_discriminators_checks_can_fail(judges, cases, monkeypatch):
    """Its checks are not true by construction: another speaker's lines must be told apart (they are, here), and
    the check fails when 'another speaker' is the character; two halves of the character must not be told apart,
    and that check fails for a discriminator that scores the lines it was fitted on."""
    from rolecast.evaluation.evaluate import discriminator_checks
    from rolecast.ingest.script import NAME_PREFIX

    real = [c["reply"] for c in cases]
    others = [NAME_PREFIX.sub("", c["message"]) for c in cases]
    checks = discriminator_checks(judges.encoder, real, others, rounds=100, seed=1)
    assert checks["versus_others"]["auc"] >= checks["bar"] and checks["halves"]["auc"] < checks["bar"], checks
    assert checks["trusted"]
    rng = np.random.default_rng(0)
    as_others = [real[i] for i in rng.permutation(len(real))]
    assert not discriminator_checks(judges.encoder, real, as_others, rounds=0, seed=1)["trusted"], "self vs self"
    constant = discriminator(judges.encoder, real, ["Hm."] * len(real), rounds=200)
    assert constant["auc"] >= 0.95 and constant["ci"][0] <= constant["auc"] <= constant["ci"][1]

    from sklearn.linear_model import LogisticRegression

    import rolecast.evaluation.evaluate as ev
    from rolecast.stats import roc_auc

    def in_sample(encoder, a, b, rounds=0, seed=13):  # fitted and scored on the same lines
        x, y = encoder.encode(a + b), np.r_[np.zeros(len(a)), np.ones(len(b))]
        return {"auc": roc_auc(y, LogisticRegression(C=100.0, max_iter=2000).fit(x, y).predict_proba(x)[:, 1]), "ci": (np.nan, np.nan)}

    monkeypatch.setattr(ev, "discriminator", in_sample)
    leaky = discriminator_checks(judges.encoder, real, others, rounds=0, seed=1)
    assert leaky["halves"]["auc"] >= 0.6 and not leaky["trusted"]


def test_each_reply_is_scored_by_a_style_model_that_never_saw_its_group():
    """Random lines with random labels: a model that saw a line memorises it (in-sample AUC near 1), one that did
    not can only guess. Scoring every reply with one fold's model, or fitting a fold on all rows, fails here."""
    from rolecast.evaluation.judges import FOLDS, Judges, Line, fit_style

    rng = np.random.default_rng(0)
    texts = [f"line {i}" for i in range(240)]
    vectors = {t: rng.normal(size=256) for t in texts}  # more dimensions than lines: a fitted model memorises

    class Encoder:
        dim = 256

        def encode(self, batch, batch_size=128):
            return np.stack([vectors[t] for t in batch])

    speakers = ["Ann" if i % 2 else "Bob" for i in range(len(texts))]
    lines = [Line(f"s01e{i % 12:02d}-1-{i}", f"s01e{i % 12:02d}", speakers[i], texts[i], "") for i in range(len(texts))]
    models, validation = fit_style(lines, "Ann", Encoder(), seed=3)
    assert len(models) == FOLDS
    judges = Judges(Encoder(), models, validation, None, {}, by_scene=False, seed=3)
    y = np.array([s == "Ann" for s in speakers])
    scored = judges.style([line.id for line in lines], texts)
    from rolecast.stats import roc_auc

    assert roc_auc(y, scored) < 0.65, "out-of-fold scores of random labels cannot separate them"
    from rolecast.evaluation.judges import style_features

    seen = models[0].predict_proba(style_features(Encoder(), texts))[:, 1]  # what scoring with one model would give
    assert roc_auc(y, seen) > 0.8, "a model that saw the lines separates them: this test can fail"


def test_a_fold_without_both_classes_outside_it_is_refused_not_fitted_in_sample():
    from rolecast.errors import EmptyResultError
    from rolecast.evaluation.judges import Line, fit_style, fold_of

    class Encoder:
        dim = 4

        def encode(self, batch, batch_size=128):
            return np.ones((len(batch), 4))

    # Ann speaks in one episode only: outside its fold there is no line of hers.
    episodes = [f"s01e{i:02d}" for i in range(20)]
    hers = next(e for e in episodes if fold_of(e, 3) == 0)
    lines = [Line(f"{hers}-1-{i}", hers, "Ann", f"mine {i} words", "") for i in range(12)]
    lines += [Line(f"{e}-1-{i}", e, "Bob", f"his {e} {i} words", "") for e in episodes if e != hers for i in range(2)]
    with pytest.raises(EmptyResultError, match="cannot be cross-fitted"):
        fit_style(lines, "Ann", Encoder(), seed=3)


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


def test_the_blind_coherence_judge_cannot_rebuild_the_rerankers_message_cosine():
    """The reranker works on the MiniLM cosine of the reply with the message. A linear model on the coherence
    judge's features rebuilds it exactly; on the blind judge's, which says how much of a rerank's gain survives
    without it, it cannot."""
    from sklearn.linear_model import LinearRegression

    from rolecast.evaluation.judges import last_turn, pair_matrix

    rng = np.random.default_rng(0)
    contexts = [f"before {i}\nmessage {i}" for i in range(600)]
    replies = [f"reply {i}" for i in range(600)]
    vectors = {t: v / np.linalg.norm(v) for t, v in
               ((t, rng.normal(size=8)) for t in [*contexts, *replies, *map(last_turn, contexts)])}

    class Encoder:
        def encode(self, batch, batch_size=128):
            return np.stack([vectors[t] for t in batch])

    cosine = np.array([vectors[last_turn(c)] @ vectors[r] for c, r in zip(contexts, replies)])

    def rebuilt(features):  # R² of the cosine from the features, on pairs the regression did not see
        fit = LinearRegression().fit(features[:400], cosine[:400])
        return fit.score(features[400:], cosine[400:])

    assert rebuilt(pair_matrix(Encoder(), contexts, replies, message=True)) > 0.99
    assert rebuilt(pair_matrix(Encoder(), contexts, replies, message=False)) < 0.2


def test_a_rerun_reads_the_judges_embeddings_from_the_cache(sample_pack, tmp_path):
    """The fit's lines are embedded once: a second fit with the same cache embeds nothing and fits the same judges;
    a damaged cache is recomputed."""
    from rolecast.models.embeddings import embedder

    class Counting:
        def __init__(self):
            self.inner, self.texts = embedder(), 0
            self.dim, self.key = self.inner.dim, self.inner.key

        def encode(self, texts):
            self.texts += len(texts)
            return self.inner.encode(texts)

    first_encoder, second_encoder = Counting(), Counting()
    first = Judges.fit(Pack.open(sample_pack), encoder=first_encoder, cache=tmp_path)
    first.encoder.save()
    [saved] = tmp_path.glob("embeddings-*.npz")
    second = Judges.fit(Pack.open(sample_pack), encoder=second_encoder, cache=tmp_path)
    assert first_encoder.texts > 100 and second_encoder.texts == 0
    assert (first.style_validation, first.coherence_validation) == (second.style_validation, second.coherence_validation)
    saved.write_bytes(b"not an npz")
    third_encoder = Counting()
    third = Judges.fit(Pack.open(sample_pack), encoder=third_encoder, cache=tmp_path)
    assert third_encoder.texts == first_encoder.texts and third.coherence_validation == first.coherence_validation
