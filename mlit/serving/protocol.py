"""The OpenAI API subset mlit serves: request schemas, response bodies and error bodies.

Plain Pydantic and dicts, no Ray: the gateway (`mlit.serving.gateway`) validates with these models and
builds its answers with these functions, and tests can check them without a cluster.
"""

from __future__ import annotations

import time
import uuid
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    Strict,
    StrictBool,
    StrictInt,
    field_validator,
    model_validator,
)

from mlit.generation.decoding import Completion, TokenLogprob

MAX_CHOICES = 16  # n, and prompts per completions request
MAX_SEQUENCES = 16  # sequences one request may ask for: prompts x n
SEED_RANGE = (-(2**63), 2**63 - 1)  # a 64-bit signed seed, as OpenAI's
StrictFloat = Annotated[float, Strict()]  # a number (an integer too), never a string or a boolean

# Request fields the API defines and mlit does not implement, with the value that asks for
# nothing (None: only leaving the field out, or null). Sent with any other value they are refused
# with a 400 naming them: returning plain text as if a tool call or a JSON mode had been honoured
# would be a silent wrong answer.
UNSUPPORTED = {
    "tools": [],
    "tool_choice": "none",
    "functions": [],
    "function_call": "none",
    "parallel_tool_calls": None,
    "response_format": {"type": "text"},
    "best_of": 1,
    "suffix": None,
    "audio": None,
    "modalities": ["text"],
    "prediction": None,
}


# How soon a client asks again while a replica whose engine died is replaced (Serve checks each
# replica every second and replaces it after 3 failures: a few seconds).
RESTART_RETRY_S = 5


class APIError(Exception):
    """A client mistake, answered as an OpenAI-style error body with an HTTP status."""

    def __init__(
        self,
        status: int,
        message: str,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,  # Retry-After on a 429, for one
    ):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.headers = headers

    @classmethod
    def of(cls, error: dict) -> APIError:
        """A model server's error event as the client gets it (a 503 with its Retry-After)."""
        wait = error.get("retry_after")
        headers = {"Retry-After": str(wait)} if wait is not None else None
        return cls(error["status"], error["message"], headers=headers)

    def body(self) -> dict:
        kinds = {401: "authentication_error", 404: "not_found_error", 429: "rate_limit_error"}
        kind = kinds.get(
            self.status, "server_error" if self.status >= 500 else "invalid_request_error"
        )
        return {
            "error": {"message": self.message, "type": kind, "param": self.param, "code": self.code}
        }


class _Request(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str = Field(min_length=1)
    temperature: StrictFloat = Field(1.0, ge=0, le=2)
    top_p: StrictFloat = Field(1.0, gt=0, le=1)
    max_tokens: StrictInt | None = None
    seed: StrictInt | None = Field(None, ge=SEED_RANGE[0], le=SEED_RANGE[1])
    stop: str | list[str] | None = None
    stream: StrictBool = False
    n: StrictInt = Field(1, ge=1, le=MAX_CHOICES)
    ignore_eos: StrictBool = False  # vLLM-compatible extension: generate exactly max_tokens
    frequency_penalty: StrictFloat | None = Field(None, ge=-2, le=2)
    presence_penalty: StrictFloat | None = Field(None, ge=-2, le=2)
    logit_bias: dict[str, StrictFloat] | None = None  # token id (as a string) -> -100..100

    @field_validator("logit_bias")
    @classmethod
    def _token_ids(cls, bias):
        for token, value in (bias or {}).items():
            if not token.isdigit():
                raise ValueError(f"logit_bias keys are token ids, got {token!r}")
            if not -100 <= value <= 100:
                raise ValueError(f"logit_bias of token {token} must be between -100 and 100")
        return bias

    @model_validator(mode="before")
    @classmethod
    def _refuse_unsupported(cls, data):
        if isinstance(data, dict):
            for name, nothing in UNSUPPORTED.items():
                value = data.get(name)
                if value is not None and value != nothing:
                    raise APIError(
                        400, f"'{name}' is not supported by this server; leave it out", name
                    )
        return data

    @model_validator(mode="after")
    def _seeds_in_range(self):
        if self.seed is not None and self.seed + self.n - 1 > SEED_RANGE[1]:
            raise ValueError(
                f"seed + n - 1 must be at most {SEED_RANGE[1]} (choice i uses seed + i)"
            )
        return self

    def stops(self) -> tuple[str, ...]:
        """Stop strings; an empty one would stop at once, so it is ignored (as OpenAI does)."""
        if self.stop is None:
            return ()
        stops = (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)
        return tuple(s for s in stops if s)

    def seeds(self) -> list[int | None]:
        """One seed per choice: with n > 1 and a seed, choice i samples with seed + i."""
        return [None if self.seed is None else self.seed + i for i in range(self.n)]


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart]

    def plain(self) -> dict:
        """The message as the chat template takes it: ``developer`` is the newer name of
        ``system``, and text parts are joined."""
        content = self.content
        if not isinstance(content, str):
            content = "".join(part.text for part in content)
        return {"role": "system" if self.role == "developer" else self.role, "content": content}


