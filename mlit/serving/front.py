"""What the gateway answers before FastAPI does: liveness, model listing, and refusals in
OpenAI's error shape. HTTP reaches the gateway through HAProxy (`mlit.plumbing.ingress`).

**`Front`, the gateway's outermost ASGI layer**, in the gateway's own event loop, before routing,
authentication and validation:

- ``GET /healthz`` (and ``/health``, the route vLLM, TGI and load clients ask) is answered at
  once: 200 while the replica can answer, 503 with Retry-After once its engine is gone (Serve's
  controller replaces a replica that fails its health checks, within ~3 s);
- ``GET /v1/models`` is answered from the gateway's last 200 to the same ``Authorization`` header,
  for ``MODELS_TTL_S``: listing models never waits behind a burst of generation requests (0.87 s
  at worst in a 1,000-request burst when each listing went through the whole app), and a header
  the gateway has not accepted still goes to the gateway, which checks the key;
- a request body is read whole before the app sees it: one sent a byte a second is answered 408
  after ``BODY_TIMEOUT_S``, one over ``MAX_BODY_BYTES`` 413 without being kept;
- a generation request past the gateway's capacity (`Front.capacity`, what admission takes in
  all, `mlit.serving.admission`) is refused at once (429 with ``Retry-After``): in a burst, a
  refusal does not wait for FastAPI to parse and route the requests ahead of it;
- a client that goes away mid-stream reaches the routes as the ASGI disconnect Starlette
  handles, not as Serve's cancellation error that no one retrieves (a traceback in the log per
  closed stream).

The gateway checks bodies, keys and admission again, with the app's own (possibly smaller)
limits.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import os
import time

from mlit.serving.protocol import RESTART_RETRY_S

HEALTH = json.dumps({"status": "ok"}).encode()
# Liveness: /healthz, and /health as vLLM, TGI, SGLang and load clients (guidellm) ask for it.
HEALTH_PATHS = ("/healthz", "/health")
# A request body must arrive within this; MLIT_BODY_TIMEOUT_S in the environment Ray starts with
# sets another (read by each gateway replica as it starts).
BODY_TIMEOUT_S = float(os.environ.get("MLIT_BODY_TIMEOUT_S", "30"))
MAX_BODY_BYTES = 64 * 1024 * 1024  # a bound on what is held before the gateway's own, smaller one
GENERATION = ("/v1/chat/completions", "/v1/completions")
# How long /v1/models is answered from the gateway's last answer to the same credentials: the
# list changes only when the app is deployed again, and then at most this late.
MODELS_TTL_S = 10.0


class Front:
    """The gateway's outermost layer (`mlit.serving.gateway`); ``capacity`` is set by the
    gateway as it starts (one gateway per process)."""

    capacity: int | None = None  # generation requests the gateway takes in all
    health_check = None  # the gateway's `check_health`: raises once its engine is gone

    def __init__(self, app):
        self.app = app
        self.in_flight = 0  # generation requests in this gateway
        self.listings: dict[bytes, tuple[float, bytes]] = {}  # credentials' hash -> (when, body)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if scope["path"] in HEALTH_PATHS and scope["method"] in ("GET", "HEAD"):
            return await self._health(send)
        receive = _disconnect_on_cancel(receive)
        if scope["path"] == "/v1/models" and scope["method"] == "GET":
            return await self._models(scope, receive, send)
        generation = scope["method"] == "POST" and scope["path"] in GENERATION
        if generation and self._full():
            return await _busy(send, self.in_flight)
        if scope["method"] in ("POST", "PUT", "PATCH"):
            try:
                async with asyncio.timeout(BODY_TIMEOUT_S):
                    body = await _read_body(receive)
            except TimeoutError:
                return await _refuse(
                    send, 408, f"the request body did not arrive within {BODY_TIMEOUT_S:g} s"
                )
            except _TooBig:
                return await _refuse(send, 413, f"request body is over {MAX_BODY_BYTES} bytes")
            except _Gone:
                return None
            receive = _replay(body, receive)
        if not generation:
            return await self.app(scope, receive, send)
        if self._full():  # checked again: it may have filled while the body came in
            return await _busy(send, self.in_flight)
        self.in_flight += 1
        left = False

        def leave():
            nonlocal left
            if not left:
                left = True
                self.in_flight -= 1

        async def sending(message):
            # Counted out as the answer's last byte leaves, not once it has been sent: by then
            # a closed-loop client's next request may already be here, and be refused.
            if message["type"] == "http.response.body" and not message.get("more_body"):
                leave()
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            leave()

    async def _health(self, send):
        """200 while this replica can answer; 503 with Retry-After once its engine is gone
        (Serve replaces the replica within seconds: its health check fails too)."""
        try:
            if Front.health_check is not None:
                Front.health_check()
        except Exception as err:
            body = json.dumps({"status": "unavailable", "reason": str(err)}).encode()
            wait = str(RESTART_RETRY_S).encode()
            return await _answer(send, 503, body, [(b"retry-after", wait)])
        return await _answer(send, 200, HEALTH)

    async def _models(self, scope, receive, send):
        who = _credentials(scope)
        when, body = self.listings.get(who, (0.0, b""))
        age = time.monotonic() - when
        if age < MODELS_TTL_S:  # HTTP's Age: the seconds since the gateway gave this answer
            return await _answer(send, 200, body, [(b"age", str(int(age)).encode())])
        parts, ok = [], False

        async def keeping(message):  # the gateway's answer, kept where it is a 200
            nonlocal ok
            if message["type"] == "http.response.start":
                ok = message["status"] == 200
            elif ok:
                parts.append(message.get("body", b""))
                if not message.get("more_body"):
                    self.listings[who] = (time.monotonic(), b"".join(parts))
            await send(message)

        await self.app(scope, receive, keeping)

    def _full(self) -> bool:
        return self.capacity is not None and self.in_flight >= self.capacity


def _credentials(scope) -> bytes:
    """A digest of the request's Authorization headers (all of them: the gateway refuses two)."""
    values = [v for k, v in scope.get("headers") or [] if k.lower() == b"authorization"]
    return hashlib.sha256(b"\n".join(values)).digest()


