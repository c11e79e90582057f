"""Named bases: the table, and `rolecast models pull` against a local fake hub (HF_ENDPOINT), not a mock."""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from rolecast.models.bases import BUNDLED, NAMED_BASES, epoch_hours, table

BASE = NAMED_BASES["qwen2.5-0.5b"]
GATED = NAMED_BASES["llama3.2-1b"]
COMMIT = "a" * 40


class FakeHub(http.server.ThreadingHTTPServer):
    """The hub's resolve endpoint as huggingface_hub reads it: HEAD gives the commit, the LFS sha256 (ETag) and the
    size; GET honours Range. ``cut`` drops the first GET after that many bytes (a broken download to resume)."""

    def __init__(self, files: dict[str, bytes], gated: set[str] = frozenset(), etag: str | None = None, cut: int = 0):
        self.files, self.gated, self.etag, self.cut, self.ranges = files, gated, etag, cut, []
        super().__init__(("127.0.0.1", 0), Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def _file(self):
        hub: FakeHub = self.server
        repo, _, rest = self.path.partition("/resolve/")
        repo = repo.strip("/")
        name = rest.split("/", 1)[-1].split("?")[0]
        if repo in hub.gated:
            self.send_response(401)
            self.send_header("X-Error-Code", "GatedRepo")
            self.send_header("X-Error-Message", "Access to this model is restricted.")
            self.end_headers()
            return None
        data = hub.files.get(f"{repo}/{name}")
        if data is None:
            self.send_response(404)
            self.send_header("X-Error-Code", "EntryNotFound")
            self.end_headers()
            return None
        return data

    def _headers(self, data: bytes, status: int = 200, start: int = 0):
        hub: FakeHub = self.server
        self.send_response(status)
        self.send_header("X-Repo-Commit", COMMIT)
        self.send_header("ETag", f'"{hub.etag or hashlib.sha256(data).hexdigest()}"')
        self.send_header("X-Linked-Size", str(len(data)))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(len(data) - start))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.end_headers()

    def do_HEAD(self):
        data = self._file()
        if data is not None:
            self._headers(data)

    def do_GET(self):
        hub: FakeHub = self.server
        data = self._file()
        if data is None:
            return
        start = 0
        if self.headers.get("Range"):
            hub.ranges.append(self.headers["Range"])
            start = int(self.headers["Range"].split("=")[1].split("-")[0])
        self._headers(data, 206 if start else 200, start)
        if hub.cut and not start:
            self.wfile.write(data[:hub.cut])
            hub.cut = 0
            self.wfile.flush()
            self.connection.close()
            return
        self.wfile.write(data[start:])


@pytest.fixture
def hub():
    servers = []

    def start(**kwargs) -> FakeHub:
        server = FakeHub(**kwargs)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.shutdown()


def rolecast(args: list[str], home: Path, endpoint: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_ENDPOINT": endpoint, "HF_HOME": str(home), "HF_HUB_DISABLE_XET": "1",
           "HF_HUB_ETAG_TIMEOUT": "5", "HF_HUB_DOWNLOAD_TIMEOUT": "5"}
    for name in ("HF_HUB_OFFLINE", "HF_TOKEN"):
        env.pop(name, None)
    return subprocess.run([sys.executable, "-m", "rolecast.cli", *args], capture_output=True, text=True, env=env,
                          timeout=300)


