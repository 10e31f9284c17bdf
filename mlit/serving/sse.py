"""Server-sent events: the model server's events relayed to the client as OpenAI chunks."""

import json

from fastapi.responses import StreamingResponse

from mlit.generation import decoding


def completion_from(d: dict) -> decoding.Completion:
    lps = token_logprobs(d["logprobs"])
    return decoding.Completion(
        d["text"], d["finish_reason"], d["prompt_tokens"], d["completion_tokens"], lps
    )


def token_logprobs(plain: list | None) -> tuple[decoding.TokenLogprob, ...] | None:
    if plain is None:
        return None
    return tuple(
        decoding.TokenLogprob(tok, lp, tuple((a, b) for a, b in top)) for tok, lp, top in plain
    )


def prepend(response: StreamingResponse, first: str) -> StreamingResponse:
    body = response.body_iterator

    async def joined():
        yield first
        async for part in body:
            yield part

    response.body_iterator = joined()
    return response


def sse(body: dict) -> str:
    return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"


async def relay(first: dict, rest, chunk, done, leave):
    """Server-sent events from the model server's events as they come: ``chunk(text, logprobs)``
    for each text piece (its tokens' logprob entries, or None where not asked for), then
    ``done(completion)``. An error after the first byte can only be an event. ``await leave()`` ends
    the request's admission, however the stream ends."""
    try:
        event = first
        while True:
            if "delta" in event:
                yield sse(chunk(event["delta"], token_logprobs(event.get("logprobs"))))
            elif "ok" in event:
                yield sse(done(completion_from(event["ok"])))
                break
            else:
                yield sse(error_body(event["error"]["message"], "server_error"))
                break
            event = await rest.__anext__()
        yield "data: [DONE]\n\n"
    finally:
        try:  # a model server in this process stops generating for a client that went away
            close = getattr(rest, "aclose", None)  # (Serve cancels a handle's stream itself)
            if close is not None:
                await close()
        finally:
            await leave()


def error_body(message: str, kind: str, code: str | None = None) -> dict:
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}
