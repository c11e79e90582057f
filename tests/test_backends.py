"""Backends: the registry, llama.cpp, transformers (on the bundled GGUF) and an OpenAI-compatible server.

The real-model tests are marked slow. Each backend is loaded once per module and runs on one
thread: on a shared two-core machine, two threads that wait on each other are many times slower.
The openai backend is tested against a real llama_cpp.server started here, and against a mock
transport for what that server cannot show (401, 5xx, a server that refuses extra fields, vLLM).
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from rolecast.backends import backend_class
from rolecast.errors import BackendError, MissingExtraError, ModelError, SettingsError
from rolecast.settings import BackendSettings, GenerationSettings

MESSAGES = [
    {"role": "system", "content": "You are Bob, a grumpy old fisherman."},
    {"role": "user", "content": "How was the catch today?"},
]
GREEDY = GenerationSettings(temperature=0, max_tokens=24)


def stop_after_words(text: str, k: int = 3) -> str:
    """A stop string that first occurs after the k-th word of ``text``."""
    words = text.split()
    assert len(words) > k + 1, f"need a longer reply to place a stop string: {text!r}"
    return " " + words[k]


# ----------------------------------------------------------------------------- registry


def test_registry_resolves_the_three_backends():
    names = {name: backend_class(name).__name__ for name in ("llamacpp", "transformers", "openai")}
    assert names == {"llamacpp": "LlamaCppBackend", "transformers": "TransformersBackend", "openai": "OpenAIBackend"}


def test_registry_rejects_an_unknown_backend():
    with pytest.raises(SettingsError) as err:
        backend_class("vllm")
    message = str(err.value)
    assert message.startswith("unknown backend 'vllm'; valid backends: "), message
    for name in ("llamacpp", "openai", "transformers"):
        assert name in message, f"{name} missing from: {message}"


# ----------------------------------------------------------------------------- llama.cpp


@pytest.fixture(scope="module")
def llama():
    pytest.importorskip("llama_cpp")
    from rolecast.backends.llamacpp import LlamaCppBackend

    backend = LlamaCppBackend(BackendSettings(threads=1))
    yield backend
    backend.close()


def test_llamacpp_refuses_a_file_that_is_not_gguf(tmp_path):
    pytest.importorskip("llama_cpp")
    from rolecast.backends.llamacpp import LlamaCppBackend

    path = tmp_path / "model.gguf"
    path.write_bytes(b"PK\x03\x04 not a gguf")
    with pytest.raises(ModelError, match="is not a GGUF file"):
        LlamaCppBackend(BackendSettings(model=str(path)))


def test_llamacpp_refuses_a_missing_file(tmp_path):
    pytest.importorskip("llama_cpp")
    from rolecast.backends.llamacpp import LlamaCppBackend

    with pytest.raises(ModelError, match="model file not found"):
        LlamaCppBackend(BackendSettings(model=str(tmp_path / "absent.gguf")))


@pytest.mark.slow
def test_llamacpp_greedy_is_deterministic(llama):
    first = llama.complete(MESSAGES, GREEDY)[0]
    second = llama.complete(MESSAGES, GREEDY)[0]
    assert first.text, "greedy decoding produced nothing"
    assert first.text == second.text, f"greedy differs between calls: {first.text!r} vs {second.text!r}"


@pytest.mark.slow
def test_llamacpp_returns_n_candidates(llama):
    out = llama.complete(MESSAGES, GenerationSettings(max_tokens=12, seed=3), n=3)
    assert len(out) == 3, f"asked for 3 candidates, got {len(out)}"
    assert all(c.text and c.tokens > 0 for c in out), f"an empty candidate: {out}"


@pytest.mark.slow
def test_llamacpp_candidates_stop_when_cancelled(llama):
    import threading

    settings = GenerationSettings(max_tokens=200, seed=3, temperature=1.0, stop=[])
    cancel = threading.Event()
    cancel.set()  # set before the first token: nothing more is decoded, and the cache is left usable
    out = llama.complete(MESSAGES, settings, n=3, cancel=cancel)
    assert [c.finish_reason for c in out] == ["cancelled"] * 3 and all(c.tokens == 0 for c in out), out
    assert llama.complete(MESSAGES, GenerationSettings(max_tokens=8, seed=3), n=2)[0].tokens > 0


@pytest.mark.slow
def test_llamacpp_decodes_fewer_candidates_when_a_long_prompt_leaves_no_room():
    """The sample pack's eval crashed with 'llama_decode returned 1': four candidates of a long probe overflowed."""
    pytest.importorskip("llama_cpp")
    from rolecast.backends.llamacpp import LlamaCppBackend

    backend = LlamaCppBackend(BackendSettings(threads=1, n_ctx=512))
    try:
        settings = GenerationSettings(max_tokens=64, seed=3, temperature=1.0)
        messages = [{"role": "user", "content": "Tell me everything. " * 90}]
        assert 512 - 64 - 60 < backend.count_tokens(messages) < 512 - 64, backend.count_tokens(messages)
        out = backend.complete(messages, settings, n=4)
        assert 1 <= len(out) < 4, "the four candidates cannot each have 64 tokens beside this prompt"
        assert backend.complete([{"role": "user", "content": "Hi."}], settings, n=4).__len__() == 4
    finally:
        backend.close()


