"""Liveness as load clients and orchestrators ask for it: /health beside /healthz, and a replica
whose engine is gone says so at once (503 with Retry-After), to probes and to requests."""

import httpx
import pytest

from mlit.serving import front, model_server
from mlit.serving.protocol import APIError


async def _app(scope, receive, send):  # what the gateway would answer: never reached here
    raise AssertionError("a health probe reached the app")


@pytest.fixture()
def health(monkeypatch):
    state = {"gone": None}

    def check():
        if state["gone"]:
            raise RuntimeError(state["gone"])

    monkeypatch.setattr(front.Front, "health_check", staticmethod(check))
    return state


async def _get(path: str) -> httpx.Response:
    transport = httpx.ASGITransport(app=front.Front(_app))
    async with httpx.AsyncClient(transport=transport, base_url="http://x") as client:
        return await client.get(path)


@pytest.mark.anyio
@pytest.mark.parametrize("path", ["/health", "/healthz"])
async def test_health_says_200_then_503_with_the_reason_once_the_engine_is_gone(health, path):
    ok = await _get(path)
    assert ok.status_code == 200 and ok.json() == {"status": "ok"}
    health["gone"] = "the engine process exited (code -9); Serve replaces this replica"
    dead = await _get(path)
    assert dead.status_code == 503 and dead.headers["retry-after"] == "5"
    assert dead.json() == {"status": "unavailable", "reason": health["gone"]}


def test_a_request_to_a_dead_engine_is_a_503_with_retry_after_never_a_500():
    event = model_server.unavailable("the engine process exited (code -9)")
    err = APIError.of(event["error"])
    assert err.status == 503 and err.headers == {"Retry-After": "5"}
    assert "retry in 5 s" in err.message
    plain = APIError.of({"status": 400, "message": "bad"})
    assert plain.status == 400 and plain.headers is None


@pytest.fixture()
def anyio_backend():
    return "asyncio"
