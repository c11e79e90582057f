"""rolecast export: the PEFT adapter as a GGUF LoRA that llama.cpp applies like PEFT does.

The slow tests train a LoRA on every attention and MLP projection of the default model
(eight steps of ``rolecast train`` on the sample pack, at a rate high enough to move the
model), export it, and compare next-token distributions over the same 50 tokens: PEFT on
transformers against llama.cpp with the GGUF LoRA, and each against its base.
"""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

from conftest import SAMPLE_SCRIPT, TINY_ARCHS, tiny_gguf
from rolecast.errors import ModelError, PackError
from rolecast.pack import Pack
from rolecast.settings import PrepareSettings
from rolecast.training.export import export, permute_rows

os.environ.setdefault("HF_HUB_OFFLINE", "1")

TEXT = ("Maggie wiped the counter and looked out at the harbour. The boats were late again, and the fog was coming in "
        "over the sea wall. Cyril, she said, you daft article, sit down before you fall down and eat your toast. "
        "Nobody is going out in this weather, not even Bertie.")
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@pytest.fixture(scope="module")
def sample_pack(tmp_path_factory):
    from rolecast.prepare import prepare

    out = tmp_path_factory.mktemp("export") / "maggie"
    prepare([SAMPLE_SCRIPT], PrepareSettings(character="Maggie", show="Harbor Lights", style=False, index=False), out)
    return out


def test_permute_rows_matches_llama_cpp_layout():
    # Rows of each head [r0 r1 r2 r3] (two rotary halves) come out interleaved [r0 r2 r1 r3].
    w = np.arange(8).reshape(8, 1)
    assert permute_rows(w, 2).ravel().tolist() == [0, 2, 1, 3, 4, 6, 5, 7]
    assert permute_rows(w, 4, 2).ravel().tolist() == [0, 2, 1, 3, 4, 6, 5, 7]


def test_export_without_adapter_names_the_command(sample_pack, tmp_path):
    pack = tmp_path / "p"
    shutil.copytree(sample_pack, pack)
    with pytest.raises(PackError, match="rolecast train"):
        export(pack)


def test_unknown_merged_type_is_refused(sample_pack, tmp_path):
    pack = tmp_path / "p"
    shutil.copytree(sample_pack, pack)
    (pack / "adapter").mkdir()
    with pytest.raises(ModelError, match="q8_0, f16"):
        export(pack, merged="q4")


# ----------------------------------------------------------------------------- against llama.cpp


@pytest.fixture(scope="module")
def trained_lora(sample_pack, tmp_path_factory):
    """The sample pack with a LoRA trained by rolecast train (a few steps at a high rate, to move the model)."""
    pytest.importorskip("torch")
    peft = pytest.importorskip("peft")
    from rolecast.models.base_model import load_model, resolve_base
    from rolecast.settings import TrainSettings
    from rolecast.training.sft import train

    pack_dir = tmp_path_factory.mktemp("lora") / "maggie"
    shutil.copytree(sample_pack, pack_dir)
    train(pack_dir, TrainSettings(max_steps=8, batch_size=4, learning_rate=3e-3, max_context_turns=2,
                                  max_eval_examples=0, early_stopping_patience=0), progress=False)
    source, kwargs, gguf = resolve_base(None)
    model = peft.PeftModel.from_pretrained(load_model(source, kwargs, "cpu", qlora=False), str(pack_dir / "adapter"))
    model.eval()
    return Pack.open(pack_dir), model, gguf


def _softmax(logits):
    z = logits - logits.max(axis=-1, keepdims=True)
    p = np.exp(z)
    return p / p.sum(axis=-1, keepdims=True)


def _compare(p_logits, q_logits) -> tuple[float, float]:
    """(top-1 agreement, mean KL(p || q)) over positions."""
    p, q = _softmax(p_logits.astype(np.float64)), _softmax(q_logits.astype(np.float64))
    kl = (p * (np.log(p + 1e-30) - np.log(q + 1e-30))).sum(axis=-1)
    return float((p_logits.argmax(-1) == q_logits.argmax(-1)).mean()), float(kl.mean())


def _llama_logits(model_path, tokens, lora=None):
    llama_cpp = pytest.importorskip("llama_cpp")
    kwargs = {"lora_path": str(lora)} if lora else {}
    llm = llama_cpp.Llama(model_path=str(model_path), n_ctx=256, logits_all=True, verbose=False,
                          n_threads=os.cpu_count() or 1, **kwargs)
    try:
        llm.eval(tokens)
        return np.array(llm.scores[: len(tokens)], dtype=np.float32)
    finally:
        llm.close()


def _tokens(model_path) -> list[int]:
    import llama_cpp

    vocab_only = llama_cpp.Llama(model_path=str(model_path), vocab_only=True, verbose=False)
    try:
        return vocab_only.tokenize(TEXT.encode(), add_bos=False)[:50]
    finally:
        vocab_only.close()


def _agreement(model, base_gguf, adapter_gguf) -> dict[str, float]:
    """PEFT against llama.cpp with the GGUF LoRA over the same 50 tokens, each against its base; asserts they agree."""
    import torch

    tokens = _tokens(base_gguf)
    assert len(tokens) == 50
    with torch.no_grad():
        ids = torch.tensor([tokens])
        peft_logits = model(input_ids=ids).logits[0].float().numpy()
        with model.disable_adapter():
            base_logits = model(input_ids=ids).logits[0].float().numpy()
    llama_lora = _llama_logits(base_gguf, tokens, adapter_gguf)
    llama_base = _llama_logits(base_gguf, tokens)
    figures = dict(zip(("top1", "kl"), _compare(peft_logits, llama_lora)))
    figures.update(zip(("base_top1", "base_kl"), _compare(base_logits, llama_base)))
    figures.update(zip(("moved_top1", "moved_kl"), _compare(peft_logits, base_logits)))
    figures["llama_moved_kl"] = _compare(llama_lora, llama_base)[1]
    return figures


