"""llama.cpp's own Hugging Face → GGUF converter, for tests that need a base GGUF of each architecture.

    python tests/llama_converter.py        # fetch it once (make test does): .venv/llama.cpp-convert/<version>

The converter (convert_hf_to_gguf.py, its ``conversion`` package and its ``gguf-py``) is not
on PyPI as a library; it ships inside the source distribution of llama-cpp-python. Taking it
from the sdist of the *installed* version means the GGUF files are written by the same
llama.cpp that reads them. The tests then convert tiny random models built from a config
(no download) and check rolecast's LoRA export against llama.cpp on each architecture.
"""

from __future__ import annotations

import importlib.metadata
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

PARTS = ("convert_hf_to_gguf.py", "conversion/", "gguf-py/")
SAFE = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}  # Python 3.11.4+: no links or paths out


def converter_dir() -> Path:
    """Where the converter of the installed llama-cpp-python lives (it may not be fetched yet)."""
    version = importlib.metadata.version("llama-cpp-python")
    return Path(sys.prefix) / "llama.cpp-convert" / version


def converter_script() -> Path | None:
    script = converter_dir() / "convert_hf_to_gguf.py"
    return script if script.exists() else None


def fetch() -> Path:
    """Download the installed llama-cpp-python's sdist (pip's cache usually has it) and keep the converter."""
    target = converter_dir()
    if (target / "convert_hf_to_gguf.py").exists():
        return target
    version = target.name
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:",
                        f"llama-cpp-python=={version}", "-d", tmp], check=True)
        sdist = next(Path(tmp).glob("llama_cpp_python-*.tar.gz"))
        staging = Path(tmp) / "convert"
        with tarfile.open(sdist) as tar:
            for member in tar.getmembers():
                inner = member.name.split("/vendor/llama.cpp/", 1)
                if len(inner) == 2 and inner[1].startswith(PARTS) and (member.isfile() or member.isdir()):
                    member.name = inner[1]
                    tar.extract(member, staging, **SAFE)
        if not (staging / "convert_hf_to_gguf.py").exists():
            raise SystemExit(f"{sdist.name} has no vendor/llama.cpp/convert_hf_to_gguf.py")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(staging), target)
    return target


def convert(model_folder: Path, out: Path) -> Path:
    """``model_folder`` (an HF model with its tokenizer) → ``out``, an F32 GGUF, by llama.cpp's converter."""
    script = converter_script()
    if script is None:
        raise FileNotFoundError("llama.cpp's converter is not fetched: python tests/llama_converter.py")
    out.parent.mkdir(parents=True, exist_ok=True)
    done = subprocess.run([sys.executable, str(script), str(model_folder), "--outfile", str(out), "--outtype", "f32"],
                          capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"convert_hf_to_gguf.py failed on {model_folder}:\n{done.stderr[-3000:]}")
    return out


if __name__ == "__main__":
    print(f"llama.cpp's converter: {fetch()}")
