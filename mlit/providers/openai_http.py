"""The direct path to OpenAI-compatible endpoints: one aiohttp session per phase, no litellm.

litellm's per-call machinery (its logging callbacks, model lookups and cost calculation) cost the
judge ~5-7 ms of CPU a call: ~200 calls/s against an instant loopback endpoint that a plain
aiohttp client drives at ~1,650 (`benchmarks/judge_client.py`, issue 49; directly: 1,231). For the endpoints that speak
OpenAI's chat completions themselves (``openai/...`` and ``hosted_vllm/...``: OpenAI, a
self-hosted judge, vLLM, `mlit serve`), `mlit.providers.llm.complete` posts the body itself
through the session of its phase (`Session`); every other provider goes through litellm as
before. The reply is read by the same `llm.reply_record`, its cost counted by the budget from its
usage, and failures are told apart by their HTTP status, as litellm's errors are.
"""

from __future__ import annotations

import asyncio
import json

from mlit.providers import retries

OPENAI_BASE = "https://api.openai.com/v1"
COMPATIBLE = ("openai", "hosted_vllm")  # litellm's prefixes of OpenAI-compatible endpoints


class HTTPError(Exception):
    """A non-200 answer: its status, the provider's message and its Retry-After (seconds)."""

    def __init__(self, status: int, message: str, retry_after_s: float | None = None):
        super().__init__(f"HTTP {status}: {message}")
        self.status_code, self.retry_after_s = status, retry_after_s


def base_of(model: str, api_base: str | None) -> str | None:
    """The base URL to post to directly, or None: the model goes through litellm."""
    prefix, _, name = model.partition("/")
    if not name or prefix not in COMPATIBLE:
        return None
    if api_base:
        return api_base.rstrip("/")
    return OPENAI_BASE if prefix == "openai" else None


def provider_name(model: str) -> str:
    """The name an OpenAI-compatible endpoint knows (in a request body, a Batch API line):
    litellm's provider prefix removed (openai/gpt-4o -> gpt-4o); any other name as it is."""
    prefix, _, name = model.partition("/")
    return name if name and prefix in (*COMPATIBLE, "azure", "text-completion-openai") else model


class Session:
    """One aiohttp session for the calls of a phase (``async with Session() as s``): its
    connections are reused, nothing is set up per call."""

    def __init__(self):
        self._http = None

    async def __aenter__(self) -> Session:
        import aiohttp

        connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300)
        self._http = aiohttp.ClientSession(connector=connector, json_serialize=json.dumps)
        return self

    async def __aexit__(self, *exc) -> None:
        await self._http.close()

    async def post(self, url: str, body: dict, key: str | None, timeout_s: float) -> dict:
        """The reply's JSON; `HTTPError` for any other status, ``asyncio.TimeoutError`` when
        no answer came within ``timeout_s``, aiohttp's errors for a connection that failed."""
        import aiohttp

        headers = {"Authorization": f"Bearer {key}"} if key else {}
        limit = aiohttp.ClientTimeout(total=timeout_s)
        async with self._http.post(url, json=body, headers=headers, timeout=limit) as resp:
            text = await resp.text()
            if resp.status == 200:
                try:
                    return json.loads(text)
                except ValueError as err:
                    raise HTTPError(502, f"the reply is not JSON: {text[:200]!r}") from err
            wait = retries.parse_retry_after(resp.headers.get("Retry-After"))
            raise HTTPError(resp.status, _message(text), wait)


def _message(text: str) -> str:
    try:
        error = json.loads(text).get("error")
        message = error.get("message") if isinstance(error, dict) else error
        return str(message or text)[:300]
    except (ValueError, AttributeError):
        return text[:300] or "(no body)"


def is_connection_error(err: BaseException) -> bool:
    import aiohttp

    return isinstance(err, aiohttp.ClientError | ConnectionError | asyncio.IncompleteReadError)


# A chat completion body's decoding fields, as the protocol report reads them from what was sent
# (a field that is absent leaves the server's default).
DECODING = ("temperature", "top_p", "max_tokens", "logprobs", "top_logprobs")


def decoding_of(body: dict) -> str:
    """A request body's decoding as a key: JSON of the `DECODING` fields it carries."""
    return json.dumps({k: body[k] for k in DECODING if k in body}, sort_keys=True)