@pytest.mark.slow
def test_llamacpp_stream_joins_to_the_completion(llama):
    settings = GREEDY.updated(seed=7)
    pieces = list(llama.stream(MESSAGES, settings))
    assert len(pieces) > 1, f"expected several pieces, got {pieces}"
    assert "".join(pieces) == llama.complete(MESSAGES, settings)[0].text


@pytest.mark.slow
def test_llamacpp_stop_string_cuts(llama):
    full = llama.complete(MESSAGES, GREEDY)[0].text
    stop = stop_after_words(full)
    cut = llama.complete(MESSAGES, GREEDY.updated(stop=[stop]))[0]
    assert cut.text == full[:full.index(stop)], f"stop {stop!r} should cut {full!r}"
    assert cut.finish_reason == "stop"
    assert "".join(llama.stream(MESSAGES, GREEDY.updated(stop=[stop]))) == cut.text


@pytest.mark.slow
def test_llamacpp_dry_penalises_a_repeat(llama):
    import ctypes

    import llama_cpp

    tokens = llama.model.tokenize(b"the cat sat on the mat. the cat sat on the", add_bos=False, special=False)
    sampler = llama._sampler(GREEDY.updated(repeat_penalty=1.0), 0)
    for token in tokens:
        llama_cpp.llama_sampler_accept(sampler.sampler, token)
    n_vocab = llama_cpp.llama_vocab_n_tokens(llama.vocab)
    data = (llama_cpp.llama_token_data * n_vocab)(*[llama_cpp.llama_token_data(i, 0.0, 0.0) for i in range(n_vocab)])
    array = llama_cpp.llama_token_data_array(data=data, size=n_vocab, selected=-1, sorted=False)
    llama_cpp.llama_sampler_apply(sampler.sampler, ctypes.byref(array))
    mat = llama.model.tokenize(b" mat", add_bos=False, special=False)[0]
    assert mat in tokens, "' mat' is one token in the text"
    assert data[mat].logit < 0, "DRY should penalise ' mat', which would continue the repeat"


# ----------------------------------------------------------------------------- DRY and penalties (no model)


BREAKERS = frozenset({99})


def test_dry_penalises_the_token_that_continues_a_repeat():
    from rolecast.backends.hf import dry_penalties

    # ... 1 2 3 4 | ... 1 2 3: the suffix "1 2 3" occurred before, followed by 4.
    assert dry_penalties([1, 2, 3, 4, 99, 1, 2, 3], 0.8, 1.75, 2, BREAKERS) == {4: pytest.approx(0.8 * 1.75)}
    # Match length 4 → exponent 2.
    assert dry_penalties([5, 1, 2, 3, 4, 5, 1, 2, 3], 0.8, 1.75, 2, BREAKERS) == {4: pytest.approx(0.8 * 1.75**2)}


