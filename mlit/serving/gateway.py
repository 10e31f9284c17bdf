"""The gateway of the Serve app: a FastAPI ingress of our own in front of the model servers.

It checks the bearer token, validates requests (`mlit.serving.protocol`), answers client mistakes
with 4xx OpenAI-style errors, and hands each request to its model's shard (`mlit.serving.shards`:
a model-server deployment, through Serve; or the app's one model server, run in this replica).

No ``from __future__ import annotations`` here: FastAPI reads the route annotations at runtime.
"""

import asyncio
import hashlib
import hmac
import json
import logging
import time
import uuid
from collections import Counter

from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from pydantic import ValidationError
from ray import serve
from ray.exceptions import RayActorError, TaskCancelledError
from ray.serve.exceptions import RequestCancelledError
from starlette.background import BackgroundTask
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from mlit.generation import decoding
from mlit.serving import admission, front, shards
from mlit.serving.admission import Admission, Limits
from mlit.serving.protocol import (
    RESTART_RETRY_S,
    APIError,
    ChatCompletionRequest,
    CompletionRequest,
    chat_chunk,
    chat_logprobs,
    chat_response,
    check_max_tokens,
    completion_logprobs,
    completion_response,
    lone_surrogate,
    models_response,
    text_chunk,
    usage,
)
from mlit.serving.sse import completion_from, error_body, prepend, relay, sse

MAX_BODY_BYTES = 2 * 1024 * 1024  # a prompt far longer than any context, well short of a stall
BODY_TIMEOUT_S = 30.0  # a request body must arrive within this (408 past it)


def hash_key(key: str) -> str:
    """The gateway keeps only the SHA-256 of the API key, never the key."""
    return hashlib.sha256(key.encode()).hexdigest()


# --------------------------------------------------------------------------------------------
# The gateway: FastAPI ingress

# The docs and the schema are routes of the Gateway below, behind the key like the rest.
api = FastAPI(
    title="mlit",
    description="OpenAI-compatible API over mlit's models",
    docs_url=None,
    redoc_url=None,
    openapi_url=None,
)
logger = logging.getLogger("ray.serve")


# Liveness, cached model lists, bodies and refusals before routing (`mlit.serving.front`).
api.add_middleware(front.Front)


@api.exception_handler(APIError)
async def _api_error(_: Request, err: APIError):
    return JSONResponse(err.body(), status_code=err.status, headers=err.headers)


@api.exception_handler(StarletteHTTPException)
async def _http_error(_: Request, err: StarletteHTTPException):
    """404 (no such route), 405 (wrong method) and the like, in OpenAI's error shape."""
    kind = "invalid_request_error" if err.status_code < 500 else "server_error"
    return JSONResponse(error_body(str(err.detail), kind), status_code=err.status_code)


# A client that went away (a closed stream, a timeout), seen as whichever of these reaches the
# route first. It is no error of the server's: one line at INFO, no traceback (590 tracebacks at
# ERROR, 2.9 MB of log, in under an hour of hostile testing before).
_GONE = (asyncio.CancelledError, ClientDisconnect, TaskCancelledError, RequestCancelledError)


@api.exception_handler(Exception)
async def _unexpected(request: Request, err: Exception):
    """A bug: a generic body with a reference; the details go to the server log only."""
    ref = uuid.uuid4().hex[:12]
    if isinstance(err, _GONE):
        logger.info("client went away (%s %s, %s)", request.method, request.url.path, ref)
        return JSONResponse(error_body("client closed the request", "client_closed"), 499)
    if isinstance(err, RayActorError):  # a model-server replica died: Serve replaces it
        message = (
            f"the model server is being restarted: retry in {RESTART_RETRY_S} s (request {ref})"
        )
        return JSONResponse(
            error_body(message, "server_error"), 503, {"Retry-After": f"{RESTART_RETRY_S}"}
        )
    logger.error("unexpected error (request %s)", ref, exc_info=err)
    return JSONResponse(
        error_body(f"internal server error (request {ref})", "server_error"), status_code=500
    )


