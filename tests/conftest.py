"""Shared test fixtures: a scripted FakeBackend, paths to fixtures and to ../shared/data.

The FakeBackend queues replies and records every call, so logic tests (prompt
assembly, post-processing, reranking, serving) run without a model.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rolecast.backends import Backend, Completion, Message, register
from rolecast.ingest.script import Line, Script
from rolecast.settings import BackendSettings, GenerationSettings

try:  # tests that load models through llama_cpp.Llama get the parameters the llamacpp backend uses
    from rolecast.backends.llamacpp import guard_amx

    guard_amx()
except ImportError:  # no chat extra: those tests skip
    pass

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"
SAMPLE_SCRIPT = ROOT / "examples" / "sample" / "harbor_lights.txt"
SHARED_DATA = ROOT.parent / "shared" / "data"


def script_of(rows, show: str = "Show") -> Script:
    """An invented script from (episode, scene, speaker, text) rows, indexed in order."""
    return Script(show, [Line(show, ep, scene, i, speaker, text) for i, (ep, scene, speaker, text) in enumerate(rows)])


def make_pack(folder: Path, character: str, speakers=(), greeting: str = "Evening.", avatar: bool = False) -> Path:
    """A minimal pack (card and pack.json, no examples, index or style) for serving tests."""
    import json

    from rolecast.pack import new_pack_info

    folder.mkdir(parents=True)
    card = {"spec": "chara_card_v2", "spec_version": "2.0", "data": {
        "name": character, "description": "", "system_prompt": "You are {{char}}.", "first_mes": greeting,
        "post_history_instructions": "", "extensions": {"rolecast": {"fallback": "Hm."}}}}
    (folder / "card.json").write_text(json.dumps(card))
    (folder / "pack.json").write_text(json.dumps(new_pack_info(character, "Harbor Lights") | {"speakers": list(speakers)}))
    if avatar:
        from PIL import Image

        Image.new("RGB", (32, 48), "teal").save(folder / "avatar.png")
    return folder


class FakeBackend(Backend):
    """A backend that returns queued replies (default "Fine.") and records calls."""

    name = "fake"

    def __init__(self, settings: BackendSettings | None = None, adapter: str | None = None, replies=()):
        super().__init__(settings or BackendSettings(backend="fake"), adapter)
        self.replies: deque[str] = deque(replies)
        self.calls: list[dict] = []

    def queue(self, *replies: str) -> FakeBackend:
        self.replies.extend(replies)
        return self

    def _next(self) -> str:
        return self.replies.popleft() if self.replies else "Fine."

    def count_tokens(self, messages: list[Message]) -> int:
        # Roughly one token per word plus the template's few per message.
        return sum(len(m["content"].split()) + 4 for m in messages)

    def complete(self, messages: list[Message], settings: GenerationSettings, n: int = 1,
                 cancel: Any | None = None) -> list[Completion]:
        self.calls.append({"method": "complete", "messages": messages, "settings": settings, "n": n})
        return [Completion(text, len(text.split())) for text in (self._next() for _ in range(n))]

    def score_reply(self, messages: list[Message], reply: str) -> tuple[float, int]:
        # One nat per word, fewer when the word was said in the prompt: enough to rank prompts.
        seen = {w for m in messages for w in m["content"].lower().split()}
        words = reply.lower().split()
        return -sum(0.5 if w in seen else 1.0 for w in words), len(words)

    def stream(self, messages: list[Message], settings: GenerationSettings) -> Iterator[str]:
        self.calls.append({"method": "stream", "messages": messages, "settings": settings, "n": 1})
        text = self._next()
        words = text.split(" ")
        for i, word in enumerate(words):
            yield word if i == 0 else " " + word


register("fake", FakeBackend)

#: Variables that steer the tests themselves, not rolecast: left alone.
TEST_CONTROLS = {"ROLECAST_REQUIRE_BROWSER", "ROLECAST_SCREENSHOT", "ROLECAST_MIN_VENV"}


@pytest.fixture(autouse=True)
def isolated_settings(monkeypatch, tmp_path_factory):
    """No test sees the developer's ROLECAST_* variables or a ./rolecast.toml: settings come from the test alone."""
    import os

    for name in list(os.environ):
        if name.startswith("ROLECAST_") and name not in TEST_CONTROLS:
            monkeypatch.delenv(name)
    # An empty config file stands in for ./rolecast.toml (a test that wants one passes --config or sets this).
    empty = tmp_path_factory.getbasetemp() / "rolecast-empty.toml"
    empty.touch()
    monkeypatch.setenv("ROLECAST_CONFIG", str(empty))


@pytest.fixture
def fake() -> FakeBackend:
    return FakeBackend()


def needs_shared_data(*parts: str) -> Path:
    """The path under ../shared/data, or skip the test when it is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} not present (the real corpora are only on the developers' machines)")
    return path


@pytest.fixture(scope="session")
def sample_pack(tmp_path_factory) -> Path:
    """The sample character's pack, with its retrieval index and style classifier (built once)."""
    from rolecast.prepare import prepare
    from rolecast.settings import PrepareSettings

    out = tmp_path_factory.mktemp("packs") / "maggie"
    prepare([SAMPLE_SCRIPT], PrepareSettings(character="Maggie", show="Harbor Lights"), out)
    return out


@pytest.fixture(scope="session")
def house_pack(tmp_path_factory) -> Path:
    """House from ../shared/data (skipped where absent), with index and style classifier."""
    from rolecast.prepare import prepare
    from rolecast.settings import PrepareSettings

    files = sorted(needs_shared_data("house-md").glob("season*.csv"))
    out = tmp_path_factory.mktemp("packs") / "house"
    prepare(files, PrepareSettings(character="House"), out)
    return out