def test_dry_keeps_the_longest_match_per_token_and_overlapping_matches():
    from rolecast.backends.hf import dry_penalties

    # "3" alone is followed by 8 (match 1: allowed); "1 2 3" is followed by 4 (match 3).
    assert dry_penalties([7, 3, 8, 1, 2, 3, 4, 0, 1, 2, 3], 1.0, 2.0, 2, BREAKERS) == {4: 2.0}
    # A run of one token matches itself shifted by one.
    assert dry_penalties([6, 6, 6, 6], 1.0, 2.0, 2, BREAKERS) == {6: 2.0}


def test_dry_matches_stop_at_sequence_breakers():
    from rolecast.backends.hf import dry_penalties

    # The match "99 2 3" would be 3 long, but 99 breaks it: length 2.
    assert dry_penalties([1, 99, 2, 3, 4, 1, 99, 2, 3], 0.8, 1.75, 2, BREAKERS) == {4: pytest.approx(0.8)}
    assert dry_penalties([1, 2, 99, 1, 2, 99], 0.8, 1.75, 1, BREAKERS) == {}, "nothing after a breaker"
    assert dry_penalties([1, 2, 99, 1, 2], 0.8, 1.75, 1, BREAKERS) == {}, "a breaker is never penalised"


def test_dry_allows_short_repeats():
    from rolecast.backends.hf import dry_penalties

    assert dry_penalties([1, 2, 3, 1, 2], 0.8, 1.75, 3, BREAKERS) == {}
    assert dry_penalties([1, 2, 3, 1, 2], 0.8, 1.75, 2, BREAKERS) == {3: pytest.approx(0.8)}


def test_dry_processor_ignores_the_prompt_and_penalises_each_row():
    torch = pytest.importorskip("torch")
    from rolecast.backends.hf import DryProcessor

    ids = torch.tensor([[1, 2, 3, 1, 2, 5, 1, 2], [1, 2, 3, 4, 5, 6, 7, 8]])
    scores = torch.zeros(2, 10)
    out = DryProcessor(start=3, multiplier=1.0, base=2.0, allowed_length=2, breakers=BREAKERS)(ids, scores)
    # Row 0 from position 3: "1 2 5 1 2" → 5 continues "1 2"; the prompt's "1 2 3" is not seen.
    assert out[0].tolist() == [0, 0, 0, 0, 0, -1.0, 0, 0, 0, 0]
    assert out[1].tolist() == [0.0] * 10


def test_dry_matches_llama_cpp_on_real_text():
    llama_cpp = pytest.importorskip("llama_cpp")
    import ctypes

    from llama_cpp import _internals

    from rolecast.backends.base import DRY_BREAKERS
    from rolecast.backends.hf import dry_penalties
    from rolecast.models.base_model import default_model_path

    params = llama_cpp.llama_model_default_params()
    params.vocab_only = True
    model = _internals.LlamaModel(path_model=str(default_model_path()), params=params, verbose=False)
    n_vocab = llama_cpp.llama_vocab_n_tokens(model.vocab)
    pieces = [model.token_to_piece(i, special=True).rstrip(b"\0").decode("utf-8", "replace") for i in range(n_vocab)]
    breakers = frozenset(i for i, p in enumerate(pieces) if any(b in p for b in DRY_BREAKERS))
    texts = ["x y z x y z x y z x y", 'He said "no no no" and "no no no" and "no no',
             "one\ntwo three\none\ntwo three\none\ntwo", "Bob: the cat sat on the mat. Bob: the cat sat on the"]
    for text in texts:
        tokens = model.tokenize(text.encode(), add_bos=False, special=False)
        ours = dry_penalties(tokens, 0.8, 1.75, 2, breakers)
        assert _llama_cpp_dry(llama_cpp, ctypes, model, tokens, n_vocab) == pytest.approx(ours), text
    model.close()