class ChatCompletionRequest(_Request):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: StrictInt | None = None
    logprobs: StrictBool = False
    top_logprobs: StrictInt | None = Field(None, ge=0, le=20)

    @property
    def fits_context(self) -> bool:
        """No max_tokens asked for: the answer may take what the context leaves (up to the
        server's default), never a refusal for a long prompt."""
        return self.max_completion_tokens is None and self.max_tokens is None

    def requested_tokens(self, default: int) -> int:
        for value in (self.max_completion_tokens, self.max_tokens):
            if value is not None:
                return value
        return default

    def sampling(self, max_new_tokens: int, seed: int | None) -> dict:
        top = (self.top_logprobs or 0) if self.logprobs else None
        return _sampling(self, max_new_tokens, seed, top)


class CompletionRequest(_Request):
    # A text, token ids (what evaluation harnesses send), or a list of either: one choice each.
    prompt: str | list[int] | list[str] | list[list[int]]
    max_tokens: StrictInt | None = 16
    logprobs: StrictInt | None = Field(None, ge=0, le=20)
    echo: StrictBool = False

    @field_validator("prompt")
    @classmethod
    def _some_prompts(cls, prompt):
        if isinstance(prompt, list) and not prompt:
            raise ValueError("the prompt list is empty")
        if isinstance(prompt, list) and isinstance(prompt[0], str | list):
            if len(prompt) > MAX_CHOICES:
                raise ValueError(f"at most {MAX_CHOICES} prompts per request")
            if isinstance(prompt[0], list) and not all(prompt):
                raise ValueError("a token-id prompt is empty")
        return prompt

    @model_validator(mode="after")
    def _sequences_capped(self):
        if len(self.prompts()) * self.n > MAX_SEQUENCES:
            raise APIError(
                400,
                f"{len(self.prompts())} prompts x n={self.n} asks for more than {MAX_SEQUENCES} "
                "sequences in one request; send several requests",
                "n",
            )
        return self

    def prompts(self) -> list[str | list[int]]:
        if isinstance(self.prompt, str) or isinstance(self.prompt[0], int):
            return [self.prompt]
        return list(self.prompt)

    def requested_tokens(self, default: int) -> int:
        return default if self.max_tokens is None else self.max_tokens

    def sampling(self, max_new_tokens: int, seed: int | None) -> dict:
        return _sampling(self, max_new_tokens, seed, self.logprobs)


def _sampling(req: _Request, max_new_tokens: int, seed: int | None, top: int | None) -> dict:
    """`mlit.generation.decoding.Sampling`'s fields as plain data for the model server (which builds the
    Sampling: ``max_new_tokens`` may be 0 there, for an echoed prompt's log-likelihoods)."""
    return {
        "max_new_tokens": max_new_tokens,
        "temperature": req.temperature,
        "top_p": req.top_p,
        "seed": seed,
        "stop": req.stops(),
        "top_logprobs": top,
        "ignore_eos": req.ignore_eos,
        "frequency_penalty": req.frequency_penalty or 0.0,
        "presence_penalty": req.presence_penalty or 0.0,
        "logit_bias": tuple(sorted((int(t), b) for t, b in (req.logit_bias or {}).items())),
    }


