"""When the generation and judge clients ask again: one rule for both.

A failure that passes (a rate limit, a 5xx, a dropped connection, a timeout) is asked again,
with exponential backoff and jitter. Tries alone are a poor measure, because the failures that
matter at scale last a while: a Serve replica on a lost node is started again elsewhere and loads
its model (tens of seconds), a provider's rate-limit window lasts as long as it lasts. So a
request is asked again at least ``retries`` times *and* until ``patience_s`` seconds have passed
since its first try; each wait is capped at ``MAX_WAIT_S``. Answers are keyed by content and
sampled with a per-request seed, so asking twice never stores two answers.

A server's ``Retry-After`` (seconds, or an HTTP date) is honoured as given: asking sooner is
refused again and spends a try. One longer than `LONGEST_WAIT_S` (a daily quota spent) is not
waited out call by call for hours: the caller stops its phase at once and says when to rerun.
"""

from __future__ import annotations

import random
import time
from email.utils import parsedate_to_datetime

MAX_WAIT_S = 10.0
# The longest Retry-After a phase waits out: a provider's per-minute window, a short outage.
LONGEST_WAIT_S = 300.0
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
    A server's ``Retry-After`` is honoured (the caller stops before waiting more than
    `LONGEST_WAIT_S`; see `too_long`)."""
    if attempt >= retries and elapsed_s >= patience_s:
        return None
    wait = min(MAX_WAIT_S, backoff_s * 2**attempt) * (0.5 + random.random())
    if retry_after_s is not None and retry_after_s > 0:
        # A little past the time asked: a call that arrives a moment early is refused again.
        wait = max(wait, min(retry_after_s, LONGEST_WAIT_S) + 0.05 + 0.2 * random.random())
    return wait


def too_long(retry_after_s: float | None, longest_s: float = LONGEST_WAIT_S) -> bool:
    """Whether a ``Retry-After`` asks for a longer wait than a phase waits out."""
    return retry_after_s is not None and retry_after_s > longest_s


def retry_after(err: BaseException, now: float | None = None) -> float | None:
    """The seconds a ``Retry-After`` header on a failed call's response asks for (litellm and
    openai errors carry the response): a number of seconds, or an HTTP date (RFC 9110); None
    when there is none or it cannot be read."""
    headers = getattr(getattr(err, "response", None), "headers", None)
    headers = headers or getattr(err, "litellm_response_headers", None) or {}
    try:
        value = headers.get("retry-after") or headers.get("Retry-After")
    except AttributeError:
        return None
    return parse_retry_after(value, now)


def parse_retry_after(value, now: float | None = None) -> float | None:
    """``Retry-After``'s value in seconds from ``now`` (default: the wall clock); None when
    absent or malformed. A date in the past is 0."""
    if value is None:
        return None
    text = str(value).strip()
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None or when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def describe_wait(seconds: float) -> str:
    """A wait as a user reads it: 45 s, 12 min, 24 h."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h".replace(".0 h", " h")
