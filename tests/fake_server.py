"""The real app over a slow fake backend, run as a process of its own (the durability test kills it).

    python tests/fake_server.py PACK DB PORT
"""

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import uvicorn  # noqa: E402

from conftest import FakeBackend  # noqa: E402
from rolecast.serve.server import create_app  # noqa: E402
from rolecast.serve.service import ChatService  # noqa: E402
from rolecast.settings import BackendSettings, ServeSettings  # noqa: E402

REPLY = " ".join(f"Word{i}." for i in range(60))


class SlowFake(FakeBackend):
    """Every reply is REPLY, streamed one word per 50 ms."""

    def _next(self) -> str:
        return REPLY

    def stream(self, messages, settings):
        for piece in super().stream(messages, settings):
            time.sleep(0.05)
            yield piece


if __name__ == "__main__":
    pack, db, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    backend = SlowFake(BackendSettings(backend="fake", n_ctx=8192))
    serve = ServeSettings(db=db, web=False, port=port)
    service = ChatService.open([Path(pack)], serve, BackendSettings(backend="fake"), make_backend=lambda s, a: backend)
    uvicorn.run(create_app(serve, service), host="127.0.0.1", port=port, log_level="warning")
