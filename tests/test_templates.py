"""Every tested family's real chat template through training rows, the masker and a chat prompt.

The templates are the official ones (tests/fixtures/templates/SOURCES.md says where each comes
from); the tokenizer is a byte-level one carrying the family's special tokens, so that a mask
decodes back to exactly the text it covers.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from rolecast.models.templates import SCENE_START, ChatTemplate, TemplateError

TEMPLATES = Path(__file__).parent / "fixtures" / "templates"
#: fixture → (bos, eos, the family's special tokens)
FAMILIES = {
    "meta-llama-Llama-3.1-8B-Instruct": ("<|begin_of_text|>", "<|eot_id|>", ["<|start_header_id|>", "<|end_header_id|>"]),
    "meta-llama-Llama-3.2-3B-Instruct": ("<|begin_of_text|>", "<|eot_id|>", ["<|start_header_id|>", "<|end_header_id|>"]),
    "mistralai-Mistral-7B-Instruct-v0.3": ("<s>", "</s>", ["[INST]", "[/INST]"]),
    "mistralai-Mistral-Nemo-Instruct-2407": ("<s>", "</s>", ["[INST]", "[/INST]"]),
    "Qwen-Qwen2.5-7B-Instruct": ("", "<|im_end|>", ["<|im_start|>"]),
    "Qwen-Qwen3-0.6B": ("", "<|im_end|>", ["<|im_start|>", "<think>", "</think>"]),
    "google-gemma-2-2b-it": ("<bos>", "<eos>", ["<start_of_turn>", "<end_of_turn>"]),
    "google-gemma-3-1b-it": ("<bos>", "<eos>", ["<start_of_turn>", "<end_of_turn>"]),
    "microsoft-Phi-3.5-mini-instruct": ("<s>", "<|endoftext|>", ["<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]),
    "microsoft-Phi-3-mini-4k-instruct-early": ("<s>", "<|endoftext|>", ["<|user|>", "<|assistant|>", "<|end|>"]),
    "llama-cpp-microsoft-Phi-4-mini-instruct": ("", "<|endoftext|>", ["<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]),
    "HuggingFaceTB-SmolLM2-135M-Instruct": None,  # the bundled GGUF's own template and tokenizer
}
#: What each template cannot take as it is, which rolecast works around.
FOLDS_SYSTEM = {"google-gemma-2-2b-it", "mistralai-Mistral-7B-Instruct-v0.3", "mistralai-Mistral-Nemo-Instruct-2407",
                "microsoft-Phi-3-mini-4k-instruct-early"}
STRICT = {"google-gemma-2-2b-it", "google-gemma-3-1b-it", "mistralai-Mistral-7B-Instruct-v0.3",
          "mistralai-Mistral-Nemo-Instruct-2407"}

SYSTEM = "You are House. Stay in character."
SCENE = [  # a scene as the training rows have it: others as (named) user turns, the character's lines as assistant
    {"role": "system", "content": SYSTEM},
    {"role": "user", "content": "Wilson: You took the case?"},
    {"role": "user", "content": "Cuddy: He took the case."},
    {"role": "assistant", "content": "I took the case. It's not lupus."},
    {"role": "user", "content": "Wilson: It's never lupus."},
    {"role": "assistant", "content": "Once it was."},
]


def byte_tokenizer(bos: str, eos: str, specials: list[str], template: str):
    """A fast byte-level tokenizer with the family's special tokens (each one token, as in the real vocabulary)."""
    tokenizers = pytest.importorskip("tokenizers")
    transformers = pytest.importorskip("transformers")
    alphabet = tokenizers.pre_tokenizers.ByteLevel.alphabet()
    model = tokenizers.models.BPE(vocab={c: i for i, c in enumerate(sorted(alphabet))}, merges=[])
    tok = tokenizers.Tokenizer(model)
    tok.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = tokenizers.decoders.ByteLevel()
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=bos or None, eos_token=eos,
                                                additional_special_tokens=[s for s in specials if s not in (bos, eos)])
    fast.chat_template = template
    return fast


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def family(request, tokenizer_of_default):
    name = request.param
    if FAMILIES[name] is None:
        return name, tokenizer_of_default
    bos, eos, specials = FAMILIES[name]
    return name, byte_tokenizer(bos, eos, [bos, eos, *specials] if bos else [eos, *specials],
                                (TEMPLATES / f"{name}.jinja").read_text())


@pytest.fixture(scope="module")
def tokenizer_of_default():
    pytest.importorskip("transformers")
    from rolecast.models.base_model import load_tokenizer, resolve_base

    source, kwargs, _ = resolve_base(None)
    return load_tokenizer(source, kwargs)


def test_every_fixture_is_listed():
    assert {p.stem for p in TEMPLATES.glob("*.jinja")} == {n for n, v in FAMILIES.items() if v is not None}


def test_what_each_template_refuses_is_probed_not_named(family):
    name, tokenizer = family
    template = ChatTemplate.of_tokenizer(tokenizer, name)
    assert template.folds_system == (name in FOLDS_SYSTEM)
    assert template.strict == (name in STRICT)


def test_the_mask_covers_exactly_each_reply_and_its_end_marker(family):
    from rolecast.training.data import Masker

    name, tokenizer = family
    masker = Masker(tokenizer)
    ids, mask, ends = masker(SCENE)
    assert len(ids) == len(mask) and len(ends) == len(SCENE)
    runs, current = [], []
    for token, on in zip(ids, mask):
        if on:
            current.append(token)
        elif current:
            runs.append(current)
            current = []
    if current:
        runs.append(current)
    decoded = [tokenizer.decode(run) for run in runs]
    replies = [m["content"] for m in SCENE if m["role"] == "assistant"]
    assert len(decoded) == len(replies), decoded
    marker = masker.template.tail.strip()
    for text, reply in zip(decoded, replies):
        assert text.strip().startswith(reply), (name, text)
        rest = text.strip()[len(reply):]
        assert rest and marker.startswith(rest.split("\n")[0]) or rest.startswith(marker.split("\n")[0]), (name, text)
    whole = tokenizer.decode(ids)
    assert SYSTEM in whole, "the system turn is in every row, folded or not"
    assert ends == sorted(ends) or masker.template.strict, "turn ends run forward"