def _llama_cpp_dry(llama_cpp, ctypes, model, tokens, n_vocab) -> dict[int, float]:
    from rolecast.backends.base import DRY_BREAKERS

    breakers = (ctypes.c_char_p * len(DRY_BREAKERS))(*[b.encode() for b in DRY_BREAKERS])
    sampler = llama_cpp.llama_sampler_init_dry(model.vocab, 0.8, 1.75, 2, 64, breakers, len(DRY_BREAKERS))
    for token in tokens:
        llama_cpp.llama_sampler_accept(sampler, token)
    data = (llama_cpp.llama_token_data * n_vocab)(*[llama_cpp.llama_token_data(i, 0.0, 0.0) for i in range(n_vocab)])
    array = llama_cpp.llama_token_data_array(data=data, size=n_vocab, selected=-1, sorted=False)
    llama_cpp.llama_sampler_apply(sampler, ctypes.byref(array))
    llama_cpp.llama_sampler_free(sampler)
    return {data[i].id: -data[i].logit for i in range(n_vocab) if data[i].logit != 0}


def test_penalties_follow_llama_cpp():
    torch = pytest.importorskip("torch")
    from rolecast.backends.hf import PenaltyProcessor

    ids = torch.tensor([[0, 0, 0, 1, 1, 2]])  # prompt: three 0s; generated: 1, 1, 2
    scores = torch.tensor([[2.0, 2.0, -2.0, 2.0]])
    out = PenaltyProcessor(start=3, repeat=2.0, frequency=0.5, presence=0.25)(ids, scores)
    # 0: prompt only, untouched; 1: 2/2 - 2*0.5 - 0.25; 2: -2*2 - 0.5 - 0.25; 3: unseen.
    assert out.tolist() == [[2.0, -0.25, -4.75, 2.0]]


# ----------------------------------------------------------------------------- transformers


@pytest.fixture(scope="module")
def hf():
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    pytest.importorskip("gguf")
    from rolecast.backends.hf import TransformersBackend

    threads = torch.get_num_threads()
    backend = TransformersBackend(BackendSettings(backend="transformers", threads=1))
    yield backend
    backend.close()
    torch.set_num_threads(threads)


def test_transformers_reports_a_hub_model_missing_from_the_cache(monkeypatch):
    pytest.importorskip("transformers")
    from rolecast.backends.hf import TransformersBackend

    # setitem then delenv: undoing both removes the variable that the backend sets.
    monkeypatch.setitem(os.environ, "HF_HUB_OFFLINE", "")
    monkeypatch.delenv("HF_HUB_OFFLINE")
    with pytest.raises(ModelError) as err:
        TransformersBackend(BackendSettings(backend="transformers", model="rolecast-tests/no-such-model"))
    assert "not found locally" in str(err.value) and "huggingface-cli download rolecast-tests/no-such-model" in str(err.value)
    assert os.environ.get("HF_HUB_OFFLINE") == "1", "hub ids are looked up offline unless the user says otherwise"


def test_transformers_reports_a_missing_folder_and_a_bad_gguf(tmp_path):
    pytest.importorskip("transformers")
    from rolecast.backends.hf import TransformersBackend

    with pytest.raises(ModelError, match="model folder not found"):
        TransformersBackend(BackendSettings(backend="transformers", model=str(tmp_path / "absent") + "/"))
    bad = tmp_path / "junk.gguf"
    bad.write_bytes(b"junk")
    with pytest.raises(ModelError, match="is not a GGUF file"):
        TransformersBackend(BackendSettings(backend="transformers", model=str(bad)))


@pytest.mark.slow
def test_transformers_counts_the_templated_tokens(hf, llama):
    ids = hf.tokenizer.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=True, return_dict=False)
    assert hf.count_tokens(MESSAGES) == len(ids)
    assert hf.count_tokens(MESSAGES) == llama.count_tokens(MESSAGES), "both backends render the GGUF's template"
    assert hf.n_ctx == 2048, "min(n_ctx 2048, SmolLM2's 8192 positions)"


