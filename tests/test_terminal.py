"""The terminal chat (rolecast chat / say): commands, streaming, saving, and one-line errors."""

import json

import pytest

from conftest import FakeBackend
from rolecast.chat.performer import Performer
from rolecast.chat.terminal import ChatSession, run_terminal
from rolecast.errors import SettingsError
from test_performer import pack  # noqa: F401  (fixture)


@pytest.fixture
def session(pack):  # noqa: F811
    backend = FakeBackend().queue("Evening, sailor.", "Storm's coming.", "Tide's turning.")
    return ChatSession(Performer(pack, backend, index=None, style=None))


def test_turns_enter_history_only_when_complete(session):
    assert "".join(session.send("Hi")) == "Evening, sailor."
    assert session.history == [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Evening, sailor."}]
    with pytest.raises(Exception, match="empty"):
        list(session.send("  "))
    assert len(session.history) == 2, "a failed turn loses nothing and adds nothing"


def test_retry_replaces_the_last_reply(session):
    list(session.send("Hi"))
    assert "".join(session.retry()) == "Storm's coming."
    assert session.history[-1] == {"role": "assistant", "content": "Storm's coming."}
    assert len(session.history) == 2


def test_settings_and_save(session, tmp_path):
    assert session.set("temperature=0.3") == "temperature = 0.3"
    assert session.set("candidates=2") == "candidates = 2"
    with pytest.raises(SettingsError, match="valid settings: .*temperature"):
        session.set("temprature=1")
    list(session.send("Hi"))
    session.save(tmp_path / "chat.json")
    saved = json.loads((tmp_path / "chat.json").read_text())
    assert saved["messages"][0] == {"role": "user", "content": "Hi"}
    assert saved["settings"]["generation"]["temperature"] == 0.3


def test_terminal_loop_handles_commands_and_errors(session, tmp_path):
    inputs = iter(["Hi", "/settings top_k=5", "/settings nope=1", "/bogus", "", "/retry", f"/save {tmp_path}/c.json",
                   "/reset", "/quit"])
    out = []
    run_terminal(session, read=lambda prompt: next(inputs), write=out.append)
    text = "".join(out)
    assert "Maggie: Evening, sailor." in text
    assert "top_k = 5" in text
    assert "error: unknown setting 'nope'" in text
    assert "error: unknown command /bogus" in text
    assert "Maggie: Storm's coming." in text
    assert (tmp_path / "c.json").exists()
    assert session.history == []
