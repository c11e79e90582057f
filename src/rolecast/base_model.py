"""The base model a LoRA is trained on: an HF id (local cache), a folder, or a .gguf dequantized by transformers.

    >>> source, kwargs, gguf = resolve_base(None)        # the bundled SmolLM2-135M-Instruct GGUF   # doctest: +SKIP
    >>> model = load_model(source, kwargs, "cpu", qlora=False)                                     # doctest: +SKIP

fp32 on the CPU; bf16 (fp16 before Ampere) on CUDA, or 4-bit NF4 with ``qlora``. A GGUF
base is dequantized to plain weights, since a LoRA wraps ``nn.Linear`` layers, not
GGUF's packed blocks. Failures become one-line :class:`ModelError` messages.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
from pathlib import Path
from typing import Any

from .errors import ModelError, first_line, require
from .files import atomic_dir


def resolve_base(base: str | None) -> tuple[str, dict, Path | None]:
    """``--base`` → (what ``from_pretrained`` takes, its extra arguments, the GGUF file if it is one)."""
    from .backends.hf import resolve_model

    source, kwargs = resolve_model(base)
    gguf = Path(source, kwargs["gguf_file"]) if "gguf_file" in kwargs else None
    return source, kwargs, gguf


def load_tokenizer(source: str, kwargs: dict):
    """The base's tokenizer; a GGUF's is converted once (14 s for SmolLM2) and cached."""
    transformers = require("transformers", "train")
    if "gguf_file" not in kwargs:
        return _from_pretrained(transformers.AutoTokenizer, source, kwargs)
    gguf = Path(source, kwargs["gguf_file"])
    stat = gguf.stat()
    key = hashlib.sha256(f"{gguf.resolve()}:{stat.st_size}:{stat.st_mtime_ns}:{transformers.__version__}".encode()).hexdigest()[:16]
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "rolecast" / "gguf-tokenizers" / key
    if (cache / "tokenizer_config.json").exists():
        return transformers.AutoTokenizer.from_pretrained(str(cache))
    tokenizer = _from_pretrained(transformers.AutoTokenizer, source, kwargs)
    with contextlib.suppress(OSError), atomic_dir(cache) as tmp:  # a read-only home costs the next run the conversion
        tokenizer.save_pretrained(str(tmp))
    return tokenizer


def load_model(source: str, kwargs: dict, device: str, qlora: bool):
    transformers = require("transformers", "train")
    torch = require("torch", "train")
    extra: dict[str, Any] = {"dtype": half_dtype(torch) if device == "cuda" else torch.float32}
    if qlora:
        require("bitsandbytes", "train")
        extra["quantization_config"] = transformers.BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=half_dtype(torch))
    if device == "cuda" and importlib.util.find_spec("flash_attn"):
        extra["attn_implementation"] = "flash_attention_2"  # keeps the examples of a padding-free row apart
    if "gguf_file" in kwargs:  # dense weights: LoRA wraps nn.Linear, not GGUF's packed blocks
        extra["quantization_config"] = transformers.GgufConfig(dequantize=True)
    model = _from_pretrained(transformers.AutoModelForCausalLM, source, {**kwargs, **extra})
    if "gguf_file" in kwargs:
        # Dequantized, the model is a plain fp32 one; the Trainer refuses anything still flagged GGUF-quantized.
        model.hf_quantizer = None
        model.config.__dict__.pop("quantization_config", None)
    return model


def half_dtype(torch):
    """bf16 where the GPU has it (Ampere and later), else fp16."""
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def _from_pretrained(cls, source: str, kwargs: dict):
    from .backends.hf import fast_gguf_loading

    what = f"{source}/{kwargs['gguf_file']}" if "gguf_file" in kwargs else source
    try:
        with fast_gguf_loading():
            return cls.from_pretrained(source, **kwargs)
    except OSError as exc:
        if kwargs.get("local_files_only"):
            raise ModelError(f"base model {source} not found locally",
                             f"download it first with `huggingface-cli download {source}` or pass a local folder or .gguf") from None
        raise ModelError(f"could not load the base model {what} ({first_line(exc)})") from None
    except (ValueError, KeyError, NotImplementedError, TypeError) as exc:
        raise ModelError(f"could not load the base model {what}: unsupported architecture or format ({first_line(exc)})",
                         "pass a causal language model that transformers supports (GGUF: llama, mistral, qwen2, ...)") from None