@pytest.mark.slow
def test_transformers_samples_n_candidates_in_one_generate_call(hf, monkeypatch):
    calls = []
    generate = hf.model.generate

    def counting(*args, **kwargs):
        calls.append(kwargs["generation_config"].num_return_sequences)
        return generate(*args, **kwargs)

    monkeypatch.setattr(hf.model, "generate", counting)
    out = hf.complete(MESSAGES, GenerationSettings(max_tokens=12, seed=5), n=2)
    assert calls == [2], f"expected one generate() call for both candidates, got {calls}"
    assert len(out) == 2 and all(c.text and 0 < c.tokens <= 12 for c in out), out


@pytest.mark.slow
def test_transformers_greedy_is_deterministic(hf):
    first = hf.complete(MESSAGES, GREEDY)[0]
    again = hf.complete(MESSAGES, GREEDY, n=2)
    assert first.text, "greedy decoding produced nothing"
    assert [c.text for c in again] == [first.text] * 2, f"greedy differs between calls: {first.text!r} vs {again}"
    assert (first.tokens, first.finish_reason) == (24, "length")


@pytest.mark.slow
def test_transformers_stream_joins_and_stop_string_cuts(hf):
    full = hf.complete(MESSAGES, GREEDY)[0].text
    assert "".join(hf.stream(MESSAGES, GREEDY)) == full
    stop = stop_after_words(full)
    cut = hf.complete(MESSAGES, GREEDY.updated(stop=[stop]))[0]
    assert cut.text == full[:full.index(stop)], f"stop {stop!r} should cut {full!r}"
    assert cut.finish_reason == "stop" and cut.tokens < 24, cut
    assert "".join(hf.stream(MESSAGES, GREEDY.updated(stop=[stop]))) == cut.text


@pytest.mark.slow
def test_transformers_stream_stops_generating_when_closed(hf, monkeypatch):
    settings = GREEDY.updated(max_tokens=40)
    assert hf.complete(MESSAGES, settings)[0].finish_reason == "length", "the reply must outrun max_tokens"
    generated = []
    generate = hf.model.generate

    def recording(*args, **kwargs):
        out = generate(*args, **kwargs)
        generated.append(out.shape[1] - kwargs["input_ids"].shape[1])
        return out

    monkeypatch.setattr(hf.model, "generate", recording)
    stream = hf.stream(MESSAGES, settings)
    assert next(stream)
    stream.close()
    assert len(generated) == 1 and generated[0] < 40, f"generation ran on after close: {generated}"
    assert not any(t.name == "rolecast-generate" for t in threading.enumerate())
    assert not hf._lock.locked()


