"""The OpenAI API subset mlit serves: request schemas, response bodies and error bodies.

Plain Pydantic and dicts, no Ray: the Serve ingress (`mlit.serving`) validates with these models and
builds its answers with these functions, and tests can check them without a cluster.
"""

from __future__ import annotations

import time
import uuid
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from mlit.engine import Completion, Sampling


class APIError(Exception):
    """A client mistake, answered as an OpenAI-style error body with an HTTP status."""

    def __init__(
        self, status: int, message: str, param: str | None = None, code: str | None = None
    ):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code

    def body(self) -> dict:
        kind = {401: "authentication_error", 404: "not_found_error"}.get(
            self.status, "invalid_request_error"
        )
        return {
            "error": {"message": self.message, "type": kind, "param": self.param, "code": self.code}
        }


class _Request(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str = Field(min_length=1)
    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    max_tokens: int | None = None
    seed: int | None = None
    stop: str | list[str] | None = None
    stream: bool = False
    n: int = 1
    ignore_eos: bool = False  # vLLM-compatible extension: generate exactly max_tokens

    @field_validator("n")
    @classmethod
    def _one_choice(cls, n: int) -> int:
        if n != 1:
            raise ValueError("only n=1 is supported")
        return n

    def stops(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)


class ChatMessage(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str


class ChatCompletionRequest(_Request):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = None
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=20)

    def requested_tokens(self, default: int) -> int:
        for value in (self.max_completion_tokens, self.max_tokens):
            if value is not None:
                return value
        return default

    def sampling(self, max_new_tokens: int) -> Sampling:
        top = (self.top_logprobs or 0) if self.logprobs else None
        return Sampling(
            max_new_tokens,
            self.temperature,
            self.top_p,
            self.seed,
            self.stops(),
            top,
            self.ignore_eos,
        )


class CompletionRequest(_Request):
    prompt: str | list[str]
    max_tokens: int | None = 16
    logprobs: int | None = Field(None, ge=0, le=20)
    echo: bool = False

    @field_validator("prompt")
    @classmethod
    def _single_prompt(cls, prompt):
        if isinstance(prompt, list):
            if len(prompt) != 1:
                raise ValueError("send one prompt per request")
            return prompt[0]
        return prompt

    def requested_tokens(self, default: int) -> int:
        return default if self.max_tokens is None else self.max_tokens

    def sampling(self, max_new_tokens: int) -> Sampling:
        return Sampling(
            max_new_tokens,
            self.temperature,
            self.top_p,
            self.seed,
            self.stops(),
            self.logprobs,
            self.ignore_eos,
        )


def check_max_tokens(requested: int, context: int | None) -> int:
    if requested < 1:
        raise APIError(400, f"max_tokens must be at least 1, got {requested}", "max_tokens")
    if context is not None and requested >= context:
        raise APIError(
            400,
            f"max_tokens is {requested} but the model's context is {context} tokens; "
            f"ask for fewer than {context}",
            "max_tokens",
        )
    return requested


def _usage(c: Completion) -> dict:
    return {
        "prompt_tokens": c.prompt_tokens,
        "completion_tokens": c.completion_tokens,
        "total_tokens": c.prompt_tokens + c.completion_tokens,
    }


def _chat_logprobs(c: Completion) -> dict | None:
    if c.logprobs is None:
        return None
    return {
        "content": [
            {
                "token": t.token,
                "logprob": t.logprob,
                "bytes": list(t.token.encode()),
                "top_logprobs": [
                    {"token": tok, "logprob": lp, "bytes": list(tok.encode())} for tok, lp in t.top
                ],
            }
            for t in c.logprobs
        ]
    }


def chat_response(model: str, c: Completion) -> dict:
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": c.text},
                "logprobs": _chat_logprobs(c),
                "finish_reason": c.finish_reason,
            }
        ],
        "usage": _usage(c),
    }


def completion_response(model: str, c: Completion) -> dict:
    logprobs = None
    if c.logprobs is not None:
        offsets, pos = [], 0
        for t in c.logprobs:
            offsets.append(pos)
            pos += len(t.token)
        logprobs = {
            "tokens": [t.token for t in c.logprobs],
            "token_logprobs": [t.logprob for t in c.logprobs],
            "top_logprobs": [dict(t.top) for t in c.logprobs],
            "text_offset": offsets,
        }
    return {
        "id": f"cmpl-{uuid.uuid4().hex[:24]}",
        "object": "text_completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {"index": 0, "text": c.text, "logprobs": logprobs, "finish_reason": c.finish_reason}
        ],
        "usage": _usage(c),
    }


def chat_stream_chunks(model: str, c: Completion, pieces: list[str]) -> list[dict]:
    """Server-sent-event payloads for a finished completion, one text piece per chunk."""
    rid, created = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())

    def chunk(delta: dict, finish: str | None, usage: dict | None = None) -> dict:
        body = {
            "id": rid,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
        if usage is not None:
            body["usage"] = usage
        return body

    out = [chunk({"role": "assistant", "content": ""}, None)]
    out += [chunk({"content": p}, None) for p in pieces if p]
    out.append(chunk({}, c.finish_reason, _usage(c)))
    return out


def completion_stream_chunks(model: str, c: Completion, pieces: list[str]) -> list[dict]:
    rid, created = f"cmpl-{uuid.uuid4().hex[:24]}", int(time.time())
    out = [
        {
            "id": rid,
            "object": "text_completion",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "text": p, "logprobs": None, "finish_reason": None}],
        }
        for p in pieces
        if p
    ]
    out.append(
        {
            "id": rid,
            "object": "text_completion",
            "created": created,
            "model": model,
            "choices": [
                {"index": 0, "text": "", "logprobs": None, "finish_reason": c.finish_reason}
            ],
            "usage": _usage(c),
        }
    )
    return out


def models_response(names: list[str], owner: str = "mlit") -> dict:
    return {
        "object": "list",
        "data": [{"id": n, "object": "model", "created": 0, "owned_by": owner} for n in names],
    }
