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

from .backends.base import Backend, Message
from .card import render
from .errors import MessageError
from .retrieval import Exchange
from .settings import GenerationSettings, PerformerSettings

DEFAULT_SYSTEM = ("You are {{char}}. Stay in character: reply as {{char}} would, in the first person, with spoken "
                  "words only - no stage directions, no lines for anyone else. Never say you are an AI.")
DEFAULT_POST = "Reply as {{char}}, briefly, in {{char}}'s own voice."
SAFETY_MARGIN = 8  # tokens the template may add around the generation prompt


@dataclass
class Prompt:
    messages: list[Message]
    examples: list[Exchange] = field(default_factory=list)
    history_kept: int = 0
    notices: list[str] = field(default_factory=list)
    tokens: int = 0


def system_prompt(card: dict, user: str = "User", compact: bool = False) -> str:
    """The card's system prompt, description, personality and scenario; ``compact``: the system prompt alone."""
    data = card["data"]
    char = data["name"]
    parts = [data.get("system_prompt") or DEFAULT_SYSTEM]
    if not compact:
        parts += [data[key] for key in ("description", "personality", "scenario") if data.get(key)]
    return "\n\n".join(render(part, char, user).strip() for part in parts if part.strip())


def example_turns(examples: list[Exchange]) -> list[Message]:
    turns: list[Message] = []
    for ex in examples:
        turns += [{"role": "user", "content": ex.prompt}, {"role": "assistant", "content": ex.reply}]
    return turns


def system_turns(card: dict | None, perf: PerformerSettings, user: str = "User") -> tuple[list[Message], list[Message]]:
    """The card's system turn, and the post-history turn that goes after the history (if it goes there).

    ``perf.system_turn`` "compact" leaves out the description, personality and scenario (what a LoRA
    trained on compact system turns expects); "auto" is the card's whole text here (the Performer
    resolves it from the adapter it serves).
    """
    if card is None:  # the bare model, as the evaluation's base variant runs it
        return [], []
    data = card["data"]
    system = {"role": "system", "content": system_prompt(card, user, compact=perf.system_turn == "compact")}
    post_text = render(data.get("post_history_instructions", DEFAULT_POST) or "", data["name"], user).strip()
    post = [{"role": "system", "content": post_text}] if post_text and perf.post_history == "after_history" else []
    if post_text and perf.post_history == "system":
        system["content"] += "\n\n" + post_text
    return [system], post


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
