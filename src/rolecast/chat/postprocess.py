"""Post-processing of a model's reply: keep only what the character says, once, in full sentences.

    clean = PostProcessor("House", speakers=["Wilson", "Cuddy"])
    clean("House: It's not lupus.\\nWilson: It never is.").text      # → "It's not lupus."

    stream = clean.stream()                                          # the same rules, token by token
    for piece in backend.stream(...):
        print(stream.feed(piece), end="")
        if stream.stopped: break                                     # another speaker started
    print(stream.finish())

Rules, in order (each named in ``Cleaned.rules`` when it changed the text):

``strip_name``   drop a leading ``House:`` (the character's names, ``Assistant:``) and template macros.
``cut_speaker``  cut where another speaker's line or the user's starts: a known speaker or ``User``/
                 ``You`` with a colon at the start or after a sentence, any ``Name:`` at a line
                 start, or a blank line (spoken dialogue has no paragraphs; the rest is a list or an essay).
``directions``   drop stage directions ``(...)``, ``[...]``, ``*sighs*`` and markdown marks; one line.
``persona``      drop sentences in which the character says it is an AI or a language model.
``loops``        collapse a phrase said three times in a row, and sentences said twice.
``trim``         end on the last complete sentence; a lone fragment is closed with "...".

The streaming form holds back only what a later token could still change (a possible
``Name:`` after a newline, an open bracket, a sentence that repeats an earlier one), so
the first words reach the user as soon as the model writes them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

USER_NAMES = ("User", "You", "Human", "Me", "Assistant", "AI", "Bot")
_SENTENCE_END = re.compile(r'[.!?…]+["\')\]]*(?=\s|$)')
_DIRECTIONS = re.compile(r"\([^()]*\)|\[[^\[\]]*\]|\*[^*\n]{1,80}\*")
_OPEN_DIRECTION = re.compile(r"[\[(]|\*(?!\*)")
_MARKDOWN = re.compile(r"^\s*(?:#{1,6}\s+|[-*•]\s+|\d{1,2}[.)]\s+)|\*\*|__|`", re.M)
_LINE_START_NAME = re.compile(r"\n\s*[A-Z][\w.'\- ]{0,30}\s*:")
_POSSIBLE_NAME = re.compile(r"[A-Z][\w.'\- ]{0,30}$")
_PERSONA = re.compile(
    r"\b(as an ai|an ai (?:language )?model|a language model|i(?:'m| am) (?:just |only )?an? (?:ai|artificial intelligence|"
    r"language model|virtual assistant|chatbot|assistant|computer program)|i don't have (?:personal )?(?:feelings|emotions|"
    r"a body)|openai|chatgpt|smollm"
    # The fourth wall: a character who says it is a script or a character, or talks of its episodes, show or audience
    # (seen on an untrained show: "I'm just a script", "I'm just a character.", "a new episode of <the show>!").
    # Narrow on purpose: "a psychotic episode", "stick to the script" and "what a character" stay in character.
    r"|i(?:'m| am) (?:just |only |merely )?(?:an? )?(?:script|(?:fictional |tv |television |made-up )?character|"
    r"fictional|role in)|(?:new|next|last|this|latest|upcoming|previous) episode of|"
    r"(?:our|the|my) (?:viewers|audience at home|fourth wall|screenwriters|script ?writers|writers' room)|"
    r"(?:this|the|my|our) (?:tv show|sitcom|tv series))\b",
    re.I,
)
_PERSONA_START = re.compile(r"^\s*(?:as an?|i'm an?|i am an?|i'm just an?|i am just an?|i don't have)\b", re.I)
_MACRO = re.compile(r"\{\{\s*(?:char|user)\s*\}\}|<(?:BOT|USER)>", re.I)
_SPACES = re.compile(r"\s+")
_PHRASE_LOOP = re.compile(r"(\b(?:\w+\W+){0,7}?\w+\b[,.!?]?)(?:\s+\1){2,}", re.I)


@dataclass
class Cleaned:
    text: str
    rules: list[str] = field(default_factory=list)
    raw: str = ""
    stopped: bool = False  # the model started another speaker's line

    @property
    def empty(self) -> bool:
        return not self.text.strip()


def split_sentences(text: str) -> list[str]:
    """Sentences with their end punctuation; a final fragment is its own item."""
    out, start = [], 0
    for match in _SENTENCE_END.finditer(text):
        out.append(text[start:match.end()].strip())
        start = match.end()
    tail = text[start:].strip()
    if tail:
        out.append(tail)
    return [s for s in out if s]


def _one_line(text: str) -> str:
    """The text with each run of whitespace, line breaks included, made one space, and stripped."""
    return _SPACES.sub(" ", text).strip()


def ends_sentence(text: str) -> bool:
    """True when ``text`` ends with sentence-final punctuation (possibly inside closing quotes)."""
    return bool(re.search(r'[.!?…]["\')\]]*$', text.strip()))


def _sentence_key(sentence: str) -> str:
    return re.sub(r"\W+", " ", sentence).strip().casefold()


def _alternation(names: Iterable[str]) -> str:
    unique = sorted({n.strip() for n in names if n and n.strip()}, key=len, reverse=True)
    return "|".join(re.escape(n) for n in unique)


class PostProcessor:
    def __init__(self, character: str, speakers: Iterable[str] = (), aliases: Iterable[str] = (), user: str = "User"):
        own = {character, character.split()[0], *aliases}
        self.others = sorted({s for s in speakers if s not in own and len(s) > 1} | {user, *USER_NAMES})
        self._other_line = re.compile(rf"(?:^|(?<=[.!?…\"\n]))\s*\b(?:{_alternation(self.others)})\s*:", re.I)
        self._own_prefix = re.compile(rf"^\s*(?:(?:Dr\.?\s+)?(?:{_alternation(own)})|Assistant|A)\s*:\s*", re.I)
        self._own_midline = re.compile(rf"\n\s*(?:{_alternation(own)})\s*:\s*", re.I)
        self._own_prefixes = [f"{n}:".casefold() for n in own] + [f"dr. {n}:".casefold() for n in own] + ["assistant:", "a:"]
        self._other_names = [n.casefold() for n in self.others]
        #: Stop strings for the backend: generation ends as soon as another speaker starts.
        self.stop_strings = [f"\n{name}:" for name in self.others] + ["\n\n"]

    # -- batch -------------------------------------------------------------------
    def __call__(self, text: str) -> Cleaned:
        result = Cleaned(text, raw=text)
        cut = self._cut_point(self._strip_name(text))
        result.stopped = cut is not None
        result.text = self._apply(text, result.rules)
        trimmed = self._trim(result.text)
        if trimmed != result.text:
            result.rules.append("trim")
        result.text = trimmed
        return result

    def stream(self) -> StreamCleaner:
        return StreamCleaner(self)

    # -- checks (the evaluation counts what the rules would remove) ----------------
    def impersonates(self, text: str) -> bool:
        """Whether the text carries another speaker's line (``Name:`` of the show, the user's, or any at a line start)."""
        return bool(self._other_line.search(text) or _LINE_START_NAME.search(text))

    def _apply(self, text: str, rules: list[str] | None = None) -> str:
        steps = (("strip_name", self._strip_name), ("cut_speaker", self._cut_speaker), ("directions", _directions),
                 ("persona", _persona), ("loops", _loops))
        for name, step in steps:
            before, text = text, step(text)
            # A line break made a space is no rule's doing: the reply is shown as one line.
            if rules is not None and name not in rules and _one_line(text) != _one_line(before):
                rules.append(name)
        return text

    # -- rules -------------------------------------------------------------------
    def _strip_name(self, text: str) -> str:
        text = _MACRO.sub("", text)
        return self._own_midline.sub(" ", self._own_prefix.sub("", text, count=1))

    def _cut_point(self, text: str) -> int | None:
        cuts = [m.start() for m in (self._other_line.search(text), _LINE_START_NAME.search(text),
                                    re.search(r"\n\s*\n", text)) if m]
        return min(cuts) if cuts else None

    def _cut_speaker(self, text: str) -> str:
        cut = self._cut_point(text)
        return text if cut is None else text[:cut]

    def _trim(self, text: str) -> str:
        text = text.strip().rstrip(",;:-–—").strip()
        if not text or ends_sentence(text):
            return text
        sentences = split_sentences(text)
        if len(sentences) > 1:
            return " ".join(sentences[:-1])
        return text + "..." if re.search(r"\w", text) else text

    # -- what a later token could still change ------------------------------------------
    def hold_from(self, raw: str) -> int:
        """Index in ``raw`` from which text must wait for more tokens."""
        holds = [len(raw)]
        head = raw.lstrip().casefold()
        if head and len(head) < 30 and any(p.startswith(head) for p in self._own_prefixes):
            holds.append(0)
        opened = [m.start() for m in _OPEN_DIRECTION.finditer(raw)]
        closed = _DIRECTIONS.sub(lambda m: " " * len(m.group(0)), raw)
        still_open = [i for i in opened if i < len(closed) and closed[i] in "[(*"]
        if still_open:
            holds.append(still_open[0])
        newline = raw.rfind("\n")
        if newline >= 0 and _POSSIBLE_NAME.match(raw[newline + 1:].lstrip() or "A"):
            holds.append(newline)
        tail_start = _last_sentence_start(raw)
        tail = raw[tail_start:].strip().casefold()
        if tail and any(name.startswith(tail.rstrip(" :")) for name in self._other_names):
            holds.append(tail_start)
        return min(holds)


def _last_sentence_start(text: str) -> int:
    ends = list(_SENTENCE_END.finditer(text))
    return ends[-1].end() if ends else 0


def _directions(text: str) -> str:
    text = _MARKDOWN.sub("", text)  # first, so that **bold** is not read as an *action*
    previous = None
    while previous != text:
        previous, text = text, _DIRECTIONS.sub(" ", text)
    text = re.sub(r"[\[(][^\])]*$", " ", text)
    return _one_line(text)


def _persona(text: str) -> str:
    if not _PERSONA.search(text):
        return text
    return " ".join(s for s in split_sentences(text) if not _PERSONA.search(s))


def breaks_persona(text: str) -> bool:
    """Whether the text says it is an AI, a language model, an assistant, or breaks the fourth wall."""
    return bool(_PERSONA.search(text))


def loops(text: str) -> bool:
    """Whether the text repeats a phrase or a sentence (what the loop rule collapses)."""
    return _loops(text) != text


def _loops(text: str) -> str:
    """The text with repeated phrases and sentences collapsed; the text itself, line breaks and all, when none is."""
    collapsed = _PHRASE_LOOP.sub(r"\1", text)
    sentences = split_sentences(collapsed)
    seen: set[str] = set()
    kept = []
    for sentence in sentences:
        key = _sentence_key(sentence)
        if key and key in seen:
            continue
        seen.add(key)
        kept.append(sentence)
    return text if collapsed == text and len(kept) == len(sentences) else " ".join(kept)


class StreamCleaner:
    """Applies the post-processing rules as tokens arrive; see the module docstring."""

    def __init__(self, post: PostProcessor):
        self.post = post
        self.raw = ""
        self.shown = ""
        self.stopped = False

    def feed(self, piece: str) -> str:
        if self.stopped:
            return ""
        self.raw += piece
        raw = self.post._strip_name(self.raw) if self.post.hold_from(self.raw) > 0 else ""
        cut = self.post._cut_point(raw)
        if cut is not None:
            self.stopped = True
            raw = raw[:cut]
        else:
            raw = raw[: self.post.hold_from(raw)]
        clean = self.post._apply(raw)
        clean = self._hold_repeats(clean).rstrip(" ,;:-–—")  # a trailing comma may yet be trimmed
        if not clean.startswith(self.shown):
            return ""  # a rule rewrote shown text (rare): show nothing more until it agrees again
        new, self.shown = clean[len(self.shown):], clean
        return new

    def _hold_repeats(self, clean: str) -> str:
        """Hold back the current sentence while it may be a repeat or an AI disclaimer."""
        start = _last_sentence_start(clean)
        if ends_sentence(clean):
            return clean
        current = clean[start:].strip()
        key = _sentence_key(current)
        earlier = {_sentence_key(s) for s in split_sentences(clean[:start])}
        if key and (any(e.startswith(key) for e in earlier) or _PERSONA_START.match(current)):
            return clean[:start].rstrip()
        return clean

    def finish(self) -> str:
        """The rest of the reply, once generation has ended; closes an unfinished sentence."""
        final = self.post(self.raw).text
        if final.startswith(self.shown):
            rest = final[len(self.shown):]
            if self.shown and rest and not self.shown.endswith(" ") and not rest.startswith((" ", ".", ",", "!", "?")):
                rest = " " + rest
        else:
            rest = "" if ends_sentence(self.shown) or not self.shown.strip() else "..."
        self.shown += rest
        return rest

    @property
    def text(self) -> str:
        return self.shown.strip()