async def _busy(send, in_flight: int) -> None:
    why = f"the server is at capacity ({in_flight} requests waiting or running); retry after 1 s"
    await _refuse(send, 429, why, [(b"retry-after", b"1")])


class _TooBig(Exception):
    pass


class _Gone(Exception):
    pass


async def _read_body(receive) -> bytes:
    body = bytearray()
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _Gone
        body += message.get("body", b"")
        if len(body) > MAX_BODY_BYTES:
            raise _TooBig
        if not message.get("more_body"):
            return bytes(body)


def _replay(body: bytes, receive):
    """The body read above, as one message; then the client's own messages (a disconnect)."""
    sent = False

    async def replayed():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed


async def _refuse(send, status: int, message: str, headers: list | None = None) -> None:
    """An answer in OpenAI's error shape: 429 a rate limit (``overloaded``), 5xx the server's."""
    kind = "server_error" if status >= 500 else "invalid_request_error"
    if status == 429:
        kind = "rate_limit_error"
    code = "overloaded" if status == 429 else None
    error = {"message": message, "type": kind, "param": None, "code": code}
    await _answer(send, status, json.dumps({"error": error}).encode(), headers)


async def _answer(send, status: int, body: bytes, headers: list | None = None) -> None:
    head = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": head + (headers or [])})
    await send({"type": "http.response.body", "body": body})


def _disconnect_on_cancel(receive):
    """Serve's cancelled receive task (the client went away) as the ASGI disconnect."""
    cancelled = _cancelled()

    async def receiving():
        try:
            return await receive()
        except cancelled:
            return {"type": "http.disconnect"}

    return receiving


@functools.cache
def _cancelled() -> tuple:
    from ray.exceptions import TaskCancelledError
    from ray.serve.exceptions import RequestCancelledError

    return (TaskCancelledError, RequestCancelledError)
