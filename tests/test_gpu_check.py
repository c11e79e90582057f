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
