"""The gateway of the Serve app: a FastAPI ingress of our own in front of `mlit.serving.ModelServer`.

It checks the bearer token, validates requests (`mlit.openai_api`), answers client mistakes with 4xx
OpenAI-style errors, and forwards each request to the model server with the request's ``model`` as
the multiplexed model id.

No ``from __future__ import annotations`` here: FastAPI reads the route annotations at runtime.
"""

import hashlib
import hmac
import json
import re
from collections import Counter

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import ValidationError
from ray import serve

from mlit import engine
from mlit.openai_api import (
    APIError,
    ChatCompletionRequest,
    CompletionRequest,
    chat_response,
    chat_stream_chunks,
    check_max_tokens,
    completion_response,
    completion_stream_chunks,
    models_response,
)


def hash_key(key: str) -> str:
    """The gateway keeps only the SHA-256 of the API key, never the key."""
    return hashlib.sha256(key.encode()).hexdigest()


def _completion_from(d: dict) -> engine.Completion:
    lps = None
    if d["logprobs"] is not None:
        lps = tuple(
            engine.TokenLogprob(tok, lp, tuple((a, b) for a, b in top))
            for tok, lp, top in d["logprobs"]
        )
    return engine.Completion(
        d["text"], d["finish_reason"], d["prompt_tokens"], d["completion_tokens"], lps
    )


# --------------------------------------------------------------------------------------------
# The gateway: FastAPI ingress

api = FastAPI(title="mlit", description="OpenAI-compatible API over mlit's models")


@api.exception_handler(APIError)
async def _api_error(_: Request, err: APIError):
    return JSONResponse(err.body(), status_code=err.status)


@api.exception_handler(Exception)
async def _unexpected(_: Request, err: Exception):
    return JSONResponse(
        {
            "error": {
                "message": f"internal error: {err}",
                "type": "server_error",
                "param": None,
                "code": None,
            }
        },
        status_code=500,
    )


def _pieces(text: str) -> list[str]:
    return re.findall(r"\s*\S+|\s+$", text) or [text]


async def _sse(chunks: list[dict]):
    for c in chunks:
        yield f"data: {json.dumps(c, ensure_ascii=False)}\n\n"
    yield "data: [DONE]\n\n"


@serve.deployment(max_ongoing_requests=512)
@serve.ingress(api)
class Gateway:
    def __init__(
        self,
        server,
        contexts: dict[str, int | None],
        api_key_sha256: str | None,
        default_max_tokens: int = 256,
    ):
        self.server = server
        self.contexts = dict(contexts)
        self.key_hash = api_key_sha256
        self.default_max_tokens = default_max_tokens
        self.requests: Counter[str] = Counter()

    def _auth(self, request: Request) -> None:
        if self.key_hash is None:
            return
        header = request.headers.get("authorization", "")
        token = header[7:] if header.lower().startswith("bearer ") else ""
        if not token or not hmac.compare_digest(hash_key(token), self.key_hash):
            raise APIError(401, "missing or invalid API key (send 'Authorization: Bearer <key>')")

    async def _parse(self, request: Request, schema):
        raw = await request.body()
        try:
            payload = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise APIError(400, f"request body is not valid JSON: {err}") from err
        if not isinstance(payload, dict):
            raise APIError(400, "request body must be a JSON object")
        try:
            return schema.model_validate(payload)
        except ValidationError as err:
            first = err.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise APIError(422, f"invalid field '{where}': {first['msg']}", where) from err

    def _model(self, name: str) -> int | None:
        if name not in self.contexts:
            known = ", ".join(sorted(self.contexts)[:10])
            raise APIError(
                404, f"model {name!r} not found; served models: {known}", "model", "model_not_found"
            )
        return self.contexts[name]

    async def _run(self, name: str, item: dict) -> engine.Completion:
        result = await self.server.options(multiplexed_model_id=name).complete.remote(item)
        if "error" in result:
            raise APIError(result["error"]["status"], result["error"]["message"])
        return _completion_from(result["ok"])

    @api.get("/healthz")
    async def healthz(self):
        return {"status": "ok", "models": len(self.contexts)}

    @api.get("/v1/models")
    async def list_models(self, request: Request):
        self._auth(request)
        return models_response(sorted(self.contexts))

    @api.get("/v1/stats")
    async def stats(self, request: Request):
        """mlit extension: request counts at this gateway replica and model loads per replica."""
        self._auth(request)
        server = await self.server.stats.remote()
        return {"requests": dict(self.requests), **server}

    @api.post("/v1/chat/completions")
    async def chat_completions(self, request: Request):
        self._auth(request)
        req = await self._parse(request, ChatCompletionRequest)
        context = self._model(req.model)
        max_new = check_max_tokens(req.requested_tokens(self.default_max_tokens), context)
        self.requests["chat"] += 1
        item = {
            "kind": "chat",
            "messages": [m.model_dump() for m in req.messages],
            "sampling": req.sampling(max_new).__dict__,
        }
        completion = await self._run(req.model, item)
        if req.stream:
            chunks = chat_stream_chunks(req.model, completion, _pieces(completion.text))
            return StreamingResponse(_sse(chunks), media_type="text/event-stream")
        return chat_response(req.model, completion)

    @api.post("/v1/completions")
    async def completions(self, request: Request):
        self._auth(request)
        req = await self._parse(request, CompletionRequest)
        context = self._model(req.model)
        max_new = check_max_tokens(req.requested_tokens(self.default_max_tokens), context)
        self.requests["completions"] += 1
        item = {"kind": "text", "prompt": req.prompt, "sampling": req.sampling(max_new).__dict__}
        completion = await self._run(req.model, item)
        if req.stream:
            chunks = completion_stream_chunks(req.model, completion, _pieces(completion.text))
            return StreamingResponse(_sse(chunks), media_type="text/event-stream")
        return completion_response(req.model, completion)
