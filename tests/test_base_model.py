"""base_model: the bundled GGUF's checks and the training precision chosen for the processor."""

from __future__ import annotations

import pytest

from rolecast.base_model import cpu_has_bf16, mixed_precision

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


def test_precision_auto_follows_the_processor_and_explicit_choices_win(monkeypatch):
    import rolecast.base_model as base_model

    monkeypatch.setattr(base_model, "cpu_has_bf16", lambda: True)
    assert mixed_precision("auto", "cpu", torch) is torch.bfloat16
    assert mixed_precision("fp32", "cpu", torch) is None
    monkeypatch.setattr(base_model, "cpu_has_bf16", lambda: False)
    assert mixed_precision("auto", "cpu", torch) is None
    assert mixed_precision("bf16", "cpu", torch) is torch.bfloat16