def check_max_tokens(requested: int, context: int | None, echo: bool = False) -> int:
    if requested == 0 and echo:  # the prompt's log-likelihoods only: what evaluators ask for
        return 0
    if requested < 1:
        raise APIError(
            400,
            f"max_tokens must be at least 1 (or 0 with echo=true), got {requested}",
            "max_tokens",
        )
    if context is not None and requested >= context:
        raise APIError(
            400,
            f"max_tokens is {requested} but the model's context is {context} tokens; "
            f"ask for fewer than {context}",
            "max_tokens",
        )
    return requested


def usage(c: Completion) -> dict:
    return _total_usage([c])


def chat_logprobs(entries: tuple[TokenLogprob, ...] | None) -> dict | None:
    """Chat's ``logprobs`` of an answer or of a streamed piece's tokens."""
    if entries is None:
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
            for t in entries
        ]
    }


def chat_response(model: str, completions: list[Completion]) -> dict:
    usage = _total_usage(completions)
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": i,
                "message": {"role": "assistant", "content": c.text},
                "logprobs": chat_logprobs(c.logprobs),
                "finish_reason": c.finish_reason,
            }
            for i, c in enumerate(completions)
        ],
        "usage": usage,
    }


def completion_logprobs(entries: tuple[TokenLogprob, ...] | None, start: int = 0) -> dict | None:
    """Legacy completions logprobs of an answer, or of a streamed piece's tokens whose first
    starts at character ``start``: ``text_offset`` counts characters of the returned text, which
    holds because the token strings are what each token adds to it (`mlit.generation.decoding.token_text`)."""
    if entries is None:
        return None
    offsets, pos = [], start
    for t in entries:
        offsets.append(pos)
        pos += len(t.token)
    return {
        "tokens": [t.token for t in entries],
        "token_logprobs": [t.logprob for t in entries],
        # The first prompt token of an echo has no context, so no alternatives: null, as OpenAI.
        "top_logprobs": [dict(t.top) if t.logprob is not None else None for t in entries],
        "text_offset": offsets,
    }


def completion_response(model: str, completions: list[Completion]) -> dict:
    return {
        "id": f"cmpl-{uuid.uuid4().hex[:24]}",
        "object": "text_completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": i,
                "text": c.text,
                "logprobs": completion_logprobs(c.logprobs),
                "finish_reason": c.finish_reason,
            }
            for i, c in enumerate(completions)
        ],
        "usage": _total_usage(completions),
    }


def _total_usage(completions: list[Completion]) -> dict:
    prompt = sum(c.prompt_tokens for c in completions)
    done = sum(c.completion_tokens for c in completions)
    return {"prompt_tokens": prompt, "completion_tokens": done, "total_tokens": prompt + done}


def chat_chunk(
    rid: str, created: int, model: str, delta: dict, finish: str | None, usage=None, logprobs=None
) -> dict:
    """One server-sent event of a streamed chat answer (``logprobs``: its tokens' entries)."""
    choice = {"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": finish}
    return _chunk("chat.completion.chunk", rid, created, model, choice, usage)


def text_chunk(
    rid: str, created: int, model: str, text: str, finish: str | None, usage=None, logprobs=None
) -> dict:
    """One server-sent event of a streamed completion (``logprobs``: its tokens' entries, as
    `completion_logprobs` writes them)."""
    choice = {"index": 0, "text": text, "logprobs": logprobs, "finish_reason": finish}
    return _chunk("text_completion", rid, created, model, choice, usage)


def _chunk(kind: str, rid: str, created: int, model: str, choice: dict, usage) -> dict:
    body = {"id": rid, "object": kind, "created": created, "model": model, "choices": [choice]}
    if usage is not None:  # the last chunk, as OpenAI sends it with stream_options.include_usage
        body["usage"] = usage
    return body


def models_response(names: list[str], owner: str = "mlit") -> dict:
    return {
        "object": "list",
        "data": [{"id": n, "object": "model", "created": 0, "owned_by": owner} for n in names],
    }


def lone_surrogate(value, where: str = "") -> str | None:
    """Where in a request a string holds a lone surrogate (``messages.0.content``), or None."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return where or "body"
        return None
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        return None
    for key, item in items:
        found = lone_surrogate(item, f"{where}.{key}" if where else str(key))
        if found:
            return found
    return None