def payload(size: int = 3_000_000) -> bytes:
    return bytes(range(256)) * (size // 256)


def test_the_table_lists_the_bundled_base_and_the_tested_families():
    rows = {r["name"]: r for r in table()}
    assert BUNDLED.name in rows and {"Qwen2.5", "Qwen3", "Llama 3.x", "Gemma 3", "Phi-3.5"} <= {r["family"] for r in rows.values()}
    assert rows["llama3.2-1b"]["gated"] and not rows["qwen2.5-0.5b"]["gated"]
    # A bigger base takes longer, fp32 longer than bf16, a GPU far less; the 135M's bf16 epoch is the measured ~57 min.
    assert epoch_hours(0.135, "bf16") == pytest.approx(56.8 / 60, rel=0.02)
    assert epoch_hours(1.5, "bf16") > epoch_hours(0.5, "bf16") and epoch_hours(0.5, "fp32") > epoch_hours(0.5, "bf16")
    assert epoch_hours(0.5, "gpu") < epoch_hours(0.5, "bf16") / 50


def test_models_lists_them_as_json():
    done = subprocess.run([sys.executable, "-m", "rolecast.cli", "models", "--json"], capture_output=True, text=True)
    assert done.returncode == 0 and {r["name"] for r in json.loads(done.stdout)} == set(NAMED_BASES)


def test_pull_survives_a_broken_connection_and_checks_the_hubs_sha256(hub, tmp_path):
    """A download cut short is tried again: by huggingface_hub 2.x itself, by ``bases.download`` under 1.x."""
    data = payload()
    server = hub(files={f"{BASE.gguf_repo}/{BASE.gguf_file}": data}, cut=1_000_000)
    done = rolecast(["models", "pull", BASE.name, "--no-progress"], tmp_path, server.url)
    assert done.returncode == 0, done.stderr
    path = Path(done.stdout.strip().split(": ", 1)[1])
    assert path.read_bytes() == data and server.cut == 0, "the first transfer was cut, the second completed"


class ReadError(Exception):
    """Stands for httpx's error on a connection closed mid-body."""


ReadError.__module__ = "httpx"


def test_download_tries_a_cut_transfer_again_but_not_another_error(tmp_path):
    from rolecast.models import bases

    class Hub:
        def __init__(self, errors):
            self.errors, self.calls = list(errors), 0

        def hf_hub_download(self, repo, name, token=None):
            self.calls += 1
            if self.errors:
                raise self.errors.pop(0)
            return str(tmp_path / name)

    flaky = Hub([ReadError("peer closed connection"), ReadError("again")])
    assert bases.download(flaky, BASE, None) == tmp_path / BASE.gguf_file and flaky.calls == 3
    with pytest.raises(ReadError):
        bases.download(Hub([ReadError("cut")] * bases.DOWNLOAD_TRIES), BASE, None)
    other = Hub([ValueError("not a transport error")])
    with pytest.raises(ValueError):
        bases.download(other, BASE, None)
    assert other.calls == 1


def test_a_download_that_does_not_match_the_hubs_sha256_is_removed(hub, tmp_path):
    server = hub(files={f"{BASE.gguf_repo}/{BASE.gguf_file}": payload()}, etag="0" * 64)
    done = rolecast(["models", "pull", BASE.name, "--no-progress"], tmp_path, server.url)
    assert done.returncode == 2 and "does not match the hub's sha256" in done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert not [p for p in tmp_path.rglob(BASE.gguf_file) if p.is_file()]


def test_a_gated_model_without_a_token_says_how_to_get_access(hub, tmp_path):
    server = hub(files={}, gated={GATED.gguf_repo})
    done = rolecast(["models", "pull", GATED.name, "--no-progress"], tmp_path, server.url)
    assert done.returncode == 2 and "gated" in done.stderr and "HF_TOKEN" in done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_offline_is_one_line(tmp_path):
    done = rolecast(["models", "pull", BASE.name, "--no-progress"], tmp_path, "http://127.0.0.1:9")
    assert done.returncode == 2 and "cannot reach the Hugging Face hub" in done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_an_unknown_name_lists_the_known_ones(tmp_path):
    done = rolecast(["models", "pull", "gpt-5"], tmp_path, "http://127.0.0.1:9")
    assert done.returncode == 2 and "qwen2.5-0.5b" in done.stderr


@pytest.mark.slow
def test_a_pulled_base_serves_by_name_and_an_unpulled_one_says_how_to_pull(hub, tmp_path, sample_pack):
    """The bundled GGUF stands in for the named file's bytes: `--model NAME` then chats on the pulled file."""
    pytest.importorskip("llama_cpp")
    from rolecast.models.base_model import default_model_path

    before = rolecast(["say", str(sample_pack), "Hello.", "--model", BASE.name], tmp_path, "http://127.0.0.1:9")
    assert before.returncode == 2 and f"rolecast models pull {BASE.name}" in before.stderr
    server = hub(files={f"{BASE.gguf_repo}/{BASE.gguf_file}": default_model_path().read_bytes()})
    assert rolecast(["models", "pull", BASE.name, "--no-progress"], tmp_path, server.url).returncode == 0
    after = rolecast(["say", str(sample_pack), "Hello.", "--model", BASE.name, "--no-adapter", "--json"], tmp_path,
                     "http://127.0.0.1:9")
    assert after.returncode == 0, after.stderr
    assert json.loads(after.stdout)["text"]
