"""Export a pack's LoRA for llama.cpp: PACK/adapter (PEFT) → PACK/adapter.gguf, optionally merged into the base.

    rolecast export packs/house                  # adapter.gguf: the llamacpp backend loads it with the base
    rolecast export packs/house --merged q8_0    # also merged-q8_0.gguf: base + LoRA in one model file

    >>> export("packs/house", merged="f16")     # doctest: +SKIP
    {'adapter_gguf': PosixPath('packs/house/adapter.gguf'), 'merged': PosixPath('packs/house/merged-f16.gguf')}

The GGUF LoRA follows llama.cpp's convert_lora_to_gguf.py, written with the ``gguf``
package: ``general.type = adapter``, ``adapter.type = lora``, ``adapter.lora.alpha``
(FLOAT32; llama.cpp scales by alpha / rank as PEFT does), the base's architecture, and
for each adapted weight a pair ``blk.N.attn_q.weight.lora_a`` / ``.lora_b`` named by
gguf's TensorNameMap. PEFT's ``lora_A`` (r × in) and ``lora_B`` (out × r) are written
as they are: GGUF lists dimensions innermost first, so llama.cpp reads them as
ne = [in, r] and [r, out], the shapes it checks against the base weight [in, out].
For the ``llama`` architecture, whose GGUF q/k weights have their rows permuted for
llama.cpp's rotary layout (convert_hf_to_gguf.py's ``LlamaModel.permute``, undone by
transformers' GGUF loader), the rows of ``lora_B`` of q_proj and k_proj get the same
permutation, so that B·A permutes like the weight it adds to.

``--merged`` needs a GGUF base: its metadata and tokenizer are copied, every adapted
weight becomes W + (alpha / r)·B·A, and every matrix is written as Q8_0 (gguf.quants;
F16 for rows not a multiple of 32) or F16; norms stay F32.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ..errors import ModelError, PackError, require
from ..files import atomic_path, read_json
from ..pack import Pack

log = logging.getLogger(__name__)

PERMUTED_QK = {"llama"}  # GGUF architectures whose q/k rows convert_hf_to_gguf.py permutes
#: Hugging Face model_type → GGUF architecture, for bases given as HF folders or ids: the families whose
#: export tests/test_export.py checks against llama.cpp (a tiny model of each, converted by llama.cpp itself).
HF_ARCH = {"llama": "llama", "mistral": "llama", "qwen2": "qwen2", "qwen3": "qwen3",
           "gemma2": "gemma2", "gemma3": "gemma3", "gemma3_text": "gemma3", "phi3": "phi3"}
MERGED_TYPES = ("q8_0", "f16")


@dataclass
class BaseInfo:
    arch: str
    n_head: int
    n_head_kv: int
    n_layers: int
    gguf: Path | None  # the base as a GGUF file, when it is one


@dataclass
class Lora:
    pairs: dict[str, tuple]  # HF module name (model.layers.0.self_attn.q_proj) → (A: r × in, B: out × r), float32
    alpha: float  # what llama.cpp needs so that alpha / rank is PEFT's scaling
    scaling: float


def export(pack: Pack | str | Path, merged: str | None = None) -> dict[str, Path]:
    """Write PACK/adapter.gguf (and PACK/merged-<type>.gguf) and record them in pack.json."""
    gguf = require("gguf", "train")
    pack = pack if isinstance(pack, Pack) else Pack.open(pack)
    adapter = pack.require("adapter")
    if merged is not None and merged not in MERGED_TYPES:
        raise ModelError(f"unknown merged type '{merged}'", f"use one of: {', '.join(MERGED_TYPES)}")
    lora = load_lora(adapter)
    base = base_info(pack)
    target = pack.part("adapter_gguf")
    with atomic_path(target) as tmp:
        write_adapter_gguf(gguf, lora, base, tmp, pack.character)
    pack.record("adapter_gguf", arch=base.arch, alpha=lora.alpha, tensors=2 * len(lora.pairs),
                adapter_checksum=pack.info.get("parts", {}).get("adapter", {}).get("checksum"))
    out = {"adapter_gguf": target}
    if merged:
        if base.gguf is None:
            raise ModelError("--merged needs a GGUF base; this pack's adapter was trained on a Hugging Face model",
                             "merge with PEFT (merge_and_unload, save_pretrained) and convert with llama.cpp's convert_hf_to_gguf.py")
        out["merged"] = pack.path / f"merged-{merged}.gguf"
        with atomic_path(out["merged"]) as tmp:
            write_merged_gguf(gguf, lora, base, merged, tmp)
        log.info("merged %s + LoRA into %s", base.gguf.name, out["merged"])
    return out


def exportable_arch(base: str | None, kwargs: dict, gguf: Path | None) -> str:
    """The GGUF architecture of a training base (``base``, ``kwargs``: what resolve_base gives); a ModelError before
    any training when export could not write its LoRA."""
    supported = sorted(set(HF_ARCH.values()))
    if gguf is not None:
        import gguf as gguf_lib

        arch = str(_field(gguf_lib.GGUFReader(gguf), "general.architecture"))
    elif base is None:
        return "llama"  # the bundled SmolLM2
    else:
        from ..models.base_model import from_pretrained

        config = from_pretrained(require("transformers", "train").AutoConfig, base, kwargs).get_text_config()
        arch = HF_ARCH.get(config.model_type, config.model_type)
    if arch not in supported:
        raise ModelError(f"rolecast cannot export a LoRA for the '{arch}' architecture of {Path(str(base)).name}",
                         "use a base of one of: " + ", ".join(supported))
    return arch


# ----------------------------------------------------------------------------- reading


def load_lora(folder: Path) -> Lora:
    """The PEFT adapter's A/B pairs and scaling, refusing what llama.cpp cannot apply."""
    torch = require("torch", "train")
    from safetensors.torch import load_file

    config = read_json(folder / "adapter_config.json")
    unsupported = [k for k in ("use_dora", "rank_pattern", "alpha_pattern", "modules_to_save") if config.get(k)]
    if unsupported:
        raise ModelError(f"the adapter in {folder} uses {', '.join(unsupported)}, which llama.cpp's LoRA cannot apply",
                         "train it with rolecast train (plain LoRA)")
    r, alpha = int(config["r"]), float(config["lora_alpha"])
    scaling = alpha / math.sqrt(r) if config.get("use_rslora") else alpha / r
    weights_file = folder / "adapter_model.safetensors"
    if not weights_file.exists():
        raise PackError(f"{folder} has no adapter_model.safetensors", "retrain it with: rolecast train PACK")
    pairs: dict[str, dict] = {}
    for key, tensor in load_file(str(weights_file)).items():
        for part in ("A", "B"):
            marker = f".lora_{part}.weight"
            if key.endswith(marker):
                module = key[: -len(marker)].removeprefix("base_model.model.")
                pairs.setdefault(module, {})[part] = tensor.to(torch.float32).numpy()
    incomplete = [m for m, p in pairs.items() if len(p) != 2]
    if not pairs or incomplete:
        raise PackError(f"{weights_file} holds no complete LoRA pairs" + (f" ({incomplete[0]})" if incomplete else ""),
                        "retrain it with: rolecast train PACK")
    # llama.cpp applies alpha / rank; for rsLoRA that needs alpha · sqrt(r) to give PEFT's alpha / sqrt(r).
    return Lora({m: (p["A"], p["B"]) for m, p in pairs.items()}, scaling * r, scaling)


