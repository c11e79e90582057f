"""The system turn a pack's character is played with: in the chat (``chat/prompt.py``) and in training.

    system, post = system_turns(card, PerformerSettings())           # the messages before and after the history
    training_system_prompt(card, "compact")                           # the one system turn a LoRA trains with

The card's system prompt (rolecast's default when it has none), its description, personality and
scenario (left out when ``system_turn`` is "compact"), with {{char}}/{{user}} filled in; then its
post-history instructions, appended to the system turn or sent after the history. Training sends the
turn the chat sends, so that a LoRA sees at serving time what it learned with.
"""

from __future__ import annotations

from ..settings import PerformerSettings
from .card import render

DEFAULT_SYSTEM = ("You are {{char}}. Stay in character: reply as {{char}} would, in the first person, with spoken "
                  "words only - no stage directions, no lines for anyone else. Never say you are an AI.")
DEFAULT_POST = "Reply as {{char}}, briefly, in {{char}}'s own voice."

def system_prompt(card: dict, user: str = "User", compact: bool = False) -> str:
    """The card's system prompt, description, personality and scenario; ``compact``: the system prompt alone."""
    data = card["data"]
    char = data["name"]
    parts = [data.get("system_prompt") or DEFAULT_SYSTEM]
    if not compact:
        parts += [data[key] for key in ("description", "personality", "scenario") if data.get(key)]
    return "\n\n".join(render(part, char, user).strip() for part in parts if part.strip())


def system_turns(card: dict | None, perf: PerformerSettings, user: str = "User") -> tuple[list[dict], list[dict]]:
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


def training_system_prompt(card: dict, system_turn: str = "card", user: str = "User") -> str:
    """The system turn the Performer sends with ``system_turn``: the card's system prompt (with its description,
    personality and scenario unless compact), then its post-history instructions."""
    return system_turns(card, PerformerSettings(post_history="system", system_turn=system_turn), user)[0][0]["content"]