@pytest.fixture(scope="session")
def tokenizer():
    """The default base model's tokenizer."""
    from rolecast.models.base_model import load_tokenizer, resolve_base

    source, kwargs, _ = resolve_base(None)
    return load_tokenizer(source, kwargs)


@pytest.fixture(scope="session")
def short_pack(tmp_path_factory):
    """The sample pack, its card cut short so that examples are a few dozen tokens."""
    from rolecast.files import read_json, write_json
    from rolecast.prepare import prepare
    from rolecast.settings import PrepareSettings

    out = tmp_path_factory.mktemp("train") / "maggie"
    prepare([SAMPLE_SCRIPT], PrepareSettings(character="Maggie", show="Harbor Lights", style=False, index=False), out)
    card = read_json(out / "card.json")
    card["data"].update(system_prompt="You are {{char}}.", description="", personality="", scenario="",
                        post_history_instructions="")
    write_json(out / "card.json", card)
    return out


#: Two small layers: every tiny base of the tests trains in seconds.
TINY_SHAPE = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2}


def tiny_llama(folder: Path, tokenizer) -> Path:
    """A two-layer random Llama with ``tokenizer`` saved as an HF folder: a --base that trains in seconds."""
    transformers = pytest.importorskip("transformers")
    transformers.LlamaForCausalLM(transformers.LlamaConfig(vocab_size=len(tokenizer), **TINY_SHAPE)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


# ----------------------------------------------------------------------------- tiny bases of every architecture

#: The SentencePiece vocabulary's special ids; weights larger than transformers' default, so that logits are peaked.
TINY = {**TINY_SHAPE, "initializer_range": 0.1, "max_position_embeddings": 512, "bos_token_id": 1, "eos_token_id": 2,
        "pad_token_id": 0}
#: GGUF architecture family → (transformers config and model class names, what the family sets beyond TINY).
#: Head sizes of 16 and Gemma's attention scale of 16 differ from transformers' GGUF defaults on purpose.
TINY_ARCHS = {
    "llama": ("LlamaConfig", "LlamaForCausalLM", {}),
    "mistral": ("MistralConfig", "MistralForCausalLM", {"sliding_window": None}),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", {}),
    "qwen3": ("Qwen3Config", "Qwen3ForCausalLM", {"head_dim": 16}),
    "gemma2": ("Gemma2Config", "Gemma2ForCausalLM", {"head_dim": 16, "query_pre_attn_scalar": 16, "sliding_window": 64}),
    "gemma3": ("Gemma3TextConfig", "Gemma3ForCausalLM", {"head_dim": 16, "query_pre_attn_scalar": 16, "sliding_window": 64}),
    "phi3": ("Phi3Config", "Phi3ForCausalLM", {"num_key_value_heads": 4}),  # fused qkv_proj and gate_up_proj
}


@pytest.fixture(scope="session")
def spm_tokenizer(tmp_path_factory) -> Path:
    """A 600-piece SentencePiece model of the sample script, with ChatML's markers: the vocabulary every
    architecture's converter takes (Gemma 2 and Phi-3 take no other), as real Llama 2 / Mistral GGUFs have."""
    import io

    spm = pytest.importorskip("sentencepiece")
    lines = [line.split(":", 1)[-1].strip() for line in SAMPLE_SCRIPT.read_text().splitlines() if line.strip()]
    model = io.BytesIO()
    # llama.cpp looks up </s> and <|endoftext|> in a model named like Phi-3.
    spm.SentencePieceTrainer.train(sentence_iterator=iter(lines), model_writer=model, vocab_size=600, model_type="bpe",
                                   byte_fallback=True, character_coverage=1.0, unk_piece="<unk>", bos_piece="<s>",
                                   eos_piece="<|im_end|>", user_defined_symbols=["<|im_start|>", "</s>", "<|endoftext|>"],
                                   minloglevel=2)
    path = tmp_path_factory.mktemp("spm") / "tokenizer.model"
    path.write_bytes(model.getvalue())
    return path


def tiny_model(arch: str, folder: Path, spm: Path) -> Path:
    """A two-layer random model of ``arch`` with the SentencePiece tokenizer and ChatML, saved as an HF folder."""
    import json
    import shutil

    transformers = pytest.importorskip("transformers")
    torch = pytest.importorskip("torch")
    from rolecast.models.templates import CHATML

    config_class, model_class, extra = TINY_ARCHS[arch]
    torch.manual_seed(0)
    config = getattr(transformers, config_class)(vocab_size=600, **{**TINY, **extra})
    getattr(transformers, model_class)(config).save_pretrained(folder)
    shutil.copy(spm, folder / "tokenizer.model")
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "LlamaTokenizer", "chat_template": CHATML, "bos_token": "<s>", "eos_token": "<|im_end|>",
        "unk_token": "<unk>", "add_bos_token": False}))
    return folder


@pytest.fixture(scope="session")
def llama_converter():
    """llama.cpp's convert_hf_to_gguf.py from the installed llama-cpp-python's sdist (make test fetches it)."""
    from llama_converter import convert, converter_script

    pytest.importorskip("llama_cpp")
    if converter_script() is None:
        pytest.skip("llama.cpp's converter is not fetched: python tests/llama_converter.py (make test does)")
    return convert


def tiny_gguf(arch: str, folder: Path, spm: Path, convert) -> Path:
    """A tiny random ``arch`` base as an F32 GGUF written by llama.cpp's converter (in ``folder``/gguf)."""
    model = tiny_model(arch, folder / arch, spm)
    return convert(model, folder / "gguf" / f"{arch}.gguf")  # a folder of its own: no tokenizer.model beside it