# No assets from a network: a plain page that lists the routes of the schema it fetches.
_DOCS_PAGE = """<!doctype html><meta charset="utf-8"><title>mlit API</title>
<h1>mlit: OpenAI-compatible API</h1><p>The schema is at <code>/openapi.json</code> (send the same
<code>Authorization: Bearer</code> header). Routes: <code>POST /v1/chat/completions</code>,
<code>POST /v1/completions</code>, <code>GET /v1/models</code>, <code>GET /v1/stats</code>,
<code>GET /healthz</code> or <code>/health</code> (no key).</p>"""


_SCHEMAS: dict[str, dict] = {}  # request body schemas, for /openapi.json


def _body_schema(model) -> dict:
    """A route's request body, declared for `/openapi.json` (the route reads the body itself, so
    that size limits and malformed JSON are answered in OpenAI's error shape)."""
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    _SCHEMAS.update(schema.pop("$defs", {}))
    _SCHEMAS[model.__name__] = schema
    ref = {"$ref": f"#/components/schemas/{model.__name__}"}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": ref}}}}


@serve.deployment  # its bounds: `mlit.serving.app.build_app`, from the admission limits
@serve.ingress(api)
class Gateway:
    def __init__(
        self,
        servers: list,
        shard: dict[str, int],
        contexts: dict[str, int | None],
        api_key_sha256: str | None,
        limits: Limits,
        default_max_tokens: int = 256,
        max_body_bytes: int = MAX_BODY_BYTES,
        body_timeout_s: float = BODY_TIMEOUT_S,
    ):
        self.servers = shards.connect(servers)
        self.shard = dict(shard)
        self.contexts = dict(contexts)
        self.key_hash = api_key_sha256
        self.default_max_tokens = default_max_tokens
        self.max_body = max_body_bytes
        self.body_timeout_s = body_timeout_s
        self.admission = Admission(limits)
        front.Front.capacity, front.Front.health_check = limits.total, self.check_health
        self.requests: Counter[str] = Counter()
        # Serve sets up a handle's routing on its first call, on this event loop: in the first
        # burst that held /healthz for 0.8 s behind it (0.1-0.3 s once warm). Started here, as
        # the replica starts, so it is usually done before the first burst (not awaited: a slow
        # model server must not hold the gateway's start); kept, so it is not collected.
        self._warm = asyncio.get_running_loop().create_task(self._warm_up())

    async def _warm_up(self) -> None:
        try:
            await asyncio.gather(*(s.stats() for s in self.servers))
        except Exception:  # a warm-up only: the first request sets the handles up again
            logger.info("gateway warm-up failed; the first requests pay the handles' set-up")

    def check_health(self) -> None:
        """Serve's periodic health check: a model server run here whose engine is gone fails it
        (and `front.Front` answers /healthz and /health with 503 meanwhile)."""
        for server in self.servers:
            server.check_health()

    def _auth(self, request: Request) -> None:
        if self.key_hash is None:
            return
        headers = request.headers.getlist("authorization")
        if len(headers) > 1:  # which one counts would be a guess: none does
            raise APIError(400, "send one Authorization header, not several")
        header = headers[0] if headers else ""
        token = header[7:] if header.lower().startswith("bearer ") else ""
        if not token or not hmac.compare_digest(hash_key(token), self.key_hash):
            raise APIError(401, "missing or invalid API key (send 'Authorization: Bearer <key>')")

    async def _parse(self, request: Request, schema):
        self.admission.check()  # a full server refuses before it reads a body
        too_big = APIError(413, f"request body is over the limit of {self.max_body} bytes")
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_body:
            raise too_big
        raw = bytearray()
        try:  # a body trickled in a byte at a time must not hold the request forever
            async with asyncio.timeout(self.body_timeout_s):
                async for part in request.stream():  # a body without a length is counted too
                    raw += part
                    if len(raw) > self.max_body:
                        raise too_big
        except TimeoutError as err:
            limit = f"{self.body_timeout_s:g} s"
            raise APIError(408, f"the request body did not arrive within {limit}") from err
        try:
            payload = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise APIError(400, f"request body is not valid JSON: {err}") from err
        except RecursionError as err:
            raise APIError(400, "request body is JSON nested too deeply") from err
        if not isinstance(payload, dict):
            raise APIError(400, "request body must be a JSON object")
        where = lone_surrogate(payload)
        if where is not None:  # JSON allows "\ud800"; no tokenizer can encode it
            raise APIError(400, f"'{where}' has a lone UTF-16 surrogate: it is not text", where)
        try:
            return schema.model_validate(payload)
        except ValidationError as err:
            first = err.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            # 400, as OpenAI answers (the openai client raises BadRequestError, not 422's error).
            raise APIError(400, f"invalid field '{where}': {first['msg']}", where) from err

    def _model(self, name: str) -> int | None:
        if name not in self.contexts:
            known = ", ".join(sorted(self.contexts)[:10])
            raise APIError(
                404, f"model {name!r} not found; served models: {known}", "model", "model_not_found"
            )
        return self.contexts[name]

    async def _run(self, name: str, item: dict) -> decoding.Completion:
        result = await self.servers[self.shard[name]].complete(name, item)
        if "error" in result:
            raise APIError.of(result["error"])
        return completion_from(result["ok"])

    async def _run_all(self, name: str, items: list[dict]) -> list[decoding.Completion]:
        """Several choices (n > 1, or several prompts): each is one request of the batch, and
        together they take their fair share of it (`_group`)."""
        self.admission.check_size(len(items), items[0]["sampling"]["max_new_tokens"])
        items = admission.group(items)
        since = self.admission.enter(name, len(items))
        try:
            return list(await asyncio.gather(*(self._run(name, item) for item in items)))
        finally:
            self.admission.leave(name, len(items), since)

    async def _stream(self, name: str, item: dict, chunk, done) -> StreamingResponse:
        self.admission.check_size(1, item["sampling"]["max_new_tokens"])
        since = self.admission.enter(name, 1)
        left = False

        async def leave():  # a coroutine: Starlette runs a plain function's task in a thread
            nonlocal left
            if not left:
                left = True
                self.admission.leave(name, 1, since)

        try:
            events = self.servers[self.shard[name]].stream(name, item)
            first = await events.__anext__()  # a request the server refuses is a 4xx, no stream
            if "error" in first:
                raise APIError.of(first["error"])
        except BaseException:
            await leave()
            raise
        events_sse = relay(first, events, chunk, done, leave)
        # The background task too: a client gone before the first byte never starts the relay.
        return StreamingResponse(
            events_sse, media_type="text/event-stream", background=BackgroundTask(leave)
        )

    @api.get("/healthz")
    async def healthz(self):  # answered by `front.Front` before routing; here for the schema
        return {"status": "ok"}

    @api.get("/openapi.json", include_in_schema=False)
    async def openapi_schema(self, request: Request):
        self._auth(request)
        doc = get_openapi(
            title=api.title, version="1", description=api.description, routes=api.routes
        )
        schemas = json.loads(json.dumps(_SCHEMAS))  # a copy: the served names go into it
        for name in ("ChatCompletionRequest", "CompletionRequest"):
            schemas[name]["properties"]["model"]["enum"] = sorted(self.contexts)
        doc.setdefault("components", {}).setdefault("schemas", {}).update(schemas)
        return JSONResponse(doc)

    @api.get("/docs", include_in_schema=False)
    async def docs(self, request: Request):
        """A plain page naming the routes and where the schema is (no assets from a network)."""
        self._auth(request)
        return HTMLResponse(_DOCS_PAGE)

    @api.get("/v1/models")
    async def list_models(self, request: Request):
        self._auth(request)
        return models_response(sorted(self.contexts))

    @api.get("/v1/stats")
    async def stats(self, request: Request):
        """mlit extension: request counts at this gateway replica, and model loads and decode
        batch sizes of one replica of each shard."""
        self._auth(request)
        counts = await asyncio.gather(*(s.stats() for s in self.servers))
        loads: Counter[str] = Counter()
        starts: Counter[str] = Counter()
        failed: Counter[str] = Counter()
        for one in counts:
            loads.update(one["loads"])
            starts.update(one.get("starts", {}))
            failed.update(one.get("failed_loads", {}))
        return {
            **({"engine_starts": dict(starts)} if starts else {}),
            "requests": dict(self.requests),
            "refused": self.admission.refused,
            "in_flight": self.admission.in_flight,
            "engine": counts[0]["engine"],
            "shards": len(counts),
            "loads": dict(loads),
            "failed_loads": dict(failed),
            "loads_by_shard": [one["loads"] for one in counts],
            "batch_sizes": [n for one in counts for n in one["batch_sizes"]],
            **{  # counters since each replica started (the hf engine's)
                name: sum(one[name] for one in counts)
                for name in ("decode_steps", "decode_rows")
                if all(name in one for one in counts)
            },
        }

    @api.post("/v1/chat/completions", openapi_extra=_body_schema(ChatCompletionRequest))
    async def chat_completions(self, request: Request):
        self._auth(request)
        req = await self._parse(request, ChatCompletionRequest)
        context = self._model(req.model)
        default = self.default_max_tokens
        if req.fits_context and context is not None:
            default = min(default, context - 1)  # the model server fits it to the prompt
        max_new = check_max_tokens(req.requested_tokens(default), context)
        self.requests["chat"] += 1
        messages = [m.plain() for m in req.messages]
        fit = req.fits_context
        items = [
            {"kind": "chat", "messages": messages, "sampling": req.sampling(max_new, s), "fit": fit}
            for s in req.seeds()
        ]
        if not req.stream:
            # A JSONResponse as is: FastAPI would walk a returned dict through jsonable_encoder
            # first, for nothing (it is plain JSON already), on every answer.
            return JSONResponse(chat_response(req.model, await self._run_all(req.model, items)))
        if len(items) > 1:
            raise APIError(400, "stream with n > 1 is not supported; send n requests", "n")
        rid, created = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())
        head = chat_chunk(rid, created, req.model, {"role": "assistant", "content": ""}, None)

        def chunk(text: str, lps) -> dict:
            return chat_chunk(
                rid, created, req.model, {"content": text}, None, logprobs=chat_logprobs(lps)
            )

        def done(c: decoding.Completion) -> dict:
            return chat_chunk(rid, created, req.model, {}, c.finish_reason, usage(c))

        response = await self._stream(req.model, items[0], chunk, done)
        return prepend(response, sse(head))

    @api.post("/v1/completions", openapi_extra=_body_schema(CompletionRequest))
    async def completions(self, request: Request):
        self._auth(request)
        req = await self._parse(request, CompletionRequest)
        context = self._model(req.model)
        requested = req.requested_tokens(self.default_max_tokens)
        max_new = check_max_tokens(requested, context, echo=req.echo)
        self.requests["completions"] += 1
        items = [
            {"kind": "text", "prompt": p, "echo": req.echo, "sampling": req.sampling(max_new, s)}
            for p in req.prompts()
            for s in req.seeds()
        ]
        if not req.stream:
            completions = await self._run_all(req.model, items)
            return JSONResponse(completion_response(req.model, completions))
        if len(items) > 1:
            raise APIError(400, "stream with several prompts or n > 1 is not supported", "stream")
        rid, created = f"cmpl-{uuid.uuid4().hex[:24]}", int(time.time())

        offset = 0  # where the next logprob entry's token starts in the returned text

        def chunk(text: str, lps) -> dict:
            nonlocal offset
            logprobs = completion_logprobs(lps, offset)
            offset += sum(len(t.token) for t in lps or ())
            return text_chunk(rid, created, req.model, text, None, logprobs=logprobs)

        def done(c: decoding.Completion) -> dict:
            return text_chunk(rid, created, req.model, "", c.finish_reason, usage(c))

        return await self._stream(req.model, items[0], chunk, done)
