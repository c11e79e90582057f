"""The web chat: its handlers called directly (fast), then the real page in Chromium (slow)."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import socket
import threading
import time
from pathlib import Path

import pytest

from conftest import FakeBackend, make_pack

pytest.importorskip("gradio", reason="the web chat needs the serve extra (gradio)")

from fastapi.testclient import TestClient  # noqa: E402
from PIL import Image  # noqa: E402

from rolecast.serve.server import create_app  # noqa: E402
from rolecast.serve.service import ChatService  # noqa: E402
from rolecast.serve.webchat import SLIDERS, WebChat, escape, slider  # noqa: E402
from rolecast.settings import BackendSettings, GenerationSettings, ServeSettings  # noqa: E402

DEFAULTS = (0.8, 0.92, 64, 1)  # temperature, top_p, max_tokens, candidates: the SLIDERS' order
LONG = "Sit down, Otto. The tide waits for no one and neither do I, so eat your soup before it goes cold."
GREETING = "Evening, {{user}}. I am {{char}}."
XSS = 'Look: <img src=x onerror="window.__xss=1"> and <script>window.__xss=2</script> done.'


def open_service(tmp_path: Path, backend: FakeBackend, web: bool = False, **blind) -> tuple[ServeSettings, ChatService]:
    packs = [make_pack(tmp_path / "maggie", "Maggie", ["Otto"], GREETING, avatar=True),
             make_pack(tmp_path / "otto", "Otto", ["Maggie"], GREETING)]
    serve = ServeSettings(db=str(tmp_path / "chat.db"), web=web, **blind)
    return serve, ChatService.open(packs, serve, BackendSettings(backend="fake"), make_backend=lambda s, a: backend)


@pytest.fixture
def backend() -> FakeBackend:
    return FakeBackend()


@pytest.fixture
def service(tmp_path, backend):
    _, service = open_service(tmp_path, backend)
    yield service
    service.close()


@pytest.fixture
def web(service) -> WebChat:
    return WebChat(service)


def collect(agen) -> list[tuple]:
    async def run():
        return [out async for out in agen]

    return asyncio.run(run())


def texts(chat) -> list[tuple[str, str]]:
    return [(m["role"], m["content"]) for m in chat]


# ----------------------------------------------------------------------------- handlers


def test_picker_avatar_and_greeting(web):
    assert web.choices() == [("Maggie — Harbor Lights", "maggie"), ("Otto — Harbor Lights", "otto")]
    with Image.open(web.avatar("maggie")) as own, Image.open(web.avatar("otto")) as initials:
        assert own.size == (32, 48)  # the pack's avatar.png
        assert initials.size == (400, 600)  # generated from the name
    avatar, chat, scores, saved = web.pick("otto", None)
    assert avatar == web.avatar("otto") and scores == ""
    assert texts(chat) == [("assistant", "Evening, User. I am Otto.")]
    assert saved == {"character": "otto", "conversations": {}}


def test_load_restores_the_character_and_history_from_the_store(web, service, backend):
    dropdown, _, chat, _, saved = web.load(None)
    assert dropdown["value"] == "maggie" and saved["character"] == "maggie"
    assert service._store.conversations("web") == []  # merely looking creates nothing
    backend.queue("Sit down.")
    outs = collect(web.send("Hi", "otto", saved, *DEFAULTS))
    saved = outs[-1][3]
    dropdown, _, chat, scores, saved2 = web.load(saved)  # a reload: the browser sends its saved state
    assert dropdown["value"] == "otto" and saved2 == saved
    assert texts(chat)[1:] == [("user", "Hi"), ("assistant", "Sit down.")]
    assert scores.startswith("Last reply: style 0.50")


def test_send_streams_pieces_then_the_stored_reply(web, service, backend):
    backend.queue(LONG)
    outs = collect(web.send("Hello", "maggie", None, *DEFAULTS))
    first = outs[0]
    assert first[2] == ""  # the box is emptied at once
    assert texts(first[0])[1:] == [("user", "Hello"), ("assistant", "")]
    partial = [out[0][-1]["content"] for out in outs[1:-1]]
    assert len(partial) > 5 and all(LONG.startswith(p) for p in partial) and partial == sorted(partial, key=len)
    chat, scores, _, saved = outs[-1]
    assert chat[-1] == {"role": "assistant", "content": LONG}
    assert "style" in scores and "relevance" in scores
    conv = saved["conversations"]["maggie"]
    assert service._store.history(conv) == [{"role": "user", "content": "Hello"}, {"role": "assistant", "content": LONG}]
    assert service._store.conversation(conv)["owner"] == "web"


def test_html_from_model_and_user_is_shown_as_text(web, service, backend):
    backend.queue(XSS)
    outs = collect(web.send("<b>hi</b> ![x](http://evil/p.png)", "maggie", None, *DEFAULTS))
    user, reply = outs[-1][0][1:]
    assert "<" not in user["content"] + reply["content"]
    assert user["content"] == "&lt;b&gt;hi&lt;/b&gt; !\\[x](http://evil/p.png)"
    assert "&lt;script&gt;" in reply["content"] and all("<" not in out[0][-1]["content"] for out in outs)
    conv = outs[-1][3]["conversations"]["maggie"]
    assert '<img src=x onerror="window.' in service._store.history(conv)[-1]["content"]  # escaped only for display
    assert escape("a & b") == "a &amp; b"


def test_sliders_take_bounds_from_the_settings_fields():
    temperature = slider(GenerationSettings, "temperature", 0.8)
    assert (temperature.minimum, temperature.maximum, temperature.value) == (0.0, 2.0, 0.8)
    top_p = slider(GenerationSettings, "top_p", 0.92)
    assert 0.0 < top_p.minimum < 0.05 and top_p.maximum == 1.0  # gt=0: the minimum itself is excluded
    tokens = slider(GenerationSettings, "max_tokens", 64)
    assert (tokens.minimum, tokens.maximum, tokens.step) == (1, 4096, 1)
    assert [name for _, name in SLIDERS] == ["temperature", "top_p", "max_tokens", "candidates"]


def test_settings_reach_the_backend(web, backend):
    collect(web.send("Hi", "maggie", None, 0.3, 0.5, 20, 1))
    sent = backend.calls[-1]["settings"]
    assert (sent.temperature, sent.top_p, sent.max_tokens) == (0.3, 0.5, 20)
    collect(web.send("Again", "maggie", None, 0.3, 0.5, 20, 3))
    assert backend.calls[-1]["method"] == "complete" and backend.calls[-1]["n"] == 3  # candidates: reranked


@pytest.mark.parametrize("message, values", [("   ", DEFAULTS), ("Hi", (9.0, 0.92, 64, 1)), ("Hi", (0.8, 0.9, 64, 99))])
def test_refused_messages_warn_and_save_nothing(web, service, message, values):
    with pytest.warns(UserWarning):
        outs = collect(web.send(message, "maggie", None, *values))
    assert len(outs) == 1 and outs[0][2] == message  # the text stays in the box
    assert service._store.conversations("web") == []


def test_busy_model_warns_and_keeps_the_conversation(web, service, backend):
    saved = collect(web.send("Hi", "maggie", None, *DEFAULTS))[-1][3]
    pool = service.characters["maggie"].pool
    pool.pending = pool.limit  # as if every slot were taken
    try:
        with pytest.warns(UserWarning, match="busy"):
            outs = collect(web.send("Again", "maggie", saved, *DEFAULTS))
    finally:
        pool.pending = 0
    chat, _, box, _ = outs[-1]
    assert texts(chat)[1:] == [("user", "Hi"), ("assistant", "Fine.")] and box == "Again"


def test_backend_failure_mid_reply_keeps_the_message(web, service, backend):
    def fail(messages, settings):
        from rolecast.errors import BackendError

        yield "Half"
        raise BackendError("the model server went away")

    backend.stream = fail
    with pytest.warns(UserWarning, match="went away"):
        outs = collect(web.send("Hi", "maggie", None, *DEFAULTS))
    chat, _, box, _ = outs[-1]
    assert texts(chat)[1:] == [("user", "Hi")] and box != "Hi"  # saved: regenerate can answer it


def test_regenerate_undo_clear(web, service, backend):
    backend.queue("First.", "Second.")
    saved = collect(web.send("Hi", "maggie", None, *DEFAULTS))[-1][3]
    outs = collect(web.regenerate("maggie", saved, *DEFAULTS))
    assert texts(outs[0][0])[1:] == [("user", "Hi"), ("assistant", "")]  # the old reply is replaced in place
    assert texts(outs[-1][0])[1:] == [("user", "Hi"), ("assistant", "Second.")]
    conv = saved["conversations"]["maggie"]
    assert len(service._store.messages(conv)) == 2

    chat, scores, box, _ = asyncio.run(web.undo("maggie", saved))
    assert box == "Hi" and texts(chat) == [("assistant", "Evening, User. I am Maggie.")] and scores == ""
    assert service._store.messages(conv) == []

    collect(web.send("Hi again", "maggie", saved, *DEFAULTS))
    chat, scores, _, _ = asyncio.run(web.clear("maggie", saved))
    assert texts(chat) == [("assistant", "Evening, User. I am Maggie.")] and service._store.messages(conv) == []
    with pytest.warns(UserWarning, match="nothing to regenerate"):
        collect(web.regenerate("maggie", saved, *DEFAULTS))


def test_the_web_chat_counts_against_the_rate_limit(tmp_path, backend):
    _, service = open_service(tmp_path, backend, rate_limit=1)
    web = WebChat(service)
    saved = collect(web.send("Hi", "maggie", None, *DEFAULTS, who="web:alice"))[-1][3]
    with pytest.warns(UserWarning, match="too many requests"):
        outs = collect(web.send("Again", "maggie", saved, *DEFAULTS, who="web:alice"))
    assert outs[-1][2] == "Again", "the refused message stays in the box"
    collect(web.send("Hello", "otto", None, *DEFAULTS, who="web:bob"))  # another user has their own allowance
    service.close()


BLIND = {"blind": True, "blind_rate": 1.0, "blind_variants": ["prompt", "retrieval"]}


def test_blind_turn_shows_two_replies_and_stores_the_vote(tmp_path, backend):
    from rolecast.evaluation.votes import vote_summary

    _, service = open_service(tmp_path, backend, **BLIND)
    web = WebChat(service)
    backend.queue("Alpha reply.", "Beta reply.")
    outs = collect(web.send("Hi", "maggie", None, *DEFAULTS))
    saved = outs[-1][3]
    assert texts(outs[-1][0])[1:] == [("user", "Hi")], "no reply joins the chat before the vote"
    panel, a, b = web.panel("maggie", saved)
    assert panel["visible"] and {a, b} == {"Alpha reply.", "Beta reply."}
    with pytest.warns(UserWarning, match="waiting for your vote"):
        refused = collect(web.send("Again", "maggie", saved, *DEFAULTS))
    assert refused[-1][2] == "Again", "the refused message stays in the box"
    chat, _, _, _ = asyncio.run(web.vote("b", "maggie", saved))
    assert texts(chat)[1:] == [("user", "Hi"), ("assistant", b)]
    assert not web.panel("maggie", saved)[0]["visible"]
    vote = service._store.votes("maggie")[0]
    assert vote["choice"] == "b" and {vote["variant_a"], vote["variant_b"]} == {"prompt", "retrieval"}
    assert "prompt" not in a + b and "retrieval" not in a + b
    service.close()
    summary = vote_summary(tmp_path / "chat.db", "maggie")
    assert summary["votes"] == 1 and list(summary["pairs"]) == ["prompt vs retrieval"]
    winner = vote["variant_b"]
    assert summary["pairs"]["prompt vs retrieval"]["win"] == (1.0 if winner == "prompt" else 0.0)
    assert all(v != v for v in summary["pairs"]["prompt vs retrieval"]["ci"]), "no interval from 1 vote (NaN)"


def test_blind_turn_that_fails_stores_nothing_and_undo_drops_a_pending_vote(tmp_path, backend):
    _, service = open_service(tmp_path, backend, **BLIND)
    web = WebChat(service)

    def broken(*args, **kwargs):
        raise ModelError("the model crashed", "restart it")

    from rolecast.errors import ModelError

    real = backend.complete
    backend.complete = broken
    with pytest.warns(UserWarning, match="crashed"):
        outs = collect(web.send("Hi", "maggie", None, *DEFAULTS))
    saved = outs[-1][3]
    assert outs[-1][2] == "Hi" and service._store.messages(saved["conversations"]["maggie"]) == []
    backend.complete = real
    collect(web.send("Hi", "maggie", saved, *DEFAULTS))
    chat, _, box, _ = asyncio.run(web.undo("maggie", saved))
    assert box == "Hi" and not web.panel("maggie", saved)[0]["visible"]
    assert service._store.votes() == [] and service._store.messages(saved["conversations"]["maggie"]) == []
    service.close()


def test_blind_needs_two_playable_variants(tmp_path, backend):
    from rolecast.errors import SettingsError

    with pytest.raises(SettingsError, match="lora"):
        open_service(tmp_path, backend, blind=True, blind_variants=["prompt", "lora"])


def test_a_conversation_id_from_elsewhere_is_not_shown(web, service):
    theirs = service._store.create_conversation("maggie", "local")["id"]
    service._store.add_message(theirs, "user", "secret")
    saved = {"character": "maggie", "conversations": {"maggie": theirs, "otto": "conv_nope"}}
    _, _, chat, _, cleaned = web.load(saved)
    assert "secret" not in json.dumps(chat) and "maggie" not in cleaned["conversations"]
    outs = collect(web.send("Hi", "otto", saved, *DEFAULTS))
    assert outs[-1][3]["conversations"]["otto"] not in (theirs, "conv_nope")


def test_mounted_at_root_beside_the_api(tmp_path, backend):
    serve, service = open_service(tmp_path, backend, web=True)
    with TestClient(create_app(serve, service)) as client:
        assert [m["id"] for m in client.get("/v1/models").json()["data"]] == ["maggie", "otto"]
        assert client.get("/healthz").json()["status"] == "ok"
        assert client.get("/").status_code == 200 and client.get("/config").json()["title"] == "rolecast"
        assert client.get("/openapi.json").json()["info"]["title"] == "rolecast"  # FastAPI's own, not Gradio's
        assert client.get("/v1/nope").json()["error"]["type"] == "not_found_error"  # the API's errors, not Gradio's
        assert client.get("/v1/chat/completions").status_code == 405
    service.close()


# ----------------------------------------------------------------------------- the real page

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
# Every change of the last reply's text, recorded in the page as it happens.
RECORD = """() => {
  window.__states = [];
  const last = () => { const bots = document.querySelectorAll('#chat [data-testid=bot]');
                       return bots.length ? bots[bots.length - 1].innerText.trim() : null; };
  new MutationObserver(() => { const t = last();
    if (t !== null && t !== window.__states[window.__states.length - 1]) window.__states.push(t); })
    .observe(document.querySelector('#chat'), {subtree: true, childList: true, characterData: true});
}"""


class SlowBackend(FakeBackend):
    """Streams word by word with a pause, so the browser sees the reply grow."""

    def stream(self, messages, settings):
        for piece in super().stream(messages, settings):
            time.sleep(0.06)
            yield piece


@pytest.fixture
def live(tmp_path):
    yield from serve_live(tmp_path)


@pytest.fixture
def live_blind(tmp_path):
    yield from serve_live(tmp_path, **BLIND)


def serve_live(tmp_path, **blind):
    """A real uvicorn serving create_app (API + web chat) on a free loopback port, in a thread."""
    import uvicorn

    backend = SlowBackend()
    serve, service = open_service(tmp_path, backend, web=True, **blind)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))  # bound here and handed over: no race for the port
    server = uvicorn.Server(uvicorn.Config(create_app(serve, service), log_level="warning", timeout_graceful_shutdown=1))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "uvicorn did not start"
    yield f"http://127.0.0.1:{sock.getsockname()[1]}/", backend
    server.should_exit = True
    thread.join(10)
    sock.close()
    service.close()


@pytest.fixture
def browser():
    # CI sets ROLECAST_REQUIRE_BROWSER=1: there a missing browser is a failure, not a skip.
    missing = pytest.fail if os.environ.get("ROLECAST_REQUIRE_BROWSER") == "1" else pytest.skip
    if not CHROMIUM.exists():
        missing(f"{CHROMIUM} is missing (apt-get install chromium)")
    if importlib.util.find_spec("playwright") is None:
        missing("playwright is missing (pip install playwright; no browser download needed)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def last_bot(page):
    return page.locator("#chat [data-testid=bot]").last


def open_page(browser, url):
    """The web chat in a new page, once Maggie's greeting is shown."""
    from playwright.sync_api import expect

    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.set_default_timeout(20_000)
    page.goto(url)
    expect(last_bot(page)).to_have_text("Evening, User. I am Maggie.")
    return page


