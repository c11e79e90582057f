"""The openai backend: any OpenAI-compatible chat server (vLLM, llama.cpp's llama-server, Ollama, ...).

    backend = OpenAIBackend(BackendSettings(backend="openai", base_url="http://127.0.0.1:8000/v1"))
    backend.complete([{"role": "user", "content": "Hi"}], GenerationSettings(), n=3)

``settings.model`` names the served model (default: the first one ``GET /models``
lists). With vLLM's multi-LoRA serving an ``adapter`` is a model name (a pack's LoRA is
served under the pack's name); one the server does not list is an error, never a silent
fall back to the base model. ``base_url`` defaults to ``$OPENAI_BASE_URL`` or llama-server's
``http://127.0.0.1:8080/v1``, ``backend_key`` (``--backend-key``) to ``$OPENAI_API_KEY``.

It talks plain HTTP through ``httpx2`` (the 'chat' extra), not the ``openai`` SDK, so
that it can send what OpenAI's schema lacks: top_k, min_p, the repeat penalty and DRY
go along as extra body fields (llama-server and vLLM read them; a server that refuses
them gets the request again without them). OpenAI allows four stop strings: the first
four are sent, and all of them are applied here. A server that ignores ``n`` (as
llama_cpp.server does) is asked again for the missing candidates.

:meth:`count_tokens` asks the server's tokenizer when it has one (vLLM's and
llama-server's ``/tokenize``, llama_cpp.server's ``/extras/tokenize``: the first that
answers is remembered); otherwise it estimates 3.5 characters per token.
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
from collections.abc import Callable, Iterator

from ..errors import BackendError, ModelError, require
from ..settings import BackendSettings, GenerationSettings
from .base import Backend, Completion, Message, StopScanner

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "http://127.0.0.1:8080/v1"
MAX_STOPS = 4  # OpenAI's limit on "stop"
#: Non-OpenAI sampling fields: llama-server's names, and vLLM's for the repeat penalty.
EXTRA_FIELDS = ("top_k", "min_p", "repeat_penalty", "repetition_penalty", "dry_multiplier", "dry_base", "dry_allowed_length")
CHARS_PER_TOKEN = 3.5  # English text in common BPE vocabularies
TOKENS_PER_MESSAGE = 4  # a chat template's role markers
SEED_STRIDE = 7919  # the seeds of follow-up requests differ, as the llamacpp backend's candidates do


class OpenAIBackend(Backend):
    name = "openai"

    def __init__(self, settings: BackendSettings, adapter: str | None = None):
        super().__init__(settings, adapter)
        self.httpx = require("httpx2", "chat")
        self.base_url = (settings.base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")
        # llama-server's and vLLM's tokenizer endpoints live beside /v1, not under it.
        self.root_url = self.base_url.removesuffix("/v1")
        key = settings.backend_key or os.environ.get("OPENAI_API_KEY")
        self.http = self.httpx.Client(
            base_url=self.base_url + "/", headers={"Authorization": f"Bearer {key}"} if key else {},
            # CPU servers take minutes over n long candidates; a dead one refuses at once.
            timeout=self.httpx.Timeout(300.0, connect=10.0))
        self._model: str | None = None
        self._max_len: int | None = None
        self._extras = True  # send EXTRA_FIELDS until the server refuses them
        self._counter: Callable[[list[Message]], int] | None = None

    # -- the served model ------------------------------------------------------
    def model_id(self) -> str:
        """The model name sent with each request, checked against ``GET /models`` once."""
        if self._model is None:
            self._model = self._pick_model()
        return self._model

    def _pick_model(self) -> str:
        models = self._list_models()
        if self.adapter and models and self.adapter in models:
            return self.adapter
        if self.adapter and models is not None:
            # Answering with the base model instead would pass its replies off as the LoRA's.
            raise ModelError(f"the model server at {self.base_url} does not serve the LoRA '{self.adapter}'; it serves: "
                             f"{', '.join(models) or 'nothing'}",
                             f"serve it as a model (vLLM: --lora-modules {self.adapter}=PACK/adapter), or pass --no-adapter "
                             "for the base model")
        if self.adapter:  # no /models to ask: the server takes the name or refuses it
            return self.adapter
        wanted = self.settings.model
        if wanted is None:
            if not models:
                raise ModelError(f"the model server at {self.base_url} lists no models",
                                 "pass the model name with --model, or check --base-url (it usually ends in /v1)")
            return next(iter(models))
        if models and wanted not in models:
            raise ModelError(f"model '{wanted}' is not served at {self.base_url}; it serves: {', '.join(models)}",
                             "pass one of them to --model")
        return wanted

    def _list_models(self) -> dict[str, dict] | None:
        """The served models by id; None when the server has no /models (it then takes any name)."""
        response = self._send("GET", "models")
        if response.status_code in (404, 405):
            return None
        self._raise_for(response)
        models = {m["id"]: m for m in self._json(response).get("data", []) if isinstance(m, dict) and "id" in m}
        wanted = self.adapter if self.adapter in models else self.settings.model
        entry = models.get(wanted) or next(iter(models.values()), {})
        self._max_len = entry.get("max_model_len")  # vLLM tells its context window
        return models

    @property
    def n_ctx(self) -> int:
        return min(self.settings.n_ctx, self._max_len) if self._max_len else self.settings.n_ctx

    @property
    def model_name(self) -> str:
        return self._model or self.settings.model or "default"

    # -- HTTP --------------------------------------------------------------------
    def _send(self, method: str, url: str, stream: bool = False, **kwargs):
        """The response, whatever its status; a server that cannot be reached is a BackendError."""
        try:
            return self.http.send(self.http.build_request(method, url, **kwargs), stream=stream)
        except self.httpx.TransportError as exc:
            raise self._unreachable(str(exc) or type(exc).__name__) from None

    def _unreachable(self, reason: str) -> BackendError:
        return BackendError(f"cannot reach the model server at {self.base_url} ({reason})", "start it, or check --base-url")

    def _raise_for(self, response) -> None:
        if not response.is_error:
            return
        response.read()
        code, detail = response.status_code, _detail(response)
        if code >= 500:
            raise self._unreachable(f"HTTP {code}: {detail}")
        if code in (401, 403):
            raise BackendError(f"the model server at {self.base_url} refused the API key (HTTP {code}: {detail})",
                               "pass the right key with --backend-key (or ROLECAST_BACKEND_KEY)")
        if code == 404 and self._model and self._model in detail:
            raise ModelError(f"model '{self._model}' is not served at {self.base_url} ({detail})", "pass another --model")
        if code == 404:
            raise BackendError(f"the model server at {self.base_url} has no {response.request.url.path} (HTTP 404)",
                               "check --base-url (it usually ends in /v1)")
        raise BackendError(f"the model server at {self.base_url} rejected the request (HTTP {code}: {detail})")

    def _json(self, response) -> dict:
        try:
            payload = response.json()
        except ValueError:
            raise self._garbled(response.text) from None
        if not isinstance(payload, dict):
            raise self._garbled(response.text)
        return payload

    def _garbled(self, text: str) -> BackendError:
        return BackendError(f"the model server at {self.base_url} sent what is not an OpenAI reply ({text.strip()[:120]!r})",
                            "check --base-url: it must point at an OpenAI-compatible API")

    def _chat(self, body: dict, stream: bool = False):
        """POST /chat/completions; the checked response (open, when streaming)."""
        response = self._send("POST", "chat/completions", stream=stream, json=body)
        if response.status_code in (400, 422) and self._extras:
            response.read()
            if any(field in response.text for field in EXTRA_FIELDS):
                log.info("the model server refuses top_k, min_p and the like; sending OpenAI's fields only")
                self._extras = False
                response.close()
                return self._chat({k: v for k, v in body.items() if k not in EXTRA_FIELDS}, stream)
        try:
            self._raise_for(response)
        except BaseException:
            response.close()
            raise
        return response

    def _body(self, messages: list[Message], gen: GenerationSettings, n: int, offset: int = 0) -> dict:
        body = {"model": self.model_id(), "messages": messages, "n": n, "max_tokens": gen.max_tokens,
                "temperature": gen.temperature, "top_p": gen.top_p,
                "presence_penalty": gen.presence_penalty, "frequency_penalty": gen.frequency_penalty}
        if gen.seed is not None:
            body["seed"] = (gen.seed + SEED_STRIDE * offset) & 0x7FFFFFFF
        if gen.stop:
            body["stop"] = gen.stop[:MAX_STOPS]
        if self._extras:
            body.update(top_k=gen.top_k, min_p=gen.min_p, repeat_penalty=gen.repeat_penalty,
                        repetition_penalty=gen.repeat_penalty, dry_multiplier=gen.dry_multiplier,
                        dry_base=gen.dry_base, dry_allowed_length=gen.dry_allowed_length)
        return body

    # -- generation ----------------------------------------------------------------
    def complete(self, messages: list[Message], settings: GenerationSettings, n: int = 1,
                 cancel: threading.Event | None = None) -> list[Completion]:
        n = max(1, n)
        scanner = StopScanner(settings.stop)
        completions: list[Completion] = []
        # A request in flight runs to its end (the server has no cancel); no further round starts once cancelled.
        while len(completions) < n and not (completions and cancel is not None and cancel.is_set()):
            reply = self._json(self._chat(self._body(messages, settings, n - len(completions), len(completions))))
            choices = reply.get("choices") or []
            if not choices:
                raise BackendError(f"the model server at {self.base_url} returned no completion ({str(reply)[:200]})")
            # usage counts all choices together; split it evenly.
            tokens = (reply.get("usage") or {}).get("completion_tokens", 0) // len(choices)
            completions += [_completion(c, scanner, tokens) for c in choices[: n - len(completions)]]
        return completions

    def stream(self, messages: list[Message], settings: GenerationSettings) -> Iterator[str]:
        scanner = StopScanner(settings.stop)
        response = self._chat({**self._body(messages, settings, 1), "stream": True}, stream=True)
        try:
            for delta in self._deltas(response):
                text = scanner.feed(delta)
                if text:
                    yield text
                if scanner.stopped:
                    return
            tail = scanner.flush()
            if tail:
                yield tail
        finally:
            response.close()  # closing the generator early drops the connection: the server stops

    def _deltas(self, response) -> Iterator[str]:
        """The content pieces of a server-sent event stream."""
        try:
            for line in response.iter_lines():
                if not line.startswith("data:"):
                    continue  # blank lines, comments and keep-alive pings
                data = line[5:].strip()
                if data == "[DONE]":
                    return
                try:
                    event = json.loads(data)
                except ValueError:
                    raise self._garbled(data) from None
                if "error" in event:
                    raise BackendError(f"the model server at {self.base_url} failed mid-reply ({_message(event)})")
                for choice in event.get("choices") or []:
                    content = (choice.get("delta") or {}).get("content")
                    if content:
                        yield content
        except self.httpx.TransportError as exc:
            raise self._unreachable(str(exc) or type(exc).__name__) from None

    # -- tokens ----------------------------------------------------------------------
    def count_tokens(self, messages: list[Message]) -> int:
        if self._counter is not None:
            return self._counter(messages)
        for counter in (self._count_vllm, self._count_llama_server, self._count_llama_cpp_python):
            count = counter(messages)
            if count is not None:
                self._counter = counter
                return count
        self._counter = estimate_tokens
        return estimate_tokens(messages)

    def _probe(self, path: str, body: dict) -> dict | None:
        """POST to a root endpoint: its JSON, or None when the server has no such endpoint."""
        response = self._send("POST", f"{self.root_url}/{path}", json=body)
        if response.status_code >= 500 or response.status_code in (401, 403):
            self._raise_for(response)
        if response.is_error:
            return None
        try:
            return response.json()
        except ValueError:
            return None

    def _count_vllm(self, messages: list[Message]) -> int | None:
        # vLLM renders the chat template itself: an exact count.
        reply = self._probe("tokenize", {"model": self.model_id(), "messages": messages, "add_generation_prompt": True})
        return reply["count"] if reply and isinstance(reply.get("count"), int) else None

    def _count_llama_server(self, messages: list[Message]) -> int | None:
        rendered = self._probe("apply-template", {"messages": messages})
        if not rendered or not isinstance(rendered.get("prompt"), str):
            return None
        reply = self._probe("tokenize", {"content": rendered["prompt"], "add_special": True})
        return len(reply["tokens"]) if reply and isinstance(reply.get("tokens"), list) else None

    def _count_llama_cpp_python(self, messages: list[Message]) -> int | None:
        # It cannot render the model's template: a ChatML rendering (exact for ChatML models) stands in.
        text = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages) + "<|im_start|>assistant\n"
        reply = self._probe("extras/tokenize", {"model": self.model_id(), "input": text})
        return len(reply["tokens"]) if reply and isinstance(reply.get("tokens"), list) else None

    def close(self) -> None:
        self.http.close()


def estimate_tokens(messages: list[Message]) -> int:
    """An estimate for servers without a tokenizer endpoint: 3.5 characters a token, plus the template's markers."""
    return sum(math.ceil(len(m["content"]) / CHARS_PER_TOKEN) + TOKENS_PER_MESSAGE for m in messages) + 3


def _completion(choice: dict, scanner: StopScanner, tokens: int) -> Completion:
    text = (choice.get("message") or {}).get("content") or ""
    cut = scanner.cut(text)
    reason = "length" if cut == text and choice.get("finish_reason") == "length" else "stop"
    return Completion(cut, tokens, reason)


def _message(payload: dict) -> str:
    error = payload.get("error", payload.get("detail"))
    if isinstance(error, dict):
        error = error.get("message", error)
    return str(error)[:300]


def _detail(response) -> str:
    try:
        payload = response.json()
    except ValueError:
        return response.text.strip()[:300] or response.reason_phrase
    return _message(payload) if isinstance(payload, dict) else str(payload)[:300]
