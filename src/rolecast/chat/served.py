"""Which model and adapter serve a pack: its LoRA, in the form the backend loads, on the base it was trained on.

A LoRA trained on a GGUF is served on that file; one trained on a named base's Hugging Face model
(``--base Qwen/Qwen2.5-1.5B-Instruct``, on a GPU) on that base's official GGUF, once pulled.

    settings = pack_backend(pack, BackendSettings())        # model and adapter filled in from pack.json
    backend = create(settings)

The Performer, the ChatService, ``rolecast chat`` and ``rolecast eval`` all serve packs through this.
A LoRA on a base other than the one it was trained on is refused before llama.cpp sees a file.
"""

from __future__ import annotations

import functools
from pathlib import Path

from ..errors import ModelError
from ..files import sha256
from ..models.base_model import gguf_path, trained_on_gguf
from ..models.bases import by_repo
from ..pack import Pack
from ..settings import BackendSettings

#: The pack part holding each backend's form of the LoRA adapter.
ADAPTER_PARTS = {"llamacpp": "adapter_gguf", "transformers": "adapter"}


def pack_adapter(pack: Pack, settings: BackendSettings) -> str | None:
    """The adapter to load: the one named in the settings, else the pack's own for this backend."""
    if settings.adapter or settings.no_adapter:
        return settings.adapter
    if settings.backend == "openai":
        # A server such as vLLM serves each LoRA as a model of its own (--lora-modules NAME=PATH): the
        # backend asks for the one named after the pack, and fails when the server does not list it.
        return pack.name if pack.has("adapter") else None
    part = ADAPTER_PARTS.get(settings.backend)
    return str(pack.part(part)) if part and pack.has(part) else None


def pack_backend(pack: Pack, settings: BackendSettings) -> BackendSettings:
    """``settings`` with the model and adapter that serve ``pack``: its LoRA (``pack_adapter``) on the GGUF base it
    was trained on unless the settings name a model, and a ModelError (before llama.cpp sees a file) when the
    pack's own LoRA would go on a base other than the one whose checksum it recorded."""
    adapter = pack_adapter(pack, settings)
    record = pack.info.get("parts", {}).get("adapter", {})
    if settings.backend != "llamacpp" or not record:
        return settings.updated(adapter=adapter)
    base = record.get("base")
    model = settings.model or (base if base and trained_on_gguf(record) else None)
    if model is None and base and adapter and not settings.adapter:  # trained on a named base's HF model: its GGUF
        named = by_repo(base)
        model = named.name if named else None  # another model: the default GGUF, behind the LoRA-fits-base check
    if adapter and not settings.adapter and record.get("base_sha256"):
        path = gguf_path(model)
        if path.is_file() and file_checksum(path) != record["base_sha256"]:
            raise ModelError(f"the LoRA of {pack.path} was trained on {record.get('base_name') or base}, not on {path.name}",
                             "omit --model to serve it on its own base, or pass --no-adapter to serve this model without it")
    return settings.updated(model=model, adapter=adapter)


@functools.lru_cache(maxsize=16)
def _checksum(path: str, size: int, mtime: int) -> str:
    return sha256(Path(path))


def file_checksum(path: Path) -> str:
    """The file's sha256, computed once per process while it is unchanged (a base can be gigabytes)."""
    stat = path.stat()
    return _checksum(str(path.resolve()), stat.st_size, stat.st_mtime_ns)
