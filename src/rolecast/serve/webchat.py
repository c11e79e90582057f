"""The web chat: a Gradio page at ``/`` of the API's FastAPI app, over the same chat core.

    rolecast serve packs/house packs/chandler        # then open http://127.0.0.1:8000/

    mount(app, service)                              # what create_app does when settings.web is true

Pick a character (its avatar and greeting appear), chat with replies streamed as they
are generated, regenerate, undo or clear, and tune sampling in the settings panel. Each
reply's scores (style, relevance, ...) are shown under the chat.

Conversations live server-side in the SQLite store (owner ``"web"``). The browser only
keeps, in its localStorage (``gr.BrowserState``), which conversation it has with each
character and the character last picked, so reloading the page brings the history
back from the store.

Everything the model or the user wrote is HTML-escaped before it reaches the page (and
the Chatbot sanitises as well): a reply with ``<script>`` shows the tag as text.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import html
import tempfile
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import gradio as gr
from fastapi import FastAPI
from PIL import Image
from starlette.routing import Match, Mount
from starlette.types import Scope

from ..chat.performer import Reply
from ..errors import MessageError, NotFoundError, RolecastError
from ..pack.card import initials_avatar
from ..settings import GenerationSettings, PerformerSettings, Settings
from .service import ChatService

OWNER = "web"
STORAGE_KEY = "rolecast-web"
# BrowserState encrypts in the browser with a key it sends to that very browser, so the
# key protects nothing; a fixed one keeps saved ids readable after a server restart (the
# default, random per process, would orphan every browser's conversations). What guards
# a conversation is its unguessable id plus the owner check in _conversation.
STORAGE_SECRET = "rolecast-web-conversations"
#: The sliders of the settings panel: (settings model, field) — bounds come from the field.
SLIDERS: tuple[tuple[type[Settings], str], ...] = (
    (GenerationSettings, "temperature"), (GenerationSettings, "top_p"),
    (GenerationSettings, "max_tokens"), (PerformerSettings, "candidates"))
SCORE_ORDER = ("style", "relevance", "repetition", "length")

Chat = list[dict[str, str]]
Saved = dict[str, Any]  # {"character": id | None, "conversations": {character id: conversation id}}
Out = tuple[Chat, str, Any, Saved]  # chatbot, score line, message box, browser state


def escape(text: str) -> str:
    """Text made inert for the Chatbot's markdown: HTML shows as text, no image is fetched.

    Markdown stays on for plain text; ``![..](url)`` is defused because an image loads by
    itself, which would let a reply make the browser call any address.
    """
    return html.escape(text).replace("![", "!\\[")


def warn(err: RolecastError) -> None:
    # gr.Warning renders its message as HTML, and errors can quote user input.
    gr.Warning(html.escape(str(err)))


def slider(model: type[Settings], name: str, value: Any) -> gr.Slider:
    """A slider whose bounds, label and help are the pydantic field's own."""
    field = model.model_fields[name]
    integer = field.annotation is int
    step = 1 if integer else 0.01
    low = high = None
    for rule in field.metadata:
        low = getattr(rule, "ge", low)
        high = getattr(rule, "le", high)
        if getattr(rule, "gt", None) is not None:
            low = rule.gt + step  # a slider cannot exclude its minimum
    return gr.Slider(low, high, value=value, step=step, label=name.replace("_", " "), info=field.description)


def saved_state(saved: Any) -> Saved:
    """The browser's saved state, whatever it sent (a fresh browser sends the default)."""
    saved = saved if isinstance(saved, dict) else {}
    convs = saved.get("conversations")
    return {"character": saved.get("character"), "conversations": dict(convs) if isinstance(convs, dict) else {}}


