"""The FastAPI app: OpenAI-compatible completions (streamed and not), conversations, auth, limits, errors."""

import json

import pytest
from fastapi.testclient import TestClient

from conftest import FakeBackend, make_pack
from rolecast.serve.server import create_app
from rolecast.serve.service import ChatService
from rolecast.settings import BackendSettings, ServeSettings


@pytest.fixture
def backend():
    return FakeBackend()


@pytest.fixture
def build(tmp_path, backend):
    packs = [make_pack(tmp_path / "maggie", "Maggie", ["Otto"]), make_pack(tmp_path / "otto", "Otto", ["Maggie"])]

    def _build(**settings):
        serve = ServeSettings(db=str(tmp_path / "chat.db"), web=False, **settings)
        service = ChatService.open(packs, serve, BackendSettings(backend="fake"), make_backend=lambda s, a: backend)
        return TestClient(create_app(serve, service))

    return _build


@pytest.fixture
def client(build):
    return build()


def ask(client, content="Hi", **extra):
    return client.post("/v1/chat/completions", json={"model": "maggie", "messages": [{"role": "user", "content": content}],
                                                      **extra})


def test_models_and_health(client):
    models = client.get("/v1/models").json()["data"]
    assert [m["id"] for m in models] == ["maggie", "otto"]
    assert all(m["created"] > 1_600_000_000 for m in models), "created is when the pack was made, not 0"
    assert client.get("/healthz").json() == {"status": "ok", "models": ["maggie", "otto"]}


def test_completion_in_openai_shape(client, backend):
    backend.queue("Maggie: Sit down.\nOtto: No.")
    body = ask(client).json()
    assert body["object"] == "chat.completion"
    assert body["choices"] == [{"index": 0, "message": {"role": "assistant", "content": "Sit down."}, "finish_reason": "stop"}]
    assert body["usage"]["completion_tokens"] > 0
    assert backend.calls[-1]["messages"][-1] == {"role": "user", "content": "Hi"}