def test_a_reply_row_has_the_loss_on_its_reply_alone(family):
    from rolecast.training.data import Masker

    name, tokenizer = family
    ids, mask, _ = Masker(tokenizer)(SCENE, only_last=True)
    masked = tokenizer.decode([t for t, on in zip(ids, mask) if on])
    assert masked.strip().startswith("Once it was.") and "lupus" not in masked, (name, masked)


def test_the_chat_prompt_is_what_training_put_before_the_last_reply(family):
    """What the model is asked at chat time is, to the character, the text it learned the last reply after."""
    name, tokenizer = family
    template = ChatTemplate.of_tokenizer(tokenizer, name)
    text, turns = template.layout(SCENE)
    last = [t for t in turns if t.role == "assistant"][-1]
    prompt = template.render(SCENE[:-1], generation=True)
    assert text[:last.span[0]] == prompt, name
    assert SYSTEM in prompt
    assert "<think>" not in prompt or "<think>\n\n</think>" in prompt, "Qwen3 answers without thinking"


def test_a_conversation_the_character_opens_renders_on_strict_templates(family):
    name, tokenizer = family
    template = ChatTemplate.of_tokenizer(tokenizer, name)
    opened = [{"role": "system", "content": SYSTEM}, {"role": "assistant", "content": "Clinic duty. Again."},
              {"role": "user", "content": "Good morning."}, {"role": "system", "content": "Reply briefly."}]
    prompt = template.render(opened, generation=True)
    assert "Clinic duty. Again." in prompt and "Reply briefly." in prompt
    if template.strict:
        assert SCENE_START in prompt


def test_llama3_renders_one_date_whatever_the_day():
    template = ChatTemplate((TEMPLATES / "meta-llama-Llama-3.2-3B-Instruct.jinja").read_text(), "<|begin_of_text|>",
                            "<|eot_id|>", "llama")
    assert "Today Date: 26 Jul 2024" in template.render(SCENE[:2], generation=True)


@pytest.mark.parametrize("source, why", [
    ("{{ raise_exception('nope') }}", "fails on a plain conversation"),
    ("{% for m in messages %}{{ m['content'] }}{% endfor %}", "no end marker"),
    ("{% for m in messages %}{{ m['content'] }}<end>{% endfor %}{% if add_generation_prompt %}<reply>{% endif %}",
     "generation prompt"),
    ("{% for m in messages %}", "does not compile"),
])
def test_a_template_rolecast_cannot_use_is_refused_in_one_line_naming_it(source, why):
    with pytest.raises(TemplateError) as caught:
        ChatTemplate(source, name="acme/odd-model")
    message = str(caught.value)
    assert "acme/odd-model" in message and why in message and "\n" not in message


def test_training_refuses_such_a_base_before_loading_the_model(tmp_path, short_pack, monkeypatch):
    """The check runs right after the tokenizer loads: no model weights are read for a base that cannot chat."""
    pytest.importorskip("transformers")
    from rolecast.settings import TrainSettings
    from rolecast.training import sft as train_module

    tokenizer = byte_tokenizer("<s>", "</s>", [], "{{ raise_exception('no chat here') }}")
    monkeypatch.setattr(train_module, "load_tokenizer", lambda source, kwargs: tokenizer)
    monkeypatch.setattr(train_module, "load_model", lambda *a, **k: pytest.fail("the model loaded"))
    with pytest.raises(TemplateError, match="cannot be used"):
        train_module.train(short_pack, TrainSettings(max_steps=1), progress=False)


@pytest.mark.slow
@pytest.mark.parametrize("arch, fixture", [("gemma2", "google-gemma-2-2b-it"), ("qwen3", "Qwen-Qwen3-0.6B"),
                                           ("llama", "meta-llama-Llama-3.2-3B-Instruct")])
def test_llama_cpp_chats_on_a_gguf_carrying_the_real_template(arch, fixture, tmp_path, spm_tokenizer, llama_converter):
    """A tiny random base of the architecture, converted by llama.cpp's own converter with the family's template in
    its metadata: the llamacpp backend renders a system-led conversation (Gemma 2 raised before) and answers."""
    import json

    from conftest import tiny_model
    from rolecast.backends.llamacpp import LlamaCppBackend
    from rolecast.settings import BackendSettings, GenerationSettings

    folder = tiny_model(arch, tmp_path / arch, spm_tokenizer)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    (folder / "tokenizer_config.json").write_text(json.dumps({**config, "chat_template": (TEMPLATES / f"{fixture}.jinja").read_text()}))
    backend = LlamaCppBackend(BackendSettings(model=str(llama_converter(folder, tmp_path / "gguf" / f"{arch}.gguf")), n_ctx=512))
    try:
        assert backend.template.source == (TEMPLATES / f"{fixture}.jinja").read_text()
        prompt = backend.model.detokenize(backend.prompt_tokens(SCENE[:-1]), special=True).decode()
        assert SYSTEM in prompt and prompt.count("<s>") <= 1
        replies = backend.complete(SCENE[:-1], GenerationSettings(max_tokens=4, seed=1), n=2)
        assert len(replies) == 2
    finally:
        backend.close()