def base_info(pack: Pack) -> BaseInfo:
    """Architecture and head counts of the base the adapter was trained on (from pack.json's record)."""
    record = pack.info.get("parts", {}).get("adapter", {})
    base = record.get("base")
    from ..models.base_model import gguf_path, trained_on_gguf

    if trained_on_gguf(record):
        path = gguf_path(base)
        return _gguf_base(path, record.get("base_sha256"))
    return _hf_base(str(base))


def _gguf_base(path: Path, sha: str | None) -> BaseInfo:
    import gguf

    reader = gguf.GGUFReader(path)
    arch = _field(reader, "general.architecture")
    if sha:
        from ..files import sha256

        if sha256(path) != sha:
            log.warning("the base %s changed since training (checksum differs); the export may not fit it", path)
    head = _field(reader, f"{arch}.attention.head_count")
    return BaseInfo(arch, int(head), int(_field(reader, f"{arch}.attention.head_count_kv", head)),
                    int(_field(reader, f"{arch}.block_count")), path)


def _field(reader, key: str, default=None):
    field = reader.fields.get(key)
    if field is None:
        if default is None:
            raise ModelError(f"the base GGUF has no '{key}'", "export needs a GGUF written by llama.cpp's converters")
        return default
    return field.contents()


def _hf_base(ref: str) -> BaseInfo:
    transformers = require("transformers", "train")
    try:
        config = transformers.AutoConfig.from_pretrained(ref, local_files_only=True).get_text_config()
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot read the base model config of {ref} ({str(exc).splitlines()[0]})",
                         "make the base available locally (the folder or HF cache rolecast train used)") from None
    arch = HF_ARCH.get(config.model_type)
    if arch is None:
        raise ModelError(f"rolecast cannot export a LoRA for the '{config.model_type}' architecture of {ref}",
                         "use a base of one of: " + ", ".join(sorted(set(HF_ARCH.values()))))
    heads = config.num_attention_heads
    return BaseInfo(arch, heads, getattr(config, "num_key_value_heads", None) or heads, config.num_hidden_layers, None)