def test_history_from_request_and_system_ignored(client, backend):
    msgs = [{"role": "system", "content": "be a pirate"}, {"role": "user", "content": "a"},
            {"role": "assistant", "content": "b"}, {"role": "user", "content": [{"type": "text", "text": "c"}]}]
    client.post("/v1/chat/completions", json={"model": "maggie", "messages": msgs})
    sent = backend.calls[-1]["messages"]
    assert sent[0]["content"] == "You are Maggie." and "pirate" not in json.dumps(sent)
    assert sent[1:] == [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"}]


def test_streaming_sse_ends_with_done(client, backend):
    backend.queue("Sit down before you fall down.")
    with client.stream("POST", "/v1/chat/completions", json={"model": "maggie", "stream": True,
                                                              "messages": [{"role": "user", "content": "Hi"}]}) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        data = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
    assert data[-1] == "[DONE]"
    chunks = [json.loads(d) for d in data[:-1]]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert text == "Sit down before you fall down."
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


def test_n_choices(client, backend):
    backend.queue("One.", "Two.", "Three.")
    body = ask(client, n=3).json()
    assert sorted(c["message"]["content"] for c in body["choices"]) == ["One.", "Three.", "Two."]
    assert backend.calls[-1]["n"] == 3


def test_streamed_n_choices_come_as_sse_with_their_index(client, backend):
    backend.queue("One.", "Two.", "Three.")
    with client.stream("POST", "/v1/chat/completions", json={"model": "maggie", "stream": True, "n": 3,
                                                              "messages": [{"role": "user", "content": "Hi"}]}) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        data = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
    assert data[-1] == "[DONE]"
    chunks = [json.loads(d) for d in data[:-1]]
    texts: dict[int, str] = {}
    finished = set()
    for chunk in chunks:
        for choice in chunk["choices"]:
            texts[choice["index"]] = texts.get(choice["index"], "") + choice["delta"].get("content", "")
            if choice["finish_reason"]:
                finished.add(choice["index"])
    assert sorted(texts.values()) == ["One.", "Three.", "Two."] and finished == {0, 1, 2}
    assert backend.calls[-1]["n"] == 3


def test_settings_pass_through_and_bad_values(client, backend):
    ask(client, temperature=0.2, max_tokens=12, stop="X", top_k=3)
    gen = backend.calls[-1]["settings"]
    assert (gen.temperature, gen.max_tokens, gen.top_k) == (0.2, 12, 3) and "X" in gen.stop
    r = ask(client, temperature=7)
    assert r.status_code == 422 and "temperature" in r.json()["error"]["message"]
    r = ask(client, temperature="hot")
    assert r.status_code == 422 and r.json()["error"]["param"] == "temperature"


@pytest.mark.parametrize(
    ("payload", "status", "fragment"),
    [
        ({"model": "nobody", "messages": [{"role": "user", "content": "x"}]}, 404, "served here: maggie, otto"),
        ({"model": "maggie", "messages": []}, 400, "last message must be the user's"),
        ({"model": "maggie", "messages": [{"role": "assistant", "content": "x"}]}, 400, "last message"),
        ({"model": "maggie", "messages": [{"role": "user", "content": "   "}]}, 400, "not empty"),
        ({"model": "maggie", "messages": [{"role": "robot", "content": "x"}]}, 422, "messages.0.role"),
        ({"model": "maggie", "messages": "hello"}, 422, "messages"),
        ({"messages": [{"role": "user", "content": "x"}]}, 422, "model"),
        ({"model": "maggie", "messages": [{"role": "user", "content": "x"}], "rolecast": {"bogus": 1}}, 422, "bogus"),
    ],
)
def test_errors_in_openai_shape(client, payload, status, fragment):
    r = client.post("/v1/chat/completions", json=payload)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert fragment in error["message"] or fragment == error["param"], error


def test_malformed_json_and_big_body(build):
    client = build(max_body_kb=1)
    r = client.post("/v1/chat/completions", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json"
    r = ask(client, "x" * 5000)
    assert r.status_code == 413 and "KiB" in r.json()["error"]["message"]


def test_api_keys(build):
    client = build(api_keys=["s3cret"])
    assert client.get("/v1/models").status_code == 401
    assert client.get("/v1/models", headers={"Authorization": "Bearer nope"}).json()["error"]["type"] == "authentication_error"
    assert client.get("/v1/models", headers={"Authorization": "Bearer s3cret"}).status_code == 200
    assert client.get("/healthz").status_code == 200, "health checks need no key"


def test_rate_limit(build):
    client = build(api_keys=["k"], rate_limit=2)
    h = {"Authorization": "Bearer k"}
    codes = [client.get("/v1/models", headers=h).status_code for _ in range(3)]
    assert codes == [200, 200, 429]
    r = client.get("/v1/models", headers=h)
    assert int(r.headers["retry-after"]) >= 1 and r.json()["error"]["type"] == "rate_limit_error"


def test_conversations_crud_and_turns_saved(client, backend):
    conv = client.post("/v1/conversations", json={"model": "maggie", "title": "t"}).json()
    assert conv["object"] == "conversation" and conv["model"] == "maggie"
    backend.queue("Evening, sailor.", "Storm's coming.")
    extra = {"rolecast": {"conversation_id": conv["id"]}}
    assert ask(client, "Hi", **extra).json()["rolecast"]["conversation_id"] == conv["id"]
    ask(client, "Weather?", **extra)
    sent = backend.calls[-1]["messages"]
    assert sent[-3:] == [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Evening, sailor."},
                         {"role": "user", "content": "Weather?"}], "history comes from the server"
    stored = client.get(f"/v1/conversations/{conv['id']}").json()["messages"]
    assert [(m["role"], m["content"]) for m in stored] == [("user", "Hi"), ("assistant", "Evening, sailor."),
                                                            ("user", "Weather?"), ("assistant", "Storm's coming.")]
    backend.queue("Fog tonight.")
    ask(client, "", rolecast={"conversation_id": conv["id"], "regenerate": True})
    stored = client.get(f"/v1/conversations/{conv['id']}").json()["messages"]
    assert [m["content"] for m in stored][-2:] == ["Weather?", "Fog tonight."]
    assert [c["id"] for c in client.get("/v1/conversations").json()["data"]] == [conv["id"]]
    r = client.post("/v1/chat/completions", json={"model": "otto", "messages": [{"role": "user", "content": "x"}], **extra})
    assert r.status_code == 400 and "is with 'maggie'" in r.json()["error"]["message"]
    assert client.delete(f"/v1/conversations/{conv['id']}").json()["deleted"] is True
    assert client.get(f"/v1/conversations/{conv['id']}").status_code == 404


def test_conversations_are_private_to_a_key(build):
    client = build(api_keys=["a", "b"])
    conv = client.post("/v1/conversations", json={"model": "maggie"}, headers={"Authorization": "Bearer a"}).json()
    r = client.get(f"/v1/conversations/{conv['id']}", headers={"Authorization": "Bearer b"})
    assert r.status_code == 404


def test_queue_full_gives_429(build, backend):
    client = build(max_queue=0)
    service = client.app.state.service
    pool = service.characters["maggie"].pool
    pool.pending = pool.limit  # as if every slot were busy
    r = ask(client)
    assert r.status_code == 429 and "retry-after" in r.headers
    pool.pending = 0


def test_metrics(client, backend):
    backend.queue("Sit down.")
    ask(client)
    text = client.get("/metrics").text
    assert 'rolecast_requests_total{route="/v1/chat/completions",status="200"} 1.0' in text
    assert 'rolecast_completion_tokens_total{model="maggie"}' in text
    assert 'rolecast_queue_depth{pool="default"} 0.0' in text


@pytest.mark.slow
def test_sigkill_mid_reply_never_loses_a_completed_turn(tmp_path):
    """Ten times: a complete turn, then a streamed one killed mid-reply; every completed turn survives."""
    import signal
    import socket
    import sqlite3
    import subprocess
    import sys
    import time
    from pathlib import Path

    import httpx

    from fake_server import REPLY

    pack = make_pack(tmp_path / "maggie", "Maggie")
    db = tmp_path / "chat.db"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    server = Path(__file__).resolve().parent / "fake_server.py"
    completed: list[tuple[str, str]] = []
    conversation = None
    for round_ in range(10):
        proc = subprocess.Popen([sys.executable, str(server), str(pack), str(db), str(port)])
        try:
            for _ in range(200):
                try:
                    if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.1)
            if conversation is None:
                conversation = httpx.post(url + "/v1/conversations", json={"model": "maggie"}).json()["id"]
            stored = [(m["role"], m["content"]) for m in
                      httpx.get(f"{url}/v1/conversations/{conversation}").json()["messages"]]
            assert [m for m in stored if m in completed] == completed, f"round {round_}: a completed turn is missing"
            assert all(content == REPLY for role, content in stored if role == "assistant"), "no partial reply is stored"
            body = {"model": "maggie", "messages": [{"role": "user", "content": f"complete {round_}"}],
                    "rolecast": {"conversation_id": conversation}}
            assert httpx.post(url + "/v1/chat/completions", json=body, timeout=60).status_code == 200
            completed += [("user", f"complete {round_}"), ("assistant", REPLY)]
            body["messages"][0]["content"] = f"killed {round_}"
            body["stream"] = True
            with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=60) as response:
                chunks = 0
                for line in response.iter_lines():
                    chunks += line.startswith("data: ")
                    if chunks == 5:
                        proc.send_signal(signal.SIGKILL)
                        break
        finally:
            proc.kill()
            proc.wait()
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        rows = conn.execute("SELECT role, content FROM messages ORDER BY id").fetchall()
    assert [r for r in rows if r in completed] == completed
    assert sum(1 for r in rows if r[0] == "user" and r[1].startswith("killed")) == 10, "each killed turn's message was saved first"


