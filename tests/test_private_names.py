"""The dependencies' private names rolecast relies on: each one fails here, by name, on an upgrade that removes it.

A private name can go in any release without notice. Where rolecast patches or reads one, this
test says what to revisit, so the upgrade fails loudly here instead of quietly elsewhere.
"""

from __future__ import annotations

import pytest


def test_trl_use_triton_which_train_patches_on_the_cpu():
    """TRL's chunked LM head (1.16) brought the name; an older TRL has neither and replies_only_head leaves it alone."""
    pytest.importorskip("trl.kernels.chunked_logprob", reason="this TRL has no chunked LM head for training/sft.py to patch")
    utils = pytest.importorskip("trl.trainer.utils")
    assert callable(getattr(utils, "_use_triton", None)), \
        "trl.trainer.utils._use_triton is gone: revisit training/sft.py's replies_only_head (the CPU's chunked loss)"


def test_sft_trainer_total_train_tokens_which_train_reports():
    pytest.importorskip("trl")
    import inspect

    from trl import SFTTrainer

    assert "self._total_train_tokens +=" in inspect.getsource(SFTTrainer), \
        "TRL's SFTTrainer no longer counts _total_train_tokens: revisit training/sft.py's tokens-per-second record"


def test_llama_cpp_internals_the_decode_loop_uses():
    internals = pytest.importorskip("llama_cpp._internals")
    for name in ("LlamaModel", "LlamaContext", "LlamaBatch", "LlamaSampler"):
        assert hasattr(internals, name), f"llama_cpp._internals.{name} is gone: revisit backends/llamacpp.py"
    for method in ("tokenize", "token_to_piece", "metadata", "token_bos", "token_eos", "add_bos_token"):
        assert hasattr(internals.LlamaModel, method), f"LlamaModel.{method} is gone: revisit backends/llamacpp.py"
    import inspect

    assert "self.vocab =" in inspect.getsource(internals.LlamaModel.__init__), \
        "LlamaModel.vocab is gone: revisit backends/llamacpp.py"
    for method in ("decode", "n_ctx", "kv_cache_seq_rm", "kv_cache_seq_cp", "get_logits_ith"):
        assert hasattr(internals.LlamaContext, method), f"LlamaContext.{method} is gone: revisit backends/llamacpp.py"


def test_llama_model_default_params_which_guard_amx_replaces():
    llama_cpp = pytest.importorskip("llama_cpp")
    import llama_cpp.llama_cpp as lib

    assert callable(lib.llama_model_default_params) and callable(llama_cpp.llama_model_default_params), \
        "llama_model_default_params moved: revisit backends/llamacpp.py's guard_amx"
    assert hasattr(lib.llama_model_default_params(), "use_extra_bufts"), \
        "llama_model_params.use_extra_bufts is gone: revisit the AMX guard in backends/llamacpp.py"


def test_gguf_names_that_fast_gguf_loading_swaps():
    gguf = pytest.importorskip("gguf")
    assert isinstance(gguf.GGUFReader, type) and callable(gguf.get_tensor_name_map), \
        "gguf.GGUFReader or gguf.get_tensor_name_map changed: revisit base_model.fast_gguf_loading (transformers " \
        "must still look them up on the gguf module for the memoized ones to be used)"
