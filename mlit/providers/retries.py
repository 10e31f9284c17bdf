"""When the generation and judge clients ask again: one rule for both.

A failure that passes (a rate limit, a 5xx, a dropped connection, a timeout) is asked again,
with exponential backoff and jitter. Tries alone are a poor measure, because the failures that
matter at scale last a while: a Serve replica on a lost node is started again elsewhere and loads
its model (tens of seconds), a provider's rate-limit window lasts as long as it lasts. So a
request is asked again at least ``retries`` times *and* until ``patience_s`` seconds have passed
since its first try; each wait is capped at ``MAX_WAIT_S``. Answers are keyed by content and
sampled with a per-request seed, so asking twice never stores two answers.
"""

from __future__ import annotations

import random

MAX_WAIT_S = 10.0
MAX_RETRY_AFTER_S = 60.0
PATIENCE_S = 120.0  # outlasts a replica restart on another node (measured in the note of issue 24)
# A rate limit is waited out longer: providers' windows are a minute, and a storm of 429s must
# never exhaust the retries of thousands of calls (the callers also send less meanwhile).
RATE_LIMIT_PATIENCE_S = 600.0


def pause(
    attempt: int,
    elapsed_s: float,
    retries: int,
    backoff_s: float,
    patience_s: float,
    retry_after_s: float | None = None,
) -> float | None:
    """Seconds to wait before try ``attempt + 2`` (``attempt`` counts from 0), or None: give up.
    A server's ``Retry-After`` is honoured (up to ``MAX_RETRY_AFTER_S``): asking sooner is
    refused again and spends a try."""
    if attempt >= retries and elapsed_s >= patience_s:
        return None
    wait = min(MAX_WAIT_S, backoff_s * 2**attempt) * (0.5 + random.random())
    if retry_after_s is not None and retry_after_s > 0:
        wait = max(wait, min(retry_after_s, MAX_RETRY_AFTER_S))
    return wait


def retry_after(err: BaseException) -> float | None:
    """The seconds of a ``Retry-After`` header on a failed call's response (litellm and openai
    errors carry the response), or None."""
    headers = getattr(getattr(err, "response", None), "headers", None)
    headers = headers or getattr(err, "litellm_response_headers", None) or {}
    try:
        value = headers.get("retry-after") or headers.get("Retry-After")
        return float(value) if value is not None else None
    except (TypeError, ValueError, AttributeError):
        return None  # an HTTP date or a malformed value: the backoff decides
