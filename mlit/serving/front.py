"""What Serve's HTTP proxy answers itself, before any replica: liveness, and refusals in OpenAI's
error shape.

Every other request crosses from the proxy to the gateway replica, and that hop admits a few
hundred requests a second on this 2-core machine. Under a burst of 1,000 requests a health check
behind them waited 7 s: a liveness probe would restart a healthy server at its peak. Here, in the
proxy's own event loop (a Starlette middleware):

- ``GET /healthz`` is answered at once: the proxy is up, and Serve's controller restarts a
  gateway or model-server replica that fails its health checks, so a probe only has to know that
  HTTP is served. The gateway keeps its own ``/healthz`` for an app started by ``serve run``;
- ``GET /v1/models`` is answered from the gateway's last 200 to the same ``Authorization``
  header, for ``MODELS_TTL_S``: a client listing models does not queue behind a burst of
  generation requests at the gateway (0.87 s at worst in a 1,000-request burst), and a header the
  gateway has not accepted still goes to the gateway, which checks the key;
- a request body is read here, whole, before the request is routed: one sent a byte a second
  is answered 408 after ``BODY_TIMEOUT_S`` and never holds one of the gateway's bounded slots
  (600 slow uploads would otherwise fill them and turn every other client away), and one over
  ``MAX_BODY_BYTES`` is answered 413 without being kept;
- a generation request past the gateway's capacity is refused here, in ms (429 with
  ``Retry-After``), before Serve routes it: refusals decided by the gateway come only after it
  has taken in every request ahead of them, seconds into a burst, and Serve's own queue bound
  (``max_queued_requests``) refuses in a burst while the gateway still has room. The gateway
  states its capacity on every answer (``x-mlit-capacity``, stripped here); until its first
  answer, Serve's and the gateway's own bounds apply. Serve's plain-text refusals are rewritten
  as OpenAI error bodies, so that clients read them as they read the gateway's own errors.

The gateway checks the same (with the app's own, possibly smaller, limits) for an app started by
``serve run``, where this middleware may not be installed.

Serve builds its proxy's middlewares from ``RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH`` in the
proxy's environment (``HTTPOptions.middlewares`` is gone from Ray 2.60), so it has to be set where
Ray starts: `install` before mlit starts a local Ray; ``ray_cluster.yaml`` on the head node.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import time

HEALTH = json.dumps({"status": "ok"}).encode()
# A request body must arrive within this; MLIT_BODY_TIMEOUT_S in the environment Ray starts with
# sets another (read by each proxy as it starts).
BODY_TIMEOUT_S = float(os.environ.get("MLIT_BODY_TIMEOUT_S", "30"))
MAX_BODY_BYTES = 64 * 1024 * 1024  # a bound on what the proxy holds; the gateway's is smaller
GENERATION = ("/v1/chat/completions", "/v1/completions")
# The gateway's answers carry how many generation requests it takes (`mlit.serving.admission`);
# the proxy refuses past that itself, at once, and strips the header.
CAPACITY_HEADER = b"x-mlit-capacity"
CALLBACK = ("RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH", "mlit.serving.front:middlewares")
# How long the proxy answers /v1/models from the gateway's last answer to the same credentials:
# the list changes only when the app is deployed again, and then at most this late.
MODELS_TTL_S = 10.0


def install() -> None:
    """Call before ``ray.init`` starts a local Ray: its proxy inherits this environment."""
    os.environ.setdefault(*CALLBACK)


def middlewares() -> list:
    """Serve's proxy callback (by import path)."""
    from starlette.middleware import Middleware

    return [Middleware(Front)]


class Front:
    def __init__(self, app):
        self.app = app
        self.capacity: int | None = None  # generation requests the gateway takes, once it said
        self.in_flight = 0  # generation requests through this proxy
        self.listings: dict[bytes, tuple[float, bytes]] = {}  # credentials' hash -> (when, body)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if scope["path"] == "/healthz" and scope["method"] in ("GET", "HEAD"):
            return await _answer(send, 200, HEALTH)
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
            return await self.app(scope, receive, _as_openai_errors(self._learn(send)))
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
            await self.app(scope, receive, _as_openai_errors(self._learn(sending)))
        finally:
            leave()

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

        await self.app(scope, receive, _as_openai_errors(self._learn(keeping)))

    def _full(self) -> bool:
        return self.capacity is not None and self.in_flight >= self.capacity

    def _learn(self, send):
        """Take the gateway's capacity from its answers' private header, which goes no further."""

        async def wrapped(message):
            if message["type"] == "http.response.start":
                headers = message.get("headers") or []
                for name, value in headers:
                    if name.lower() == CAPACITY_HEADER:
                        self.capacity = int(value)
                message["headers"] = [(k, v) for k, v in headers if k.lower() != CAPACITY_HEADER]
            await send(message)

        return wrapped


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


def _as_openai_errors(send):
    """Wrap ``send``: Serve's own refusals (429/503 in plain text) become OpenAI error bodies."""
    pending: dict = {}

    async def wrapped(message):
        if message["type"] == "http.response.start" and message["status"] in (429, 503):
            headers = dict(message.get("headers") or [])
            if not headers.get(b"content-type", b"").startswith(b"application/json"):
                pending["start"], pending["text"] = message, b""
                return
        if "start" in pending and message["type"] == "http.response.body":
            pending["text"] += message.get("body", b"")
            if message.get("more_body"):
                return
            start = pending.pop("start")
            keep = [(k, v) for k, v in start.get("headers") or [] if k.lower() == b"retry-after"]
            text = pending.pop("text").decode(errors="replace").strip()
            status = start["status"]
            why = "the server is at capacity" if status == 429 else "the server is not available"
            return await _refuse(send, status, f"{why}: {text}" if text else why, keep)
        await send(message)

    return wrapped


class Edge:
    """The gateway's side, pure ASGI around every route of `mlit.serving.gateway`.

    (1) Every answer says how many generation requests the gateway takes, for `Front` in the
    proxy, which refuses past that at once and strips the header; one gateway per process, its
    ``__init__`` sets it. (2) A client that goes away mid-stream reaches the route as Serve's
    cancelled receive task: it becomes the ASGI disconnect that Starlette handles, instead of an
    exception no one retrieves (a traceback in the log per closed stream)."""

    capacity = b""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def sending(message):
            if message["type"] == "http.response.start" and self.capacity:
                headers = list(message.get("headers") or [])
                message["headers"] = [*headers, (CAPACITY_HEADER, self.capacity)]
            await send(message)

        async def receiving():
            try:
                return await receive()
            except _cancelled():
                return {"type": "http.disconnect"}

        await self.app(scope, receiving, sending)


def _cancelled() -> tuple:
    from ray.exceptions import TaskCancelledError
    from ray.serve.exceptions import RequestCancelledError

    return (TaskCancelledError, RequestCancelledError)