# ----------------------------------------------------------------------------- writing


def permute_rows(w, n_head: int, n_head_kv: int | None = None):
    """convert_hf_to_gguf.py's LlamaModel.permute: the rotary halves of each head interleaved."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def gguf_pairs(gguf, lora: Lora, base: BaseInfo) -> Iterator[tuple[str, object, object]]:
    """(GGUF weight name, A, B) for every adapted layer, B permuted where the base's rows are."""
    arch = {name: key for key, name in gguf.MODEL_ARCH_NAMES.items()}.get(base.arch)
    if arch is None:
        raise ModelError(f"the gguf package does not know the architecture '{base.arch}'", "upgrade it: pip install -U gguf")
    names = gguf.get_tensor_name_map(arch, base.n_layers)
    for module, (a, b) in sorted(lora.pairs.items()):
        name = names.get_name(module + ".weight", try_suffixes=(".weight",))
        if name is None:
            raise ModelError(f"no GGUF tensor for the adapted layer {module} of a {base.arch} model",
                             "train with --target-modules naming the attention and MLP projections")
        if base.arch in PERMUTED_QK and module.endswith("q_proj"):
            b = permute_rows(b, base.n_head, base.n_head)
        elif base.arch in PERMUTED_QK and module.endswith("k_proj"):
            b = permute_rows(b, base.n_head, base.n_head_kv)
        yield name, a, b


def write_adapter_gguf(gguf, lora: Lora, base: BaseInfo, path: Path, character: str = "") -> None:
    import numpy as np

    writer = gguf.GGUFWriter(str(path), base.arch)
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(lora.alpha))
    if character:
        writer.add_name(f"rolecast LoRA: {character}")
    for name, a, b in gguf_pairs(gguf, lora, base):
        writer.add_tensor(f"{name}.lora_a", np.ascontiguousarray(a, dtype=np.float32))
        writer.add_tensor(f"{name}.lora_b", np.ascontiguousarray(b, dtype=np.float32))
    _finish(writer)


def write_merged_gguf(gguf, lora: Lora, base: BaseInfo, kind: str, path: Path) -> None:
    """The base GGUF with W + scaling·B·A in place of each adapted weight, every matrix as ``kind``."""
    import numpy as np

    deltas = {name: (a, b) for name, a, b in gguf_pairs(gguf, lora, base)}
    reader = gguf.GGUFReader(base.gguf)
    writer = gguf.GGUFWriter(str(path), base.arch)
    file_type = gguf.LlamaFileType.MOSTLY_Q8_0 if kind == "q8_0" else gguf.LlamaFileType.MOSTLY_F16
    for field in reader.fields.values():
        if field.name.startswith("GGUF.") or field.name in ("general.architecture", "general.alignment"):
            continue
        value = int(file_type) if field.name == "general.file_type" else field.contents()
        sub = field.types[-1] if field.types[0] == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, value, field.types[0], sub_type=sub)
    for tensor in reader.tensors:
        w = gguf.quants.dequantize(tensor.data, tensor.tensor_type).astype(np.float32)
        if w.ndim < 2:  # norms and biases: F32, as llama.cpp's converters write them
            writer.add_tensor(tensor.name, w)
            continue
        if tensor.name in deltas:
            a, b = deltas.pop(tensor.name)
            w += np.float32(lora.scaling) * (b @ a)
        if kind == "q8_0" and w.shape[-1] % 32 == 0:
            writer.add_tensor(tensor.name, gguf.quants.quantize(w, gguf.GGMLQuantizationType.Q8_0),
                              raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        else:
            writer.add_tensor(tensor.name, w.astype(np.float16))
    if deltas:
        raise ModelError(f"the base {base.gguf} has no tensor {next(iter(deltas))}", "export against the base the adapter was trained on")
    _finish(writer)


def _finish(writer) -> None:
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
