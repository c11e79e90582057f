"""make gpu-check is honest about where it ran: without CUDA it checks nothing, says so and exits 0."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


def test_without_cuda_nothing_is_claimed():
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: run make gpu-check itself")
    done = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0
    assert "no CUDA device on this machine" in done.stdout and "nothing was checked" in done.stdout
    assert "passed" not in done.stdout


def test_a_named_base_that_is_not_cached_is_skipped_with_what_to_fetch(tmp_path, monkeypatch):
    """The device machines have no internet: the named-base steps say what to download instead of failing."""
    pytest.importorskip("huggingface_hub")
    import importlib.util

    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))  # read at import
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    gpu_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_check)
    results: dict[str, str] = {}
    gpu_check.check_named_base("qwen2.5-1.5b", tmp_path / "sample", tmp_path, 2, results)
    assert results == {"named base qwen2.5-1.5b": "skipped: Qwen/Qwen2.5-1.5B-Instruct is not in the Hugging Face "
                       "cache (huggingface-cli download Qwen/Qwen2.5-1.5B-Instruct)"}
    gpu_check.check_named_base("no-such-base", tmp_path / "sample", tmp_path, 2, results)
    assert results["named base no-such-base"].startswith("FAILED")
