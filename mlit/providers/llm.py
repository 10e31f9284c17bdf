"""One litellm call with the robustness every caller needs (judge, translator).

A wall-clock timeout, retries with exponential backoff on retryable failures only (rate limits,
timeouts, connection errors, 5xx), no retry on the rest (a wrong key, a bad request), a check of
``finish_reason``, usage and cost. Errors come back as records, never as exceptions, so a caller
can store them as errors and carry on. litellm is imported here only, when a call is made.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from mlit.providers import openai_http
from mlit.providers import retries as retries_rule

# Clusters may be offline: use the cost map bundled with litellm, never fetch it.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

GOOD_FINISH = ("stop", "length", "eos", None)
DIRECT = True  # OpenAI-compatible endpoints asked directly when the caller has a session
JUDGE_TEMPERATURE = 0  # the paper's greedy judge (App. C); `complete` decodes with it


@dataclass(frozen=True)
class Endpoint:
    model: str  # any litellm model string; our Serve app is "openai/<name>" with api_base
    api_base: str | None = None
    api_key_env: str | None = None  # the variable's name; the key itself is never stored
    timeout_s: float = 60.0
    retries: int = 4
    backoff_s: float = 0.5
    patience_s: float = retries_rule.PATIENCE_S  # retry passing failures at least this long
    longest_wait_s: float = retries_rule.LONGEST_WAIT_S  # a longer Retry-After stops the phase

    def api_key(self) -> str | None:
        if not self.api_key_env:
            return "EMPTY" if self.api_base else None  # keyless self-hosted endpoints
        key = os.environ.get(self.api_key_env)
        if not key:
            raise ValueError(f"the API key variable {self.api_key_env} is not set")
        return key


def library():
    """litellm, imported once. A caller that times a call imports it first: on a loaded machine
    the import alone took 43 s, and a probe's deadline is for the endpoint, not the import."""
    import litellm

    litellm.suppress_debug_info = True
    return litellm


def retryable(err: Exception) -> bool:
    if _direct_error(err):
        status = getattr(err, "status_code", None)
        return status is None or status == 429 or status >= 500
    import litellm

    kinds = (
        litellm.RateLimitError,
        litellm.Timeout,
        litellm.APIConnectionError,
        litellm.InternalServerError,
        litellm.ServiceUnavailableError,
        litellm.BadGatewayError,
        asyncio.TimeoutError,
    )
    if isinstance(err, kinds):
        return True
    status = getattr(err, "status_code", None)
    return isinstance(status, int) and (status == 429 or status >= 500)


def _direct_error(err: Exception) -> bool:
    """An error of the direct path (`openai_http`): its status, a timeout, a lost connection."""
    return isinstance(err, openai_http.HTTPError | asyncio.TimeoutError | TimeoutError) or (
        openai_http.is_connection_error(err)
    )


def rate_limited(err: Exception) -> bool:
    if _direct_error(err):
        return getattr(err, "status_code", None) == 429
    import litellm

    return isinstance(err, litellm.RateLimitError) or getattr(err, "status_code", None) == 429


FATAL_STATUS = {401: "unauthorized", 403: "forbidden", 404: "not found"}


def fatal_status(err: Exception) -> int | None:
    """The HTTP status of an answer that no retry and no other request can fix (a revoked key,
    a model that does not exist), or None. A caller stops at once on these."""
    if _direct_error(err):
        status = getattr(err, "status_code", None)
        return status if status in FATAL_STATUS else None
    import litellm

    status = getattr(err, "status_code", None)
    if isinstance(err, litellm.AuthenticationError):
        status = status if status in FATAL_STATUS else 401
    elif isinstance(err, litellm.PermissionDeniedError):
        status = 403
    return status if status in FATAL_STATUS else None


def describe(err: Exception, where: str, timeout_s: float = 60.0) -> str:
    if _direct_error(err):
        status = getattr(err, "status_code", None)
        if status in (401, 403):
            return f"the endpoint {where} rejected the API key (HTTP {status}: {err})"
        if isinstance(err, asyncio.TimeoutError | TimeoutError):
            return f"timed out at {where} (no reply within {timeout_s:g} s)"
        if status is None:
            return f"unreachable at {where}: {type(err).__name__}: {str(err)[:200]}"
        return f"call failed at {where}: {str(err)[:300]}"
    import litellm

    if isinstance(err, litellm.AuthenticationError):
        return f"the endpoint {where} rejected the API key ({type(err).__name__})"
    if isinstance(err, asyncio.TimeoutError | litellm.Timeout):
        detail = f": {str(err)[:200]}" if str(err) else ""
        return f"timed out at {where} (no reply within {timeout_s:g} s){detail}"
    unreachable = "connection error" in str(err).lower() or "connect" in type(err).__name__.lower()
    if unreachable or isinstance(
        err, litellm.APIConnectionError | asyncio.TimeoutError | litellm.Timeout
    ):
        return f"unreachable at {where}: {type(err).__name__}: {str(err)[:200]}"
    return f"call failed at {where}: {type(err).__name__}: {str(err)[:300]}"