@pytest.fixture(scope="module")
def tiny_model(hf, tmp_path_factory):
    """A one-layer random Llama with the bundled model's tokenizer, and a random LoRA for it (folders)."""
    import peft
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    root = tmp_path_factory.mktemp("tiny")
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(hf.tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=512,
                         bos_token_id=1, eos_token_id=2, tie_word_embeddings=True)
    model = LlamaForCausalLM(config)
    model.save_pretrained(root / "model")
    hf.tokenizer.save_pretrained(root / "model")
    # init_lora_weights=False: random B matrices, so the adapter visibly changes the output.
    lora = peft.get_peft_model(model, peft.LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    lora.save_pretrained(root / "lora")
    return root


@pytest.mark.slow
def test_transformers_loads_a_folder_and_a_peft_adapter(tiny_model):
    from rolecast.backends.hf import TransformersBackend

    settings = BackendSettings(backend="transformers", model=str(tiny_model / "model"), threads=1)
    greedy = GREEDY.updated(max_tokens=6, dry_multiplier=0)
    base = TransformersBackend(settings)
    adapted = TransformersBackend(settings, adapter=str(tiny_model / "lora"))
    assert (base.model_name, base.n_ctx) == ("model", 512), "n_ctx is capped by max_position_embeddings"
    plain, tuned = base.complete(MESSAGES, greedy)[0], adapted.complete(MESSAGES, greedy)[0]
    assert plain.tokens == tuned.tokens == 6 and plain.text != tuned.text, f"the adapter changed nothing: {plain}"
    with pytest.raises(ModelError, match="is not a PEFT LoRA folder"):
        TransformersBackend(settings, adapter=str(tiny_model / "model"))


# ----------------------------------------------------------------------------- openai: mock server


def mock_backend(handler, model="m", **settings):
    httpx = pytest.importorskip("httpx2")
    from rolecast.backends.openai import OpenAIBackend

    config = BackendSettings(backend="openai", base_url="http://mock/v1", model=model, **settings)
    backend = OpenAIBackend(config, adapter=config.adapter)
    backend.http = httpx.Client(base_url="http://mock/v1/", transport=httpx.MockTransport(handler))
    return backend


def reply(*texts, finish="stop"):
    choices = [{"index": i, "message": {"role": "assistant", "content": t}, "finish_reason": finish} for i, t in enumerate(texts)]
    return {"choices": choices, "usage": {"completion_tokens": 6 * len(texts)}}


def models_or(answer):
    """A handler that lists model "m" and answers POSTs with ``answer(request, body)``."""
    import httpx2

    def handler(request):
        if request.url.path == "/v1/models":
            return httpx2.Response(200, json={"data": [{"id": "m", "max_model_len": 1024}]})
        body = json.loads(request.content) if request.content else {}
        status, payload = answer(request, body)
        return httpx2.Response(status, json=payload)

    return handler


def test_openai_without_httpx2_names_the_extra(monkeypatch):
    from rolecast.backends.openai import OpenAIBackend

    monkeypatch.setitem(sys.modules, "httpx2", None)
    with pytest.raises(MissingExtraError, match=r"pip install 'rolecast\[chat\]'"):
        OpenAIBackend(BackendSettings(backend="openai"))


def test_openai_sends_n_and_four_stops_and_applies_the_rest():
    bodies = []

    def answer(request, body):
        bodies.append(body)
        return 200, reply("Aye. Fish. STOP5 more", "Nay, STOP5", finish="length")

    backend = mock_backend(models_or(answer))
    settings = GenerationSettings(seed=1, stop=["s1", "s2", "s3", "s4", "STOP5"])
    out = backend.complete(MESSAGES, settings, n=2)
    assert [(c.text, c.finish_reason, c.tokens) for c in out] == [("Aye. Fish. ", "stop", 6), ("Nay, ", "stop", 6)]
    assert len(bodies) == 1 and bodies[0]["n"] == 2 and bodies[0]["stop"] == ["s1", "s2", "s3", "s4"]
    assert (bodies[0]["top_k"], bodies[0]["min_p"], bodies[0]["repeat_penalty"]) == (50, 0.05, 1.1)
    assert backend.n_ctx == 1024, "vLLM's max_model_len caps the context"


def test_openai_asks_again_when_the_server_ignores_n():
    bodies = []

    def answer(request, body):
        bodies.append(body)
        return 200, reply(f"Reply {len(bodies)}.")

    out = mock_backend(models_or(answer)).complete(MESSAGES, GenerationSettings(seed=10), n=3)
    assert [c.text for c in out] == ["Reply 1.", "Reply 2.", "Reply 3."]
    assert [(b["n"], b["seed"]) for b in bodies] == [(3, 10), (2, 10 + 7919), (1, 10 + 2 * 7919)]


def test_openai_drops_extra_fields_a_server_refuses():
    bodies = []

    def answer(request, body):
        bodies.append(body)
        if "top_k" in body:
            return 400, {"error": {"message": "Unrecognized request argument supplied: top_k"}}
        return 200, reply("Fine.")

    backend = mock_backend(models_or(answer))
    assert backend.complete(MESSAGES, GenerationSettings())[0].text == "Fine."
    assert backend.complete(MESSAGES, GenerationSettings())[0].text == "Fine."
    assert ["top_k" in b for b in bodies] == [True, False, False], "refused once, then never sent again"


@pytest.mark.parametrize(("status", "expected"), [
    (401, "refused the API key (HTTP 401: bad key). pass the right key with --backend-key"),
    (503, "cannot reach the model server at http://mock/v1 (HTTP 503: bad key). start it, or check --base-url"),
    (400, "rejected the request (HTTP 400: bad key)"),
])
def test_openai_http_errors(status, expected):
    backend = mock_backend(models_or(lambda request, body: (status, {"error": {"message": "bad key"}})))
    with pytest.raises(BackendError) as err:
        backend.complete(MESSAGES, GenerationSettings())
    assert expected in str(err.value), str(err.value)


def test_openai_reports_a_reply_that_is_not_json():
    import httpx2

    def handler(request):
        if request.url.path == "/v1/models":
            return httpx2.Response(200, json={"data": [{"id": "m"}]})
        return httpx2.Response(200, text="<html>router login</html>")

    with pytest.raises(BackendError, match=r"sent what is not an OpenAI reply \('<html>router login</html>'\)"):
        mock_backend(handler).complete(MESSAGES, GenerationSettings())


def test_openai_unknown_model_lists_the_served_ones():
    backend = mock_backend(models_or(lambda request, body: (200, reply("x"))), model="gpt-5")
    with pytest.raises(ModelError) as err:
        backend.complete(MESSAGES, GenerationSettings())
    assert "model 'gpt-5' is not served at http://mock/v1; it serves: m" in str(err.value)


def test_openai_fails_loudly_when_the_server_does_not_serve_the_lora():
    served = mock_backend(models_or(lambda request, body: (200, reply(body["model"]))), model=None, adapter="house")
    with pytest.raises(ModelError) as err:
        served.complete(MESSAGES, GenerationSettings())
    assert "does not serve the LoRA 'house'; it serves: m" in str(err.value) and "--lora-modules house=" in str(err.value)

    def lists_house(request):
        import httpx2

        if request.url.path == "/v1/models":
            return httpx2.Response(200, json={"data": [{"id": "base"}, {"id": "house"}]})
        return httpx2.Response(200, json=reply(json.loads(request.content)["model"]))

    assert mock_backend(lists_house, model=None, adapter="house").complete(MESSAGES, GenerationSettings())[0].text == "house"


def test_openai_counts_with_vllm_tokenize_and_remembers():
    paths = []

    def answer(request, body):
        paths.append(request.url.path)
        if request.url.path == "/tokenize" and "messages" in body:
            return 200, {"count": 42, "max_model_len": 1024, "tokens": [1] * 42}
        return 404, {"detail": "Not Found"}

    backend = mock_backend(models_or(answer))
    assert backend.count_tokens(MESSAGES) == 42
    assert backend.count_tokens(MESSAGES) == 42
    assert paths == ["/tokenize", "/tokenize"], paths


def test_openai_estimates_tokens_without_a_tokenizer_endpoint():
    from rolecast.backends.openai import estimate_tokens

    backend = mock_backend(models_or(lambda request, body: (404, {"detail": "Not Found"})))
    # (36 / 3.5 → 11) + 4 + (24 / 3.5 → 7) + 4 + 3
    assert backend.count_tokens(MESSAGES) == estimate_tokens(MESSAGES) == 29


def test_openai_reports_a_dead_port():
    pytest.importorskip("httpx2")
    from rolecast.backends.openai import OpenAIBackend

    port = free_port()
    backend = OpenAIBackend(BackendSettings(backend="openai", base_url=f"http://127.0.0.1:{port}/v1"))
    with pytest.raises(BackendError) as err:
        backend.complete(MESSAGES, GREEDY)
    message = str(err.value)
    assert message.startswith(f"cannot reach the model server at http://127.0.0.1:{port}/v1 ("), message
    assert message.endswith("start it, or check --base-url."), message


# ----------------------------------------------------------------------------- openai: llama_cpp.server


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


SERVER_DEPS = ("uvicorn", "fastapi", "sse_starlette", "starlette_context", "pydantic_settings", "httpx2")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A llama_cpp.server on the bundled model; its /v1 URL."""
    pytest.importorskip("llama_cpp")
    missing = [m for m in SERVER_DEPS if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"llama_cpp.server needs {', '.join(missing)}: pip install 'llama-cpp-python[server]'")
    from rolecast.models.base_model import default_model_path

    port, log = free_port(), tmp_path_factory.mktemp("server") / "server.log"
    command = [sys.executable, str(Path(__file__).parent / "llama_server.py"), "--model", str(default_model_path()), "--host", "127.0.0.1",
               "--port", str(port), "--n_ctx", "2048", "--n_threads", "1"]
    with open(log, "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        _wait_for(url + "/models", process, log)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_for(url: str, process: subprocess.Popen, log, seconds: float = 90) -> None:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    deadline = time.monotonic() + seconds
    while True:
        if process.poll() is not None:
            pytest.fail(f"llama_cpp.server exited with {process.returncode}:\n{log.read_text()[-2000:]}")
        try:
            opener.open(url, timeout=2).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                pytest.fail(f"llama_cpp.server did not answer {url} within {seconds} s:\n{log.read_text()[-2000:]}")
            time.sleep(0.3)


@pytest.fixture
def remote(server):
    from rolecast.backends.openai import OpenAIBackend

    backend = OpenAIBackend(BackendSettings(backend="openai", base_url=server))
    yield backend
    backend.close()


@pytest.mark.slow
def test_openai_server_two_candidates(remote, monkeypatch):
    posts = []
    send = remote._send

    def counting(method, url, **kwargs):
        posts.append(url) if method == "POST" else None
        return send(method, url, **kwargs)

    monkeypatch.setattr(remote, "_send", counting)
    out = remote.complete(MESSAGES, GenerationSettings(max_tokens=12, seed=4), n=2)
    assert len(out) == 2 and all(c.text and c.tokens > 0 for c in out), out
    assert posts == ["chat/completions"] * 2, "llama_cpp.server ignores n: the second candidate is a second request"
    assert remote.model_name.endswith("SmolLM2-135M-Instruct.Q4_1.gguf"), remote.model_name


@pytest.mark.slow
def test_openai_server_stream_and_stops(remote):
    full = remote.complete(MESSAGES, GREEDY)[0].text
    pieces = list(remote.stream(MESSAGES, GREEDY))
    assert len(pieces) > 1 and "".join(pieces) == full, pieces
    # Only four stops reach the server: the fifth is applied here.
    stops = ["@@1", "@@2", "@@3", "@@4", stop_after_words(full)]
    cut = remote.complete(MESSAGES, GREEDY.updated(stop=stops))[0]
    assert cut.text == full[:full.index(stops[-1])] and cut.finish_reason == "stop", (cut, full)
    assert "".join(remote.stream(MESSAGES, GREEDY.updated(stop=stops))) == cut.text


@pytest.mark.slow
def test_openai_server_stream_can_be_closed(remote):
    stream = remote.stream(MESSAGES, GREEDY.updated(max_tokens=200))
    assert next(stream)
    stream.close()
    assert remote.complete(MESSAGES, GREEDY.updated(max_tokens=4))[0].text, "the server answers after a closed stream"


@pytest.mark.slow
def test_openai_server_counts_tokens_like_llama_cpp(remote, llama):
    assert remote.count_tokens(MESSAGES) == llama.count_tokens(MESSAGES)
    assert remote._counter.__name__ == "_count_llama_cpp_python"


@pytest.mark.slow
def test_openai_server_wrong_model_name(server):
    from rolecast.backends.openai import OpenAIBackend

    backend = OpenAIBackend(BackendSettings(backend="openai", base_url=server, model="no-such-model"))
    with pytest.raises(ModelError) as err:
        backend.complete(MESSAGES, GREEDY)
    message = str(err.value)
    assert message.startswith(f"model 'no-such-model' is not served at {server}; it serves: "), message
    assert "SmolLM2-135M-Instruct.Q4_1.gguf" in message, message
