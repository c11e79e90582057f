"""Chat templates: the one place a conversation becomes the text a model reads, in training and in chat.

    template = ChatTemplate.of_tokenizer(tokenizer)              # transformers' tokenizer (training, hf backend)
    template = ChatTemplate(text, bos="<s>", eos="</s>")         # a GGUF's tokenizer.chat_template (llama.cpp)
    template.render(messages, generation=True)                   # the prompt the model answers
    text, turns = template.layout(messages)                      # where each turn sits: the masker's input

Every family's official template renders here, in a sandbox like transformers' own, and
rolecast adapts the conversation to the template, never the template to rolecast:

- a system turn is folded into the first user turn where the template refuses one (Gemma 2,
  Mistral v0.3) or silently drops it (early Phi-3; Mistral's when an assistant turn ends the
  conversation); a later one (post-history instructions) becomes a user turn where the template
  drops it (Phi-4-mini);
- where a template insists on alternating turns (Gemma, Mistral), turns of one role in a row
  are joined, a later system turn (post-history instructions) joins the user turn before it, and
  a conversation the character opens gets a scene-opening user turn;
- Qwen3's thinking is off (``enable_thinking=False``: its empty ``<think>`` block is part of every
  prompt, as Qwen documents for non-thinking chat) and Llama 3's date header is fixed
  (``date_string``), so training rows and chat prompts render alike on any day.

What a template does is probed once, with sentinel conversations, not guessed from its name. A
template rolecast cannot use (it fails to render a plain conversation, its generation prompt is
not where its assistant turn starts, or an assistant turn has no end marker) is refused with one
:class:`TemplateError` line naming the model, before anything trains or serves.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from datetime import datetime

from ..errors import ModelError, first_line, require

CHATML = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SCENE_START = "(The scene begins.)"  # the user turn strict templates need when the character speaks first
#: Variables every render passes: official templates read them, others ignore them.
#: Qwen3 answers without a thinking block; Llama 3.x prints this date (its template's own default) every day.
TEMPLATE_VARIABLES = {"enable_thinking": False, "date_string": "26 Jul 2024"}
_MARK = re.compile("\ue000(\\d+)\ue001")  # private-use characters: no script line or template contains them


class TemplateError(ModelError):
    """A chat template rolecast cannot use, or that refused a conversation."""


def mark(i: int) -> str:
    return f"\ue000{i}\ue001"


@functools.lru_cache(maxsize=16)
def compile_template(source: str):
    """The template compiled as transformers compiles it: sandboxed, trimmed blocks, ``{% generation %}`` and
    loop controls, ``tojson`` without ASCII escapes, ``raise_exception`` and ``strftime_now``."""
    jinja2 = require("jinja2", "chat")
    from jinja2.ext import Extension
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class Generation(Extension):  # transformers' marker of assistant text: rendered as it is
        tags = {"generation"}

        def parse(self, parser):
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            return jinja2.nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

        def _body(self, caller):
            return caller()

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(value, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[Generation, "jinja2.ext.loopcontrols"])
    env.filters["tojson"] = tojson
    env.globals.update(raise_exception=raise_exception, strftime_now=lambda fmt: datetime.now().strftime(fmt))
    return env.from_string(source)


@dataclass(frozen=True)
class Turn:
    """One message of a rendered conversation: its role and where its content (and, for the assistant, the whole
    span the model must produce: lead, content, end marker) lies in the text."""

    role: str
    start: int
    end: int
    span: tuple[int, int]


class ChatTemplate:
    """A model's chat template with what it accepts probed: render conversations, lay out their turns."""

    def __init__(self, source: str | None, bos: str = "", eos: str = "", name: str = "the model"):
        self.source, self.bos, self.eos, self.name = source or CHATML, bos or "", eos or "", name
        try:
            self._template = compile_template(self.source)
        except Exception as exc:  # jinja2's TemplateSyntaxError and friends
            raise self.refused(f"it does not compile ({first_line(exc)})") from None
        self.folds_system, self.strict, self.later_system = self._probe_roles()
        self.lead, self.tail = self._probe_assistant()

    @classmethod
    def of_tokenizer(cls, tokenizer, name: str | None = None) -> ChatTemplate:
        source = tokenizer.chat_template
        if isinstance(source, dict):  # several named templates: the default one chats
            source = source.get("default")
        return cls(source, tokenizer.bos_token or "", tokenizer.eos_token or "",
                   name or getattr(tokenizer, "name_or_path", "") or "the model")

    def refused(self, why: str) -> TemplateError:
        return TemplateError(f"the chat template of {self.name} cannot be used: {why}",
                             "pick a base whose chat template works (`rolecast models` lists tested ones)")

    # -- rendering ---------------------------------------------------------------
    def raw(self, messages: list[dict], generation: bool = False) -> str:
        """The template's own rendering of ``messages`` as they are (jinja's errors propagate)."""
        return self._template.render(messages=messages, add_generation_prompt=generation, bos_token=self.bos,
                                     eos_token=self.eos, **TEMPLATE_VARIABLES)

    def render(self, messages: list[dict], generation: bool = False, drop_bos: bool = False) -> str:
        """``messages`` adapted to the template and rendered; ``generation``: ending where the model answers;
        ``drop_bos``: without the BOS the template writes, for a tokenizer that adds its own (Llama 3, Gemma)."""
        try:
            text = self.raw(self.normalize(messages), generation)
        except Exception as exc:
            raise self.refused_conversation(exc) from None
        return text[len(self.bos):] if drop_bos and self.bos and text.startswith(self.bos) else text

    def refused_conversation(self, exc: Exception) -> TemplateError:
        return TemplateError(f"the chat template of {self.name} refused the conversation ({first_line(exc)})",
                             "report it with the model's name: rolecast adapts conversations to tested templates")

    def tokens(self, tokenizer, messages: list[dict], generation: bool = False) -> list[int]:
        """The rendering as token ids of ``tokenizer`` (the template writes its special tokens itself)."""
        return tokenizer(self.render(messages, generation), add_special_tokens=False)["input_ids"]

    # -- what the template accepts -------------------------------------------------
    def _try(self, messages: list[dict], generation: bool = False) -> str | None:
        try:
            return self.raw(messages, generation)
        except Exception:
            return None

    def _probe_roles(self) -> tuple[bool, bool, bool]:
        """(fold the system turn into the first user turn, join turns so that roles alternate, keep a later
        system turn as one)."""
        # Mistral's templates write the system text into the last user turn, and drop it when an assistant turn
        # ends the conversation (every training row): folded, it stays in every rendering.
        opening = [{"role": "system", "content": mark(0)}, {"role": "user", "content": mark(1)}]
        shown = [self._try(opening, generation=True), self._try([*opening, {"role": "assistant", "content": mark(2)}])]
        folds = any(text is None or mark(0) not in text for text in shown)
        strict = self._try([{"role": "user", "content": mark(0)}, {"role": "user", "content": mark(1)}]) is None
        later = self._try([*opening, {"role": "system", "content": mark(2)}], generation=True)  # Phi-4 drops it
        return folds, strict, later is not None and mark(2) in later

    def _probe_assistant(self) -> tuple[str, str]:
        """What the template writes between its generation prompt and the reply, and after the reply."""
        ask = [{"role": "user", "content": "Hello?"}]
        try:
            prompt = self.raw(self.normalize(ask), generation=True)
            whole = self.raw(self.normalize([*ask, {"role": "assistant", "content": mark(0)}]))
        except Exception as exc:
            raise self.refused(f"it fails on a plain conversation ({first_line(exc)})") from None
        if not whole.startswith(prompt) or mark(0) not in whole[len(prompt):]:
            raise self.refused("its generation prompt is not where its assistant turn begins")
        lead, _, tail = whole[len(prompt):].partition(mark(0))
        if not tail.strip():
            raise self.refused("its assistant turn has no end marker, so a reply would never stop")
        return lead, tail

    def normalize(self, messages: list[dict]) -> list[dict]:
        """``messages`` as the template accepts them (see the module's docstring)."""
        return self.normalize_map(messages)[0]

    def normalize_map(self, messages: list[dict]) -> tuple[list[dict], list[int]]:
        """The normalized messages, and for each given message the index of the one that now holds it."""
        items = [({"role": m["role"], "content": (m.get("content") or "").strip()}, [i]) for i, m in enumerate(messages)]
        system = items.pop(0) if items and items[0][0]["role"] == "system" else None
        if self.strict or self.folds_system or not self.later_system:  # later system turns become the user's
            items = [({"role": "user" if m["role"] == "system" else m["role"], "content": m["content"]}, ix)
                     for m, ix in items]
        if self.strict:
            joined: list[tuple[dict, list[int]]] = []
            for m, ix in items:
                if joined and joined[-1][0]["role"] == m["role"]:
                    prev, pix = joined[-1]
                    joined[-1] = ({**prev, "content": f"{prev['content']}\n{m['content']}"}, pix + ix)
                else:
                    joined.append((m, ix))
            items = joined
            if not items or items[0][0]["role"] != "user":
                items.insert(0, ({"role": "user", "content": SCENE_START}, []))
        if system is not None and self.folds_system:
            if items and items[0][0]["role"] == "user":
                first, ix = items[0]
                items[0] = ({**first, "content": f"{system[0]['content']}\n\n{first['content']}"}, system[1] + ix)
            else:
                items.insert(0, ({"role": "user", "content": system[0]["content"]}, system[1]))
        elif system is not None:
            items.insert(0, system)
        owner = [0] * len(messages)
        for k, (_, ix) in enumerate(items):
            for i in ix:
                owner[i] = k
        return [m for m, _ in items], owner

    # -- where each turn lies --------------------------------------------------------
    def layout(self, messages: list[dict]) -> tuple[str, list[Turn]]:
        """The rendering of ``messages`` (normalized) and where each normalized turn lies in it (``layout_map``)."""
        text, turns, _ = self.layout_map(messages)
        return text, turns

    def layout_map(self, messages: list[dict]) -> tuple[str, list[Turn], list[int]]:
        """``layout``, and for each given message the index of the turn that holds it (``normalize_map``).

        The conversation is rendered twice, once with each message's content replaced by a sentinel:
        where a sentinel lands is where its content is, whatever the template does around it (Qwen3
        gives only the last assistant turn a ``<think>`` block, Mistral moves the system text to the
        last user turn, Phi-4 closes the whole with its end-of-text). An assistant turn's span runs
        from the template's lead before the reply to its end marker, as the model writes them.
        """
        norm, owner = self.normalize_map(messages)
        try:
            text = self.raw(norm)
            shown = self.raw([{**m, "content": mark(i)} for i, m in enumerate(norm)])
        except Exception as exc:
            raise self.refused_conversation(exc) from None
        parts, starts, pos, last = [], {}, 0, 0
        for hit in _MARK.finditer(shown):
            k = int(hit.group(1))
            parts.append(shown[last:hit.start()])
            pos += hit.start() - last
            if k in starts:
                raise self.refused("it renders a message twice")
            starts[k] = pos
            parts.append(norm[k]["content"])
            pos += len(norm[k]["content"])
            last = hit.end()
        parts.append(shown[last:])
        if len(starts) != len(norm) or "".join(parts) != text:
            raise self.refused("it drops or rewrites a message's text")
        turns = []
        for k, m in enumerate(norm):
            start, end = starts[k], starts[k] + len(m["content"])
            span = (start, end)
            if m["role"] == "assistant":
                lead = len(self.lead) if text[:start].endswith(self.lead) else 0
                span = (start - lead, end + self.closing(text[end:]))
            turns.append(Turn(m["role"], start, end, span))
        return text, turns, owner

    def closing(self, after: str) -> int:
        """How much of ``after`` (the text after a turn's content) is the template's end marker: the longest
        start of its assistant tail that ``after`` shares and that ends on a marker or a line break (Phi's
        tail ``<|end|>\n<|endoftext|>`` ends the last turn; a middle one ends at ``<|end|>\n``)."""
        n = common_prefix(after, self.tail)
        cuts = [0, *(m.end() for m in _CUT.finditer(self.tail))]
        return max(c for c in cuts if c <= n)


_CUT = re.compile(r"<[^<>\s]*>|\[/?[A-Z_]+\]|\n")  # where an end marker may stop: after a tag or a line break


def common_prefix(a: str, b: str) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n