class ProviderStop(RuntimeError):
    """The provider stopped a phase for now: a ``Retry-After`` longer than a phase waits (a
    quota spent), or a batch the user cancelled. What was answered is stored; a rerun goes on."""


def long_wait(where: str, seconds: float) -> str:
    """The one line that says a provider asks for a longer wait than a phase waits out."""
    until = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(time.time() + seconds))
    return (
        f"the provider at {where} asks to wait {retries_rule.describe_wait(seconds)} before the "
        f"next call (Retry-After; a daily quota spent?), longer than mlit waits "
        f"({retries_rule.describe_wait(retries_rule.LONGEST_WAIT_S)}): rerun after {until}, "
        "or with another key, provider or a higher quota"
    )


def _get(obj, name: str):
    """A field of a reply, whether litellm's object or a Batch API result's JSON body."""
    return obj.get(name) if isinstance(obj, dict) else getattr(obj, name, None)


def _top_logprobs(choice) -> list[tuple[str, float]] | None:
    lp = _get(choice, "logprobs")
    if lp is None:
        return None
    content = lp.get("content") if isinstance(lp, dict) else getattr(lp, "content", None)
    if not content:
        return None
    first = content[0]
    tops = first.get("top_logprobs") if isinstance(first, dict) else first.top_logprobs
    out = []
    for t in tops or []:
        token = t.get("token") if isinstance(t, dict) else t.token
        logprob = t.get("logprob") if isinstance(t, dict) else t.logprob
        out.append((token, float(logprob)))
    return out or None


def reply_record(resp, where: str, start: float | None = None) -> dict:
    """One chat completion (litellm's reply, or a Batch API result's body) as a record."""
    # A reply is only a reply if it holds an answer: no choices, a null message (a content
    # filter, a broken proxy) or a bad finish is an error record, never a result.
    choices = _get(resp, "choices") or []
    if not choices:
        return {"status": "error", "error": f"the reply from {where} has no choices"}
    choice = choices[0]
    finish = _get(choice, "finish_reason")
    if finish not in GOOD_FINISH:
        return {"status": "error", "error": f"stopped with finish_reason={finish!r} at {where}"}
    message = _get(choice, "message")
    if message is None or _get(message, "content") is None:
        return {"status": "error", "error": f"the reply from {where} has no content (null)"}
    usage = _get(resp, "usage")
    cost = 0.0
    if not isinstance(resp, dict):
        import litellm

        try:
            cost = float(litellm.completion_cost(completion_response=resp))
        except Exception:  # self-hosted models have no price in litellm's map
            cost = 0.0
    return {
        "status": "ok",
        "text": _get(message, "content"),
        "top_logprobs": _top_logprobs(choice),
        "finish_reason": finish,
        "prompt_tokens": _get(usage, "prompt_tokens") if usage else None,
        "completion_tokens": _get(usage, "completion_tokens") if usage else None,
        "cost_usd": cost,
        "latency_s": round(time.monotonic() - start, 4) if start is not None else None,
    }


def chat_body(model: str, prompt: str, max_tokens: int, top_logprobs: int | None) -> dict:
    """The request body of one greedy call, as a Batch API line carries it (``model`` is the
    provider's name, without litellm's prefix)."""
    body = {
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "temperature": JUDGE_TEMPERATURE,
        "max_tokens": max_tokens,
    }
    if top_logprobs:
        body.update(logprobs=True, top_logprobs=top_logprobs)
    return body


