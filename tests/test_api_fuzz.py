"""Schemathesis against the API's own OpenAPI schema: hundreds of generated requests, never a 5xx.

Every operation of the app (web chat off) is called with generated valid and invalid
bodies, paths and query strings; any 5xx fails the test, and so does an error body
that is not in OpenAI's shape.
"""

import tempfile
from pathlib import Path

import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from conftest import FakeBackend, make_pack
from rolecast.serve.server import create_app
from rolecast.serve.service import ChatService
from rolecast.settings import BackendSettings, ServeSettings

CALLS: list[int] = []


def make_app():
    # Built at import: schemathesis reads the schema when it collects the tests.
    root = Path(tempfile.mkdtemp(prefix="rolecast-fuzz-"))
    packs = [make_pack(root / "maggie", "Maggie", ["Otto"])]
    serve = ServeSettings(db=str(root / "chat.db"), web=False, rate_limit=0, max_queue=64)
    backend = FakeBackend(BackendSettings(backend="fake", n_ctx=8192))
    service = ChatService.open(packs, serve, BackendSettings(backend="fake"), make_backend=lambda s, a: backend)
    service.characters["maggie"].performer.index = service.characters["maggie"].performer.style = None
    return create_app(serve, service)


schema = schemathesis.openapi.from_asgi("/openapi.json", make_app())


@schema.parametrize()
@settings(max_examples=90, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_server_errors(case):
    response = case.call()
    CALLS.append(response.status_code)
    case.validate_response(response, checks=[not_a_server_error])
    if response.status_code >= 400:
        error = response.json()["error"]
        assert set(error) == {"message", "type", "param", "code"}, error
        assert error["message"] and "Traceback" not in error["message"]


def test_enough_cases_ran():
    from collections import Counter

    assert len(CALLS) >= 500, f"only {len(CALLS)} generated requests"
    assert max(CALLS) < 500, dict(Counter(CALLS))
    assert Counter(CALLS)[200] >= 50, f"too few valid requests got through: {dict(Counter(CALLS))}"