def _assert_agree(f: dict[str, float]) -> None:
    assert f["top1"] >= 0.9 and f["kl"] < 0.05
    assert f["moved_top1"] < 0.8 and f["moved_kl"] > 10 * f["kl"]  # the adapter changes the distribution far beyond the mismatch
    assert f["llama_moved_kl"] > 10 * f["kl"]  # and llama.cpp really applies it


def _report(f: dict[str, float]) -> str:
    return (f"PEFT vs llama.cpp+GGUF LoRA: top-1 {f['top1']:.3f}, mean KL {f['kl']:.4f}; bases: top-1 {f['base_top1']:.3f}, "
            f"KL {f['base_kl']:.4f}; LoRA vs base: top-1 {f['moved_top1']:.3f}, KL {f['moved_kl']:.3f}")


@pytest.mark.slow
def test_gguf_lora_matches_peft_in_llama_cpp(trained_lora, capsys):
    pack, model, base_gguf = trained_lora
    paths = export(pack.path)
    assert paths["adapter_gguf"] == pack.path / "adapter.gguf"
    assert "adapter_gguf" in Pack.open(pack.path).info["parts"]
    figures = _agreement(model, base_gguf, paths["adapter_gguf"])
    with capsys.disabled():
        print("\n" + _report(figures))
    _assert_agree(figures)


@pytest.mark.slow
@pytest.mark.parametrize("arch", sorted(TINY_ARCHS))
def test_every_architecture_trains_on_its_gguf_and_its_lora_agrees_in_llama_cpp(arch, sample_pack, spm_tokenizer,
                                                                                llama_converter, tmp_path, capsys):
    """--base FILE.gguf for each family (the file written by llama.cpp's own converter from a tiny random model):
    rolecast train dequantizes it, export writes the GGUF LoRA against it, llama.cpp applies it as PEFT does."""
    peft = pytest.importorskip("peft")
    from rolecast.models.base_model import check_lora, load_model, resolve_base
    from rolecast.settings import TrainSettings
    from rolecast.training.sft import train

    base = tiny_gguf(arch, tmp_path, spm_tokenizer, llama_converter)
    pack_dir = tmp_path / "pack"
    shutil.copytree(sample_pack, pack_dir)
    train(pack_dir, TrainSettings(base=str(base), max_steps=8, batch_size=2, learning_rate=1e-2, max_length=192,
                                  max_context_turns=2, max_eval_examples=0, early_stopping_patience=0), progress=False)
    adapter_gguf = export(pack_dir)["adapter_gguf"]
    check_lora(adapter_gguf, base)  # what the llamacpp backend checks before llama.cpp sees the files
    source, kwargs, _ = resolve_base(str(base))
    model = peft.PeftModel.from_pretrained(load_model(source, kwargs, "cpu", qlora=False), str(pack_dir / "adapter")).eval()
    figures = _agreement(model, base, adapter_gguf)
    with capsys.disabled():
        print(f"\n{arch}: " + _report(figures))
    _assert_agree(figures)
    assert figures["base_top1"] >= 0.9 and figures["base_kl"] < 0.05  # transformers reads the GGUF as llama.cpp does


@pytest.mark.slow
def test_merged_q8_0_matches_peft(trained_lora, capsys):
    import torch

    pack, model, base_gguf = trained_lora
    merged = export(pack.path, merged="q8_0")["merged"]
    assert merged.name == "merged-q8_0.gguf" and merged.stat().st_size > 100_000_000
    tokens = _tokens(base_gguf)
    with torch.no_grad():
        peft_logits = model(input_ids=torch.tensor([tokens])).logits[0].float().numpy()
    top1, kl = _compare(peft_logits, _llama_logits(merged, tokens))
    with capsys.disabled():
        print(f"\nPEFT vs merged Q8_0 GGUF in llama.cpp: top-1 {top1:.3f}, mean KL {kl:.4f}")
    assert top1 >= 0.9 and kl < 0.05


@pytest.mark.slow
def test_q_and_k_rows_are_permuted_like_the_base_gguf(trained_lora):
    """The permutation export applies to lora_B is the one between transformers' weights and the GGUF's."""
    import gguf

    pack, model, base_gguf = trained_lora
    reader = gguf.GGUFReader(base_gguf)
    stored = {t.name: gguf.quants.dequantize(t.data, t.tensor_type) for t in reader.tensors if t.name.startswith("blk.0.attn_")}
    attn = model.get_base_model().model.layers[0].self_attn
    q = attn.q_proj.base_layer.weight.detach().numpy()
    k = attn.k_proj.base_layer.weight.detach().numpy()
    assert np.allclose(permute_rows(q, 9), stored["blk.0.attn_q.weight"], atol=1e-6)
    assert np.allclose(permute_rows(k, 9, 3), stored["blk.0.attn_k.weight"], atol=1e-6)
    assert not np.allclose(q, stored["blk.0.attn_q.weight"], atol=1e-3)


def test_the_cli_reports_a_missing_adapter_in_one_line(sample_pack, tmp_path, capsys):
    from rolecast.cli import main

    pack = tmp_path / "p"
    shutil.copytree(sample_pack, pack)
    assert main(["export", str(pack)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: the pack") and "rolecast train" in err and "\n" not in err