async def complete(
    endpoint: Endpoint,
    prompt: str,
    max_tokens: int,
    top_logprobs: int | None = None,
    throttled: Callable[[], None] | None = None,
    client: openai_http.Session | None = None,
    sent: Counter | None = None,
) -> dict:
    """Greedy completion of one user message. ``{"status": "ok", "text", ...}`` or an error.
    ``throttled`` is told of every rate-limit answer (429), so the caller can send less.
    ``client``: the phase's session; with it, an OpenAI-compatible endpoint is asked directly
    (`mlit.providers.openai_http`), any other through litellm. ``sent`` counts the call by the
    decoding of its body (`openai_http.decoding_of`): what the protocol report reads."""
    base = openai_http.base_of(endpoint.model, endpoint.api_base) if client and DIRECT else None
    direct = f"{base}/chat/completions" if base else None
    name = openai_http.provider_name(endpoint.model)
    # One body for either path: litellm is handed its decoding fields, not its own copy of them.
    body = chat_body(name, prompt, max_tokens, top_logprobs)
    if sent is not None:
        sent[openai_http.decoding_of(body)] += 1
    litellm = library() if direct is None else None
    where = endpoint.api_base or endpoint.model
    try:
        key = endpoint.api_key()
    except ValueError as err:
        return {"status": "error", "error": str(err)}
    decoding = {k: v for k, v in body.items() if k not in ("model", "messages")}
    last, fatal, first = "no attempt", None, time.monotonic()
    for attempt in itertools.count():
        start = time.monotonic()
        try:
            if direct is not None:  # OpenAI-compatible: posted through the phase's session
                resp = await client.post(direct, body, key, endpoint.timeout_s)
                return reply_record(resp, where, start)
            resp = await asyncio.wait_for(
                litellm.acompletion(
                    model=endpoint.model,
                    messages=[{"role": "user", "content": prompt}],
                    api_base=endpoint.api_base,
                    api_key=key,
                    timeout=endpoint.timeout_s,
                    num_retries=0,
                    drop_params=True,
                    **decoding,
                ),
                timeout=endpoint.timeout_s,
            )
        except Exception as err:
            last = describe(err, where, endpoint.timeout_s)
            if not retryable(err):
                fatal = fatal_status(err)
                break
            limited = rate_limited(err)
            if limited and throttled is not None:
                throttled()
            asked = getattr(err, "retry_after_s", None) or retries_rule.retry_after(err)
            if retries_rule.too_long(asked, endpoint.longest_wait_s):
                # A daily quota spent: waiting call by call would go on for hours in silence.
                # The caller stops its phase at once, keeps what is answered and says when.
                return {"status": "error", "error": long_wait(where, asked), "wait_s": asked}
            wait = retries_rule.pause(
                attempt,
                time.monotonic() - first,
                endpoint.retries,
                endpoint.backoff_s,
                # A rate limit passes when its window does: a storm of 429s is waited out, not
                # counted against the patience meant for a lost replica.
                max(endpoint.patience_s, retries_rule.RATE_LIMIT_PATIENCE_S)
                if limited
                else endpoint.patience_s,
                asked,
            )
            if wait is None:
                break
            await asyncio.sleep(wait)
            continue
        return reply_record(resp, where, start)
    if fatal is not None:  # the caller stops the whole phase on this, not just this call
        return {"status": "error", "error": last, "fatal_status": fatal}
    return {"status": "error", "error": last}


class Gate:
    """How many calls may be in flight. A few at first, one more after each answer, up to
    the caller's concurrency: an endpoint that turns out to refuse every call (a revoked key) is
    asked a handful of times, not ``concurrency`` times. A rate-limit answer (429) halves the
    window (at most once per `THROTTLE_EVERY_S`), so a storm is met by sending less, and answers
    grow it back. After a fatal answer (401, 403, 404) or a ``Retry-After`` longer than a phase
    waits, nothing more is sent: `stopped` records why, and every waiting call gives up."""

    THROTTLE_EVERY_S = 1.0

    def __init__(self, limit: int, start: int = 4):
        self.limit, self.window, self.active = limit, min(start, limit), 0
        self.sent = 0
        self.throttles = 0
        self.smallest = self.window
        self.stopped: str | None = None
        self.wait_s: float | None = None  # stopped by a Retry-After longer than a phase waits
        self._cond = asyncio.Condition()
        self._last_throttle = float("-inf")

    def throttle(self) -> None:
        now = time.monotonic()
        if now - self._last_throttle >= self.THROTTLE_EVERY_S:
            self._last_throttle = now
            self.window = max(1, self.window // 2)
            self.smallest = min(self.smallest, self.window)
            self.throttles += 1

    async def __aenter__(self) -> None:
        async with self._cond:
            await self._cond.wait_for(lambda: self.stopped or self.active < self.window)
            if self.stopped:
                raise Stopped(self.stopped)
            self.active += 1
            self.sent += 1

    async def __aexit__(self, *exc) -> None:
        async with self._cond:
            self.active -= 1
            self._cond.notify_all()

    def answered(self, result: dict) -> None:
        if result.get("wait_s") is not None and not self.stopped:
            self.stopped, self.wait_s = result["error"], result["wait_s"]
        elif result.get("fatal_status") and not self.stopped:
            self.stopped = result["error"]
        elif result["status"] == "ok":
            self.window = min(self.limit, self.window + 1)


class Stopped(Exception):
    """Raised to a call waiting at a `Gate` that was stopped; its message says why."""