@pytest.mark.slow
def test_browser_chat_streams_persists_and_stays_inert(live, browser):
    from playwright.sync_api import expect

    url, backend = live
    page = open_page(browser, url)

    page.click("#character input")  # pick Otto: his greeting replaces Maggie's
    page.locator("[role=listbox] [role=option]", has_text="Otto").click()
    expect(last_bot(page)).to_have_text("Evening, User. I am Otto.")

    backend.queue(LONG)
    page.evaluate(RECORD)
    page.fill("#message textarea", "Hello there")
    page.click("#send")
    expect(last_bot(page)).to_have_text(LONG)
    states = page.evaluate("window.__states")
    partial = [s for s in states if s and s != LONG and LONG.startswith(s)]
    assert len(set(partial)) >= 2, f"the reply did not stream: {states}"
    expect(page.locator("#scores")).to_contain_text("style 0.50")

    page.reload()  # the history comes back from the server's store, with the character picked
    expect(last_bot(page)).to_have_text(LONG)
    expect(page.locator("#chat [data-testid=user]")).to_have_text(["Hello there"])
    expect(page.locator("#character input")).to_have_value("Otto — Harbor Lights")

    backend.queue(XSS)
    page.fill("#message textarea", '<img src=x onerror="window.__xss=3"> hi')
    page.click("#send")
    expect(last_bot(page)).to_contain_text("done.")
    page.wait_for_timeout(300)  # time for a broken image's onerror to fire, were there one
    assert page.evaluate("typeof window.__xss") == "undefined"
    assert "<img" in last_bot(page).inner_text()
    assert "<img" in page.locator("#chat [data-testid=user]").last.inner_text()
    assert page.locator("#chat img[src=x], #chat script").count() == 0
    if os.environ.get("ROLECAST_SCREENSHOT"):  # a look at the page, for a human
        page.screenshot(path=os.environ["ROLECAST_SCREENSHOT"])