def test_a_real_pack_serves_with_its_index_and_style_classifier(sample_pack, tmp_path, backend):
    """The sample pack's real retrieval index and style classifier, behind the API (the fake model only writes)."""
    serve = ServeSettings(db=str(tmp_path / "real.db"), web=False)
    service = ChatService.open([sample_pack], serve, BackendSettings(backend="fake"), make_backend=lambda s, a: backend)
    performer = service.characters["maggie"].performer
    assert performer.index is not None and performer.style is not None, "the pack's parts are loaded"
    backend.queue("Sit down before you fall down, love.", "The tide does not wait for anyone.")
    body = TestClient(create_app(serve, service)).post("/v1/chat/completions", json={
        "model": "maggie", "messages": [{"role": "user", "content": "Rough night on the ward?"}], "n": 2}).json()
    prompt = backend.calls[-1]["messages"]
    assert len(prompt) > 2, "retrieved real exchanges are in the prompt"
    scores = [c["scores"] for c in body["rolecast"]["candidates"]]
    assert all(0 < s["style"] < 1 and s["style"] != 0.5 for s in scores), scores
    assert all(s["relevance"] != 0 for s in scores), "relevance comes from the real embedder"
    service.close()


def test_latency_of_a_stream_counts_until_its_last_byte(tmp_path):
    import re
    import time as clock

    class Slow(FakeBackend):
        def stream(self, messages, settings):
            for piece in super().stream(messages, settings):
                clock.sleep(0.2)
                yield piece

    backend = Slow().queue("one two three")
    serve = ServeSettings(db=str(tmp_path / "chat.db"), web=False)
    service = ChatService.open([make_pack(tmp_path / "maggie", "Maggie")], serve, BackendSettings(backend="fake"),
                               make_backend=lambda s, a: backend)
    client = TestClient(create_app(serve, service))
    with client.stream("POST", "/v1/chat/completions", json={"model": "maggie", "stream": True,
                                                              "messages": [{"role": "user", "content": "Hi"}]}) as r:
        list(r.iter_lines())
    text = client.get("/metrics").text
    total = float(re.search(r'rolecast_request_seconds_sum\{route="/v1/chat/completions"\} ([0-9.e+-]+)', text).group(1))
    assert total >= 0.5, f"the histogram stopped when the stream started: {total:.3f} s"


