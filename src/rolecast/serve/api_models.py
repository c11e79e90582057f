"""Request and response shapes of the OpenAI-compatible API.

The request follows OpenAI's chat completions schema; fields rolecast does not use
(tools, logprobs, response_format...) are accepted and ignored, as OpenAI clients send
them freely. Value bounds are not repeated here: the values are applied to
:class:`~rolecast.settings.GenerationSettings`, which declares them once and answers
a bad one with a 422 naming the setting.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ..chat.performer import Reply
from ..errors import MessageError
from ..settings import PerformerSettings

#: request field → GenerationSettings field
GENERATION_FIELDS = {"temperature": "temperature", "top_p": "top_p", "max_tokens": "max_tokens",
                     "max_completion_tokens": "max_tokens", "presence_penalty": "presence_penalty",
                     "frequency_penalty": "frequency_penalty", "seed": "seed", "top_k": "top_k", "min_p": "min_p",
                     "repeat_penalty": "repeat_penalty"}


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: str
    text: str | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None
    name: str | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "\n".join(part.text or "" for part in self.content if part.type == "text")
        return self.content or ""


class RolecastOptions(BaseModel):
    """rolecast's own options: ``extra_body={"rolecast": {...}}`` in OpenAI clients."""

    model_config = ConfigDict(extra="forbid")
    conversation_id: str | None = Field(None, max_length=80, description="Continue a stored conversation: its history comes from the server, and the turn is saved.")
    candidates: int | None = Field(None, ge=1, le=16, description="Candidates sampled and reranked for the reply.")
    examples: int | None = Field(None, ge=0, le=32, description="Real exchanges of the character retrieved into the prompt.")
    regenerate: bool = Field(False, description="With conversation_id: replace the last reply instead of sending a message.")


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    model: str = Field(..., description="A character id from GET /v1/models.")
    messages: list[ChatMessage] = Field(default_factory=list, max_length=2000)
    stream: bool = False
    n: int = Field(1, ge=1, le=16, description="Choices to return (the best-ranked candidates).")
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    seed: int | None = None
    stop: str | list[str] | None = None
    top_k: int | None = None
    min_p: float | None = None
    repeat_penalty: float | None = None
    user: str | None = None
    rolecast: RolecastOptions | None = None

    def generation_overrides(self) -> dict[str, Any]:
        out = {target: getattr(self, name) for name, target in GENERATION_FIELDS.items() if getattr(self, name) is not None}
        if self.stop is not None:
            out["stop"] = [self.stop] if isinstance(self.stop, str) else self.stop
        return out

    def performer_settings(self, base: PerformerSettings) -> PerformerSettings:
        opts = self.rolecast or RolecastOptions()
        changes: dict[str, Any] = {"candidates": max(self.n, opts.candidates or base.candidates)}
        if opts.examples is not None:
            changes["examples"] = opts.examples
        return base.updated(**changes)

    def last_user_message(self) -> str:
        if not self.messages or self.messages[-1].role != "user" or not self.messages[-1].text().strip():
            raise MessageError("the last message must be the user's, and not empty", param="messages")
        return self.messages[-1].text()

    def history_and_message(self) -> tuple[list[dict[str, str]], str]:
        """The chat so far (user and assistant turns; the card sets the system prompt) and the new message."""
        message = self.last_user_message()
        history = [{"role": m.role, "content": m.text()} for m in self.messages[:-1]
                   if m.role in ("user", "assistant") and m.text()]
        return history, message


class ConversationCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str = Field(..., description="The character this conversation is with.")
    title: str = Field("", max_length=200)


def error_body(message: str, kind: str, param: str | None, code: str | None) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def choices_of(reply: Reply, n: int) -> list[str]:
    """The reply first, then the next best distinct candidates, up to ``n``."""
    texts = [reply.text]
    for cand in sorted(reply.candidates, key=lambda c: c.total, reverse=True):
        if cand.text and cand.text not in texts:
            texts.append(cand.text)
    while len(texts) < n:
        texts.append(reply.text)
    return texts[:n]


def completion_response(body: ChatRequest, reply: Reply, conversation_id: str | None) -> dict[str, Any]:
    finish = "length" if reply.finish_reason == "length" else "stop"
    return {
        "id": "chatcmpl-" + uuid.uuid4().hex,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.model,
        "choices": [{"index": i, "message": {"role": "assistant", "content": text}, "finish_reason": finish}
                    for i, text in enumerate(choices_of(reply, body.n))],
        "usage": {"prompt_tokens": reply.prompt_tokens, "completion_tokens": reply.completion_tokens,
                  "total_tokens": reply.prompt_tokens + reply.completion_tokens},
        "rolecast": {"conversation_id": conversation_id, "scores": reply.scores, "notices": reply.notices,
                     "candidates": [{"text": c.text, "scores": c.scores, "total": c.total} for c in reply.candidates]},
    }