@pytest.mark.slow
def test_browser_blind_vote(live_blind, browser):
    from playwright.sync_api import expect

    url, backend = live_blind
    page = open_page(browser, url)
    expect(page.locator("#vote-b")).to_be_hidden()
    backend.queue("Alpha reply.", "Beta reply.")
    page.fill("#message textarea", "Rough night?")
    page.click("#send")
    expect(page.locator("#vote-b")).to_be_visible()
    a, b = page.locator("#reply-a").inner_text().strip(), page.locator("#reply-b").inner_text().strip()
    assert {a, b} == {"Alpha reply.", "Beta reply."}
    page.reload()  # a pending vote survives a reload
    expect(page.locator("#vote-b")).to_be_visible()
    page.click("#vote-b")
    expect(last_bot(page)).to_have_text(b)
    expect(page.locator("#vote-b")).to_be_hidden()
    page.reload()
    shown = page.locator("body").inner_text()
    assert "retrieval" not in shown and "prompt" not in shown, "the page never learns which variant said what"
    expect(last_bot(page)).to_have_text(b)


def test_the_rate_limit_counts_the_api_key_not_the_name_a_user_signs_in_with(tmp_path, backend):
    """With API keys, any user name and a valid key used to get a fresh allowance; now the key's is shared."""
    from types import SimpleNamespace

    _, service = open_service(tmp_path, backend, rate_limit=1)
    web = WebChat(service)
    keys = [b"secret-key"]
    assert web.sign_in("alice", "secret-key", keys) and web.sign_in("mallory", "secret-key", keys)
    assert not web.sign_in("eve", "guess", keys)
    request = lambda name: SimpleNamespace(username=name, client=SimpleNamespace(host="10.0.0.1"))  # noqa: E731
    alice, mallory = web.caller(request("alice")), web.caller(request("mallory"))
    assert alice == mallory and alice.startswith("key:")
    saved = collect(web.send("Hi", "maggie", None, *DEFAULTS, who=alice))[-1][3]
    with pytest.warns(UserWarning, match="too many requests"):
        collect(web.send("Again", "maggie", saved, *DEFAULTS, who=mallory))
    service.close()


def test_blind_turns_draw_the_order_at_random_and_the_page_names_no_variant(tmp_path, backend):
    """The old test could not fail: its replies were fixed strings, and the A/B order was never looked at."""
    import random

    _, service = open_service(tmp_path, backend, **BLIND)
    web = WebChat(service)
    random.seed(11)
    saved = None
    for i in range(8):
        backend.queue(f"First {i}.", f"Second {i}.")
        saved = collect(web.send(f"Turn {i}", "maggie", saved, *DEFAULTS))[-1][3]
        panel, a, b = web.panel("maggie", saved)
        page = " ".join(str(v) for v in (panel, a, b)).lower()
        assert "prompt" not in page and "retrieval" not in page, "a variant's name reached the page"
        asyncio.run(web.vote("a", "maggie", saved))
    shown_first = [v["variant_a"] for v in service._store.votes("maggie")]
    assert len(shown_first) == 8 and set(shown_first) == {"prompt", "retrieval"}, "A is not always the same variant"
    service.close()
