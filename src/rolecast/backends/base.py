"""The Backend protocol: chat messages in, completions (or a token stream) out.

A backend knows chat templates, tokenizers and sampling; it knows nothing of
characters, cards or packs. The Performer builds the messages and post-processes
what comes back.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from ..settings import BackendSettings, GenerationSettings

Message = dict[str, str]  # {"role": "system" | "user" | "assistant", "content": str}
#: Where DRY's repeat matching restarts (llama.cpp's default sequence breakers), in every backend.
DRY_BREAKERS = ["\n", ":", '"', "*"]


@dataclass
class Completion:
    text: str
    tokens: int = 0
    finish_reason: str = "stop"  # "stop" | "length" | "cancelled"
    extra: dict[str, Any] = field(default_factory=dict)


class Backend(ABC):
    """Base class of every backend. Subclasses set ``name`` and implement the abstract methods."""

    name = "base"

    def __init__(self, settings: BackendSettings, adapter: str | None = None):
        self.settings = settings
        self.adapter = adapter

    @property
    def n_ctx(self) -> int:
        """The context window, in tokens."""
        return self.settings.n_ctx

    @property
    def model_name(self) -> str:
        return self.settings.model or "default"

    @abstractmethod
    def count_tokens(self, messages: list[Message]) -> int:
        """Tokens the messages take once rendered with the model's chat template."""

    @abstractmethod
    def complete(self, messages: list[Message], settings: GenerationSettings, n: int = 1,
                 cancel: threading.Event | None = None) -> list[Completion]:
        """``n`` independent completions of the assistant's next turn; setting ``cancel`` ends them early."""

    @abstractmethod
    def stream(self, messages: list[Message], settings: GenerationSettings) -> Iterator[str]:
        """The assistant's next turn, piece by piece; closing the iterator stops generation."""

    def score_reply(self, messages: list[Message], reply: str) -> tuple[float, int]:
        """Log-probability of ``reply`` as the assistant's next turn, and its token count (for perplexity)."""
        from ..errors import ModelError

        raise ModelError(f"the {self.name} backend cannot score replies", "evaluate with --backend llamacpp")

    def close(self) -> None:  # noqa: B027 - optional hook: most backends free nothing
        """Free the model. Safe to call twice."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class StopScanner:
    """Finds stop strings in generated text, holding back what could be the start of one.

    ``feed(piece)`` returns the text that is safe to show now; after a stop string,
    ``stopped`` is true and nothing from the stop string on is ever returned.
    """

    def __init__(self, stops: list[str]):
        self.stops = [s for s in stops if s]
        self.longest = max((len(s) for s in self.stops), default=0)
        self.text = ""
        self.shown = 0
        self.stopped = False

    def _first_stop(self, text: str, start: int = 0) -> int:
        found = [i for i in (text.find(s, start) for s in self.stops) if i >= 0]
        return min(found) if found else -1

    def hit(self, text: str) -> bool:
        return self._first_stop(text, max(0, len(text) - self.longest - 8)) >= 0

    def cut(self, text: str) -> str:
        i = self._first_stop(text)
        return text if i < 0 else text[:i]

    def feed(self, piece: str) -> str:
        if self.stopped:
            return ""
        self.text += piece
        i = self._first_stop(self.text, max(0, self.shown - self.longest))
        if i >= 0:
            self.stopped = True
            out, self.shown = self.text[self.shown:i], i
            return out
        hold = 0
        for stop in self.stops:
            for k in range(min(len(stop) - 1, len(self.text)), 0, -1):
                if self.text.endswith(stop[:k]):
                    hold = max(hold, k)
                    break
        end = max(self.shown, len(self.text) - hold)
        out, self.shown = self.text[self.shown:end], end
        return out

    def flush(self, piece: str = "") -> str:
        out = self.feed(piece)
        if self.stopped:
            return out
        rest, self.shown = self.text[self.shown:], len(self.text)
        return out + rest
