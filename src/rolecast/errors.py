"""Typed errors: every failure a user can cause or fix, with the fix in the message.

Library code raises these; only the edges (the CLI, the HTTP API, the Telegram bot)
turn them into a one-line message, an exit code or OpenAI-style error JSON. Anything
that is not a ``RolecastError`` is a bug and is allowed to show its traceback.
"""

from __future__ import annotations


class RolecastError(Exception):
    """Base class. ``str(err)`` is the one line a user sees; ``hint`` says how to fix it."""

    #: HTTP status the API maps this error to.
    status = 400
    #: OpenAI error ``type``.
    kind = "invalid_request_error"

    def __init__(self, message: str, hint: str | None = None, *, param: str | None = None):
        self.message = message
        self.hint = hint
        self.param = param
        super().__init__(self.one_line())

    def one_line(self) -> str:
        text = self.message.rstrip(".")
        if self.hint:
            text += f". {self.hint.rstrip('.')}"
        return " ".join((text + ".").split())


class InputFileError(RolecastError):
    """A file is missing, unreadable, undecodable or malformed beyond repair."""


class FormatError(RolecastError):
    """The input's format cannot be detected or its columns cannot be mapped."""


class UnknownCharacterError(RolecastError):
    """The requested character is not a speaker of the corpus (or not a served model)."""

    status = 404


class EmptyResultError(RolecastError):
    """A stage produced nothing usable (zero lines, zero examples)."""


class SettingsError(RolecastError):
    """An unknown setting, or a value out of its bounds."""

    status = 422


class PackError(RolecastError):
    """A character pack is missing, incomplete or from an incompatible version."""

    status = 404


class ModelError(RolecastError):
    """No model found, or a model file that cannot be loaded."""

    status = 500
    kind = "server_error"


class MissingExtraError(RolecastError):
    """An optional dependency is not installed."""

    status = 500
    kind = "server_error"


class MessageError(RolecastError):
    """An empty or oversized chat message."""


class AuthError(RolecastError):
    status = 401
    kind = "authentication_error"


class RateLimitError(RolecastError):
    status = 429
    kind = "rate_limit_error"

    def __init__(self, message: str, hint: str | None = None, *, retry_after: float = 1.0):
        super().__init__(message, hint)
        self.retry_after = retry_after


class PayloadTooLargeError(RolecastError):
    status = 413


class NotFoundError(RolecastError):
    status = 404


class TrainingError(RolecastError):
    """Training could not start or continue (no CUDA for --qlora, no disk, interrupted)."""


class BackendError(RolecastError):
    """The inference backend failed for a reason outside rolecast (a server down, a bad reply)."""

    status = 502
    kind = "server_error"


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (library errors can run to pages), else its type."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def require(module: str, extra: str):
    """Import an optional dependency, or say which extra installs it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise MissingExtraError(
            f"{module} is not installed ({exc})",
            f"install it with: pip install 'rolecast[{extra}]'",
        ) from exc