class WebChat:
    """The page's handlers (plain functions of their inputs, so tests call them) and its layout."""

    def __init__(self, service: ChatService):
        self.service = service
        self._avatars: dict[str, str] = {}
        self._key_of: dict[str, str] = {}  # signed-in user name -> the API key's identity (sign_in)
        self._dir = tempfile.TemporaryDirectory(prefix="rolecast-web-")  # removed with this object

    # -- views -------------------------------------------------------------------------
    def choices(self) -> list[tuple[str, str]]:
        return [(f"{m.name} — {m.show}" if m.show else m.name, m.id) for m in self.service.models()]

    def avatar(self, character: str) -> str:
        """A PNG of the pack's avatar.png, else a portrait with the character's initials."""
        if character not in self._avatars:
            served = self.service.model(character)
            # Written once as a file: Gradio re-encodes a PIL image into its cache on every
            # update, in place, and a browser fetching it meanwhile gets a truncated file.
            path = Path(self._dir.name) / f"{len(self._avatars)}.png"
            if served.avatar is not None:
                with Image.open(served.avatar) as image:
                    image.save(path, format="PNG")
            else:
                initials_avatar(served.name).save(path, format="PNG")
            self._avatars[character] = str(path)
        return self._avatars[character]

    def chat(self, character: str, conv_id: str | None) -> Chat:
        """The greeting (shown, never stored or sent to the model), then the stored turns."""
        greeting = self.service.greeting(character)
        chat = [{"role": "assistant", "content": escape(greeting)}] if greeting else []
        if conv_id:
            chat += [{"role": m["role"], "content": escape(m["content"])} for m in self.service.messages(conv_id)
                     if m["role"] in ("user", "assistant")]
        return chat

    def scores(self, conv_id: str | None) -> str:
        """One line with the last reply's scores (and notices), from what the store kept."""
        replies = [m for m in self.service.messages(conv_id) if m["role"] == "assistant"] if conv_id else []
        if not replies:
            return ""
        meta = replies[-1]["meta"]
        found = meta.get("scores") or {}
        parts = [f"{name} {found[name]:.2f}" for name in (*SCORE_ORDER, *sorted(set(found) - set(SCORE_ORDER)))
                 if isinstance(found.get(name), (int, float))]
        notices = [escape(str(n)) for n in meta.get("notices") or []]
        return "Last reply: " + (" · ".join(parts) or "no scores") + "".join(f"  \n⚠ {n}" for n in notices)

    def _conversation(self, character: str, saved: Saved) -> tuple[str | None, Saved]:
        """This browser's saved conversation with the character, or None (the stale id dropped from ``saved``)."""
        self.service.character(character)
        conv_id = saved["conversations"].get(character)
        if conv_id:
            try:  # the id comes from the browser: only a web conversation with this character will do
                if self.service.conversation(str(conv_id), OWNER)["character"] == character:
                    return str(conv_id), saved
            except NotFoundError:
                pass
        saved = {**saved, "conversations": {**saved["conversations"]}}
        saved["conversations"].pop(character, None)
        return None, saved

    async def _new_conversation(self, character: str, saved: Saved) -> tuple[str, Saved]:
        conv_id = (await self.service.create_conversation(character, OWNER, "web chat"))["id"]
        return conv_id, {**saved, "conversations": {**saved["conversations"], character: conv_id}}

    def _view(self, character: str, saved: Any) -> tuple[str | None, Chat, str, Saved]:
        saved = saved_state(saved) | {"character": character}
        conv_id, saved = self._conversation(character, saved)
        return conv_id, self.chat(character, conv_id), self.scores(conv_id), saved

    # -- handlers ----------------------------------------------------------------------
    def load(self, saved: Any) -> tuple[Any, Any, Chat, str, Saved]:
        """Page load: the character last picked in this browser (else the first), with its history."""
        saved = saved_state(saved)
        ids = [m.id for m in self.service.models()]
        if not ids:
            return gr.update(), None, [], "No character is served.", saved
        character = saved["character"] if saved["character"] in ids else ids[0]
        _, chat, scores, saved = self._view(character, saved)
        return gr.update(value=character), self.avatar(character), chat, scores, saved

    def pick(self, character: str, saved: Any) -> tuple[Any, Chat, str, Saved]:
        try:
            _, chat, scores, saved = self._view(character, saved)
        except RolecastError as err:
            warn(err)
            return gr.update(), gr.update(), gr.update(), saved_state(saved)
        return self.avatar(character), chat, scores, saved

    async def send(self, message: str, character: str, saved: Any, *values: float, who: str | None = None
                   ) -> AsyncIterator[Out]:
        """Send the message and stream the reply into the chat (``who``: the caller, for the rate limit)."""
        async for out in self._turn(character, saved, message or "", values, regenerate=False, who=who):
            yield out

    async def regenerate(self, character: str, saved: Any, *values: float, who: str | None = None
                         ) -> AsyncIterator[Out]:
        """Replace the last reply with a new one (or answer a message left without one)."""
        async for out in self._turn(character, saved, "", values, regenerate=True, who=who):
            yield out

    def sign_in(self, username: str, password: str, keys: Sequence[bytes]) -> bool:
        """Gradio's check of a sign-in (any user name, an API key as the password). The name is the caller's
        choice, so the rate limit counts the key behind it, as the API does (``key:`` + its hash)."""
        matched = False
        for key in keys:  # every key compared, in constant time
            matched |= hmac.compare_digest(password.encode(), key)
        if matched:
            self._key_of[username] = "key:" + hashlib.sha256(password.encode()).hexdigest()[:16]
        return matched

    def caller(self, request: gr.Request | None) -> str | None:
        """Who the rate limit counts: the API key a signed-in user gave (a new name gets no new allowance), else
        the browser's address."""
        if request is None:
            return None
        if request.username and request.username in self._key_of:
            return self._key_of[request.username]
        return "web:" + (request.client.host if request.client else "unknown")

    async def undo(self, character: str, saved: Any) -> Out:
        """Remove the last exchange; the user's message goes back into the box for editing."""
        try:
            conv_id, saved = self._conversation(character, saved_state(saved))
        except RolecastError as err:
            warn(err)
            return gr.update(), gr.update(), gr.update(), saved_state(saved)
        removed = await self.service.undo(conv_id) if conv_id else None
        box = removed if removed is not None else gr.update()
        return self.chat(character, conv_id), self.scores(conv_id), box, saved

    async def clear(self, character: str, saved: Any) -> Out:
        """Forget the conversation's messages: the greeting again."""
        try:
            conv_id, saved = self._conversation(character, saved_state(saved))
        except RolecastError as err:
            warn(err)
            return gr.update(), gr.update(), gr.update(), saved_state(saved)
        if conv_id:
            await self.service.clear(conv_id)
        return self.chat(character, conv_id), "", gr.update(), saved

    # -- the blind test (serve --blind) ------------------------------------------------
    def blind_due(self) -> bool:
        """Whether this turn is a blind A/B turn."""
        return self.service.blind_turn_due()

    def panel(self, character: str, saved: Any) -> tuple[Any, str, str]:
        """The two replies waiting for a vote in this browser's conversation: shown, or the panel hidden."""
        try:
            conv_id, _ = self._conversation(character, saved_state(saved))
        except RolecastError:
            conv_id = None
        pending = self.service.pending_vote(conv_id) if conv_id else None
        if not pending:
            return gr.update(visible=False), "", ""
        return gr.update(visible=True), escape(pending["a"]), escape(pending["b"])

    async def vote(self, choice: str, character: str, saved: Any) -> Out:
        """Record the vote; the chosen reply joins the conversation."""
        try:
            conv_id, saved = self._conversation(character, saved_state(saved))
            if conv_id is None:
                raise NotFoundError("no replies are waiting for a vote here", "send a message")
            await self.service.vote(conv_id, choice)
        except RolecastError as err:
            warn(err)
            return gr.update(), gr.update(), gr.update(), saved_state(saved)
        return self.chat(character, conv_id), self.scores(conv_id), gr.update(), saved

    async def _turn(self, character: str, saved: Any, message: str, values: tuple, regenerate: bool,
                    who: str | None = None) -> AsyncIterator[Out]:
        saved = saved_state(saved) | {"character": character}
        keep = gr.update() if regenerate else message  # the box's text when nothing was sent
        try:
            if not regenerate and not message.strip():
                raise MessageError("the message is empty", "type something for the character to answer")
            if who is not None:
                self.service.check_rate(who)
            gen, perf = self.settings(character, *values)
            conv_id, saved = self._conversation(character, saved)
            if conv_id is None and not regenerate:
                conv_id, saved = await self._new_conversation(character, saved)
            if conv_id is None:
                raise MessageError("nothing to regenerate in this conversation", "send a message first")
        except RolecastError as err:
            warn(err)
            yield gr.update(), gr.update(), keep, saved
            return
        if not regenerate and self.blind_due():
            async for out in self._blind(character, saved, conv_id, message, gen):
                yield out
            return
        stored = len(self.service.messages(conv_id))
        chat = self.chat(character, conv_id)
        if regenerate and stored and chat[-1]["role"] == "assistant":
            chat.pop()
        if not regenerate:
            chat.append({"role": "user", "content": escape(message)})
        chat.append({"role": "assistant", "content": ""})
        yield [*chat], "", gr.update() if regenerate else "", saved
        try:
            async for out in self._stream(chat, saved, conv_id, message, gen, perf, regenerate):
                yield out
        except RolecastError as err:  # busy, empty after all, backend down: the stored turns stay
            warn(err)
            unsent = not regenerate and len(self.service.messages(conv_id)) == stored
            yield self.chat(character, conv_id), self.scores(conv_id), message if unsent else gr.update(), saved
            return
        yield self.chat(character, conv_id), self.scores(conv_id), gr.update(), saved

    async def _blind(self, character: str, saved: Saved, conv_id: str, message: str,
                     gen: GenerationSettings) -> AsyncIterator[Out]:
        """A blind turn: two replies are generated whole; the page then shows both (``panel``) for a vote."""
        chat = self.chat(character, conv_id) + [{"role": "user", "content": escape(message)},
                                                {"role": "assistant", "content": "…"}]
        yield chat, "", "", saved
        try:
            await self.service.blind_turn(conv_id, message, gen)
        except RolecastError as err:  # nothing was stored: the message goes back into the box
            warn(err)
            yield self.chat(character, conv_id), self.scores(conv_id), message, saved
            return
        yield self.chat(character, conv_id), "Which reply is better? Vote below.", gr.update(), saved

    async def _stream(self, chat: Chat, saved: Saved, conv_id: str, message: str, gen: GenerationSettings,
                      perf: PerformerSettings, regenerate: bool) -> AsyncIterator[Out]:
        text = ""
        async for item in self.service.turn_stream(conv_id, message, gen, perf, regenerate=regenerate):
            if isinstance(item, Reply):
                return  # the store now holds the finished (cleaned) reply; the caller shows it
            text += item
            chat[-1] = {"role": "assistant", "content": escape(text)}
            yield [*chat], gr.update(), gr.update(), saved

    def settings(self, character: str, *values: float) -> tuple[GenerationSettings, PerformerSettings]:
        """The character's settings with the sliders' values applied (validated: out of bounds is refused)."""
        gen_defaults, perf_defaults = self.service.defaults(character)
        gen = {name: value for (model, name), value in zip(SLIDERS, values) if model is GenerationSettings}
        perf = {name: value for (model, name), value in zip(SLIDERS, values) if model is PerformerSettings}
        return gen_defaults.updated(**gen), perf_defaults.updated(**perf)

    # -- layout ------------------------------------------------------------------------
    def build(self) -> gr.Blocks:
        first = next((m.id for m in self.service.models()), None)
        gen, perf = self.service.defaults(first) if first else (GenerationSettings(), PerformerSettings())
        defaults = {GenerationSettings: gen, PerformerSettings: perf}
        with gr.Blocks(title="rolecast", analytics_enabled=False) as blocks:
            saved = gr.BrowserState({"character": None, "conversations": {}}, storage_key=STORAGE_KEY,
                                    secret=STORAGE_SECRET)
            gr.Markdown("## rolecast\nChat with a character who talks like the scripts.")
            with gr.Row():
                with gr.Column(scale=1, min_width=240):
                    character = gr.Dropdown(self.choices(), value=first, label="Character", elem_id="character")
                    avatar = gr.Image(self.avatar(first) if first else None, show_label=False, interactive=False,
                                      height=300, buttons=[], elem_id="avatar")
                    with gr.Accordion("Settings", open=False):
                        sliders = [slider(model, name, getattr(defaults[model], name)) for model, name in SLIDERS]
                with gr.Column(scale=3):
                    chatbot = gr.Chatbot(self.chat(first, None) if first else [], label="Chat", height=480,
                                         sanitize_html=True, allow_tags=False, render_markdown=True,
                                         feedback_options=None, buttons=["copy_all"], elem_id="chat")
                    scores = gr.Markdown(elem_id="scores")
                    with gr.Group(visible=False, elem_id="blind") as panel:
                        with gr.Row():
                            with gr.Column():
                                gr.Markdown("**Reply A**")
                                reply_a = gr.Markdown(elem_id="reply-a")
                            with gr.Column():
                                gr.Markdown("**Reply B**")
                                reply_b = gr.Markdown(elem_id="reply-b")
                        with gr.Row():
                            vote_a = gr.Button("A is better", size="sm", elem_id="vote-a")
                            vote_tie = gr.Button("Both equal", size="sm", elem_id="vote-tie")
                            vote_b = gr.Button("B is better", size="sm", elem_id="vote-b")
                    with gr.Row():
                        box = gr.Textbox(placeholder="Say something…", show_label=False, scale=5, autofocus=True,
                                         elem_id="message")
                        send = gr.Button("Send", variant="primary", scale=1, elem_id="send")
                    with gr.Row():
                        again = gr.Button("↻ Regenerate", size="sm", elem_id="regenerate")
                        undo = gr.Button("↶ Undo", size="sm", elem_id="undo")
                        clear = gr.Button("✕ Clear", size="sm", elem_id="clear")
            turn = [chatbot, scores, box, saved]
            # The chat core limits generations itself (a pool per model, 429 beyond its queue):
            # Gradio's default of one event at a time would make every browser wait for one.
            opts: dict[str, Any] = {"api_visibility": "private", "concurrency_limit": None}
            # After every event, the blind panel shows the replies waiting for a vote, if any.
            show = (self.panel, [character, saved], [panel, reply_a, reply_b])
            blocks.load(self.load, [saved], [character, avatar, chatbot, scores, saved], **opts).then(*show, **opts)
            character.input(self.pick, [character, saved], [avatar, chatbot, scores, saved], **opts).then(*show, **opts)
            # Gradio hands a gr.Request only to a positional parameter: these wrappers take it for the rate limit.
            async def send_event(message, character, saved, request: gr.Request, *values):
                async for out in self.send(message, character, saved, *values, who=self.caller(request)):
                    yield out

            async def regenerate_event(character, saved, request: gr.Request, *values):
                async for out in self.regenerate(character, saved, *values, who=self.caller(request)):
                    yield out

            for trigger in (box.submit, send.click):
                trigger(send_event, [box, character, saved, *sliders], turn, show_progress="hidden",
                        **opts).then(*show, **opts)
            again.click(regenerate_event, [character, saved, *sliders], turn, show_progress="hidden",
                        **opts).then(*show, **opts)
            undo.click(self.undo, [character, saved], turn, **opts).then(*show, **opts)
            for trigger in (clear.click, chatbot.clear):  # the Chatbot's own trash icon clears the store too
                trigger(self.clear, [character, saved], turn, **opts).then(*show, **opts)
            for button, choice in ((vote_a, "a"), (vote_b, "b"), (vote_tie, "tie")):
                button.click(functools.partial(self.vote, choice), [character, saved], turn, **opts).then(*show, **opts)
        return blocks


