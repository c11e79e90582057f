"""Inference backends: one base class, a registry, and nothing about personas.

    >>> from rolecast.backends import create
    >>> backend = create(BackendSettings())            # doctest: +SKIP  (llama.cpp, default model)
    >>> backend.complete([{"role": "user", "content": "Hi"}], GenerationSettings(), n=2)

Each backend lives in its own module and is imported only when asked for, so that
``rolecast prepare`` never pays for torch or llama.cpp.
"""

from __future__ import annotations

import importlib

from ..errors import SettingsError
from ..settings import BackendSettings
from .base import Backend, Completion, Message

#: name → "module:Class"; :func:`register` adds more at run time (tests, plugins).
BACKENDS: dict[str, str | type[Backend]] = {
    "llamacpp": "rolecast.backends.llamacpp:LlamaCppBackend",
    "transformers": "rolecast.backends.hf:TransformersBackend",
    "openai": "rolecast.backends.openai:OpenAIBackend",
}


def register(name: str, cls: type[Backend]) -> None:
    BACKENDS[name] = cls


def backend_class(name: str) -> type[Backend]:
    try:
        target = BACKENDS[name]
    except KeyError:
        raise SettingsError(f"unknown backend '{name}'; valid backends: {', '.join(sorted(BACKENDS))}") from None
    if isinstance(target, str):
        module, _, attr = target.partition(":")
        target = getattr(importlib.import_module(module), attr)
        BACKENDS[name] = target
    return target


def create(settings: BackendSettings, adapter: str | None = None) -> Backend:
    """Instantiate the backend ``settings.backend`` names (``adapter`` overrides settings.adapter)."""
    return backend_class(settings.backend)(settings, adapter=adapter or settings.adapter)


__all__ = ["BACKENDS", "Backend", "Completion", "Message", "backend_class", "create", "register"]
