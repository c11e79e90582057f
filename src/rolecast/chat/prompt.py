"""Prompt assembly: card → system prompt, real exchanges as examples, the history, the message.

    prompt = build_prompt(card, history, "Is it lupus?", examples, backend, PerformerSettings(), GenerationSettings())
    prompt.messages     # ready for Backend.complete / Backend.stream

Order: the system prompt (the card's system prompt, description, personality,
scenario, with {{char}}/{{user}} filled in), the retrieved exchanges as earlier
user/assistant turns (a small model imitates turns far better than a description),
the recent history, the user's message. The card's post-history instructions end the
system prompt by default: SmolLM2-135M, given them as a system turn after the
history, answers the instructions instead of the user ("Maggie, I'm so glad you're
here..." in 9 of 15 probes); ``post_history="after_history"`` puts them there anyway.

The whole prompt plus ``max_tokens`` must fit the backend's context, counted with the
backend's own tokenizer. What goes first when it does not fit: the oldest history
turns, then the retrieved examples (the least similar first), then the end of the
user's message (with a notice). The system prompt is never dropped.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..backends.base import Backend, Message
from ..errors import MessageError
from ..pack.system_turn import system_turns
from ..settings import GenerationSettings, PerformerSettings
from .retrieval import Exchange

SAFETY_MARGIN = 8  # tokens the template may add around the generation prompt


@dataclass
class Prompt:
    messages: list[Message]
    examples: list[Exchange] = field(default_factory=list)
    history_kept: int = 0
    notices: list[str] = field(default_factory=list)
    tokens: int = 0


def example_turns(examples: list[Exchange]) -> list[Message]:
    turns: list[Message] = []
    for ex in examples:
        turns += [{"role": "user", "content": ex.prompt}, {"role": "assistant", "content": ex.reply}]
    return turns


def build_prompt(card: dict | None, history: list[Message], message: str, examples: list[Exchange], backend: Backend,
                 perf: PerformerSettings, gen: GenerationSettings, user: str = "User") -> Prompt:
    """The turns to send, fitted to the context; ``card=None``: no system prompt at all."""
    system, post = system_turns(card, perf, user)
    history = [m for m in history if m.get("content")][-perf.history_turns:] if perf.history_turns else []
    examples = [ex for ex in examples if ex.prompt]
    notices: list[str] = []
    budget = backend.n_ctx - gen.max_tokens - SAFETY_MARGIN

    def assemble(msg: str) -> list[Message]:
        return [*system, *example_turns(examples), *history, {"role": "user", "content": msg}, *post]

    tokens = backend.count_tokens(assemble(message))
    while tokens > budget and history:
        history = history[2:] if len(history) > 1 else []
        tokens = backend.count_tokens(assemble(message))
        if "older turns of the conversation were left out to fit the context" not in notices:
            notices.append("older turns of the conversation were left out to fit the context")
    while tokens > budget and examples:
        examples = examples[:-1]
        tokens = backend.count_tokens(assemble(message))
    if tokens > budget:
        message = _trim_message(message, lambda m: backend.count_tokens(assemble(m)) <= budget)
        notices.append(f"your message was too long for the model's context and was cut to {len(message.split())} words")
        tokens = backend.count_tokens(assemble(message))
    return Prompt(assemble(message), examples, len(history), notices, tokens)


def _trim_message(message: str, fits) -> str:
    """The longest word-prefix of ``message`` that ``fits`` (binary search)."""
    words = message.split()
    lo, hi = 0, len(words)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if fits(" ".join(words[:mid])):
            lo = mid
        else:
            hi = mid - 1
    if lo == 0:
        raise MessageError("the character's system prompt alone fills the model's context",
                           "raise --n-ctx, lower --max-tokens or shorten the card")
    return " ".join(words[:lo])