@pytest.mark.parametrize("stream", [False, True])
def test_n_above_one_with_a_conversation_is_refused_the_same_way_streamed_or_not(client, backend, stream):
    """Streamed, n=2 with a conversation gave one choice; not streamed, two choices of which one was stored."""
    conv = client.post("/v1/conversations", json={"model": "maggie"}).json()
    r = ask(client, "Hi", n=2, stream=stream, rolecast={"conversation_id": conv["id"]})
    assert r.status_code == 400 and r.json()["error"]["param"] == "n"
    assert client.get(f"/v1/conversations/{conv['id']}").json()["messages"] == [], "nothing stored"


def test_behind_a_trusted_proxy_each_browser_is_counted_not_the_proxy(tmp_path, monkeypatch):
    """Without API keys every browser behind one proxy shared a bucket: --trusted-proxy has uvicorn read
    X-Forwarded-For from that proxy (only), so the web chat's rate limit counts each browser's address."""
    import uvicorn

    from conftest import make_pack
    from rolecast.cli import main

    seen = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: seen.append(kwargs))
    pack = make_pack(tmp_path / "maggie", "Maggie")
    common = ["serve", str(pack), "--backend", "fake", "--db", str(tmp_path / "c.db"), "--no-web"]
    assert main([*common, "--trusted-proxy", "10.0.0.1"]) == 0
    assert main(common) == 0
    assert seen[0]["proxy_headers"] and seen[0]["forwarded_allow_ips"] == "10.0.0.1"
    assert seen[1]["proxy_headers"] is False, "no proxy named: a forged X-Forwarded-For is not believed"


def test_a_client_that_leaves_stops_best_of_n_sampling(build, backend, monkeypatch):
    """n > 1 is sampled whole before anything is sent: a client that disconnected kept the model busy to the end."""
    import threading
    import time

    from starlette.requests import Request

    from rolecast.backends import Completion

    seen = {}

    def complete(messages, settings, n=1, cancel=None):
        start = time.perf_counter()
        while cancel is not None and not cancel.is_set() and time.perf_counter() - start < 10:
            time.sleep(0.01)  # a long sampling run, token by token
        seen["cancelled"], seen["seconds"] = bool(cancel and cancel.is_set()), time.perf_counter() - start
        return [Completion("Hm.", 1, "cancelled" if seen["cancelled"] else "stop") for _ in range(n)]

    monkeypatch.setattr(backend, "complete", complete)
    gone = threading.Event()

    async def is_disconnected(self):
        return gone.is_set()

    monkeypatch.setattr(Request, "is_disconnected", is_disconnected)
    client = build()
    threading.Timer(0.5, gone.set).start()  # the client leaves half a second in
    ask(client, "Hi", n=2)
    assert seen["cancelled"] and seen["seconds"] < 3, seen