class _PageMount(Mount):
    """The page's mount at "/", which leaves ``/v1`` to the API even where no API route matches.

    Mounted at "/", Gradio would otherwise answer every unmatched path: ``GET
    /v1/chat/completions`` would get its 404 instead of the API's 405 in OpenAI's shape.
    """

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        path = scope.get("path", "")
        if path == "/v1" or path.startswith("/v1/"):
            return Match.NONE, {}
        return super().matches(scope)


def mount(app: FastAPI, service: ChatService, api_keys: Sequence[str] = ()) -> None:
    """Serve the web chat at ``/`` of ``app``; its routes (``/v1``, ``/healthz``) keep precedence.

    When the server has API keys, the page asks for one (as the password; any user name),
    so the web chat is no back door to the model.
    """
    chat = WebChat(service)
    keys = [k.encode() for k in api_keys]

    def signed_in(username: str, password: str) -> bool:
        return chat.sign_in(username, password, keys)

    gr.mount_gradio_app(app, chat.build(), path="/", ssr_mode=False, run_history=False, show_error=False,
                        footer_links=["gradio"], allowed_paths=[chat._dir.name],
                        auth=signed_in if keys else None,
                        auth_message="Sign in with any user name and one of the server's API keys as the password.")
    added = app.router.routes[-1]  # the Mount that mount_gradio_app just appended, holding Gradio's app
    app.router.routes[-1] = _PageMount("/", app=added.app)
