"""base_model: the bundled GGUF's checks and the training precision chosen for the processor."""

from __future__ import annotations

from pathlib import Path

import pytest

from rolecast.errors import ModelError
from rolecast.models.base_model import check_lora, cpu_has_amx, cpu_has_bf16, mixed_precision

torch = pytest.importorskip("torch")

AVX512_BF16 = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16 avx512_vnni\n"
AVX2_ONLY = "processor\t: 0\nflags\t\t: fpu sse2 avx2 fma\n"


@pytest.mark.parametrize(("cpuinfo", "expected"), [(AVX512_BF16, True), (AVX2_ONLY, False),
                                                   ("flags\t\t: amx_bf16 amx_tile\n", True)])
def test_cpu_bf16_is_read_from_the_processor_flags(tmp_path, cpuinfo, expected):
    path = tmp_path / "cpuinfo"
    path.write_text(cpuinfo)
    assert cpu_has_bf16(str(path)) is expected


def test_no_cpuinfo_means_no_bf16(tmp_path):
    assert cpu_has_bf16(str(tmp_path / "absent")) is False
    assert cpu_has_amx(str(tmp_path / "absent")) is False


def test_amx_is_read_from_the_processor_flags(tmp_path):
    path = tmp_path / "cpuinfo"
    path.write_text("flags\t\t: avx512f amx_bf16 amx_tile amx_int8\n")
    assert cpu_has_amx(str(path))
    path.write_text(AVX512_BF16)
    assert not cpu_has_amx(str(path))


def test_precision_auto_follows_the_processor_and_explicit_choices_win(monkeypatch):
    import rolecast.models.base_model as base_model

    monkeypatch.setattr(base_model, "cpu_has_bf16", lambda: True)
    assert mixed_precision("auto", "cpu", torch) is torch.bfloat16
    assert mixed_precision("fp32", "cpu", torch) is None
    monkeypatch.setattr(base_model, "cpu_has_bf16", lambda: False)
    assert mixed_precision("auto", "cpu", torch) is None
    assert mixed_precision("bf16", "cpu", torch) is torch.bfloat16


def write_gguf(path, arch: str, tensors: dict) -> Path:
    """A GGUF holding ``tensors`` (numpy arrays, rows × columns as PEFT and transformers store them)."""
    import gguf
    import numpy as np

    writer = gguf.GGUFWriter(str(path), arch)
    for name, array in tensors.items():
        writer.add_tensor(name, np.ascontiguousarray(array, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return Path(path)


def lora_for(in_features: int, out_features: int, r: int = 2) -> dict:
    import numpy as np

    return {"blk.0.attn_q.weight.lora_a": np.zeros((r, in_features)), "blk.0.attn_q.weight.lora_b": np.zeros((out_features, r))}


def test_a_lora_is_checked_against_its_base_before_llama_cpp_sees_it(tmp_path):
    import numpy as np

    base = write_gguf(tmp_path / "base.gguf", "llama", {"blk.0.attn_q.weight": np.zeros((8, 4))})
    check_lora(write_gguf(tmp_path / "fits.gguf", "llama", lora_for(4, 8)), base)
    with pytest.raises(ModelError, match=r"is for a qwen2 model, not base.gguf \(llama\)"):
        check_lora(write_gguf(tmp_path / "qwen.gguf", "qwen2", lora_for(4, 8)), base)
    for name, lora in (("wide.gguf", lora_for(6, 8)), ("tall.gguf", lora_for(4, 16))):
        with pytest.raises(ModelError, match=f"{name} does not fit base.gguf: blk.0.attn_q.weight.lora_"):
            check_lora(write_gguf(tmp_path / name, "llama", lora), base)
    other = write_gguf(tmp_path / "other.gguf", "llama", {"blk.0.attn_k.weight": np.zeros((8, 4))})
    with pytest.raises(ModelError, match="missing"):
        check_lora(tmp_path / "fits.gguf", other)
    (tmp_path / "junk.gguf").write_bytes(b"not a gguf")
    with pytest.raises(ModelError, match="not a GGUF file"):
        check_lora(tmp_path / "junk.gguf", base)
