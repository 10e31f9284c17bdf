"""A provider's rate limits as token buckets: requests per minute and tokens per minute.

Paid APIs enforce both; staying under them costs less time than meeting 429s and backing off.
Each bucket holds up to a minute's allowance and refills continuously; a call waits until both
buckets hold what it needs. One `Limiter` is shared by every call of a run (one event loop).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field


def tokens(prompt: str, max_tokens: int) -> int:
    """What a call counts against a token limit before its usage is known: the prompt at ~4
    characters a token, and as many reply tokens as the prompt's text (a translation's length),
    at most ``max_tokens``."""
    prompt_tokens = len(prompt) // 4 + 1
    return prompt_tokens + min(max_tokens, prompt_tokens)


@dataclass
class _Bucket:
    per_minute: float
    level: float = field(init=False)
    stamp: float = field(init=False, default_factory=time.monotonic)

    def __post_init__(self) -> None:
        self.level = self.per_minute

    def wait_for(self, amount: float, now: float) -> float:
        """Seconds until ``amount`` is available (0: now)."""
        self.level = min(self.per_minute, self.level + (now - self.stamp) * self.per_minute / 60)
        self.stamp = now
        need = min(amount, self.per_minute) - self.level  # one call may exceed a bucket's size
        return max(0.0, need * 60 / self.per_minute)

    def take(self, amount: float) -> None:
        self.level -= min(amount, self.per_minute)


class Limiter:
    """Requests per minute (``rpm``) and tokens per minute (``tpm``); None: no limit."""

    def __init__(self, rpm: float | None = None, tpm: float | None = None):
        for name, value in (("rpm", rpm), ("tpm", tpm)):
            if value is not None and value <= 0:
                raise ValueError(f"--{name} must be positive, got {value}")
        self.rpm, self.tpm = rpm, tpm
        self._requests = _Bucket(rpm) if rpm else None
        self._tokens = _Bucket(tpm) if tpm else None
        self._locks: dict[int, asyncio.Lock] = {}  # one per event loop (a rerun runs a new one)
        self.waited_s = 0.0

    async def acquire(self, tokens: int) -> None:
        lock = self._locks.setdefault(id(asyncio.get_running_loop()), asyncio.Lock())
        async with lock:  # first come, first served: no call starves behind later ones
            while True:
                now = time.monotonic()
                waits = [
                    b.wait_for(amount, now)
                    for b, amount in ((self._requests, 1), (self._tokens, tokens))
                    if b is not None
                ]
                wait = max(waits, default=0.0)
                if wait <= 0:
                    break
                self.waited_s += wait
                await asyncio.sleep(wait)
            for b, amount in ((self._requests, 1), (self._tokens, tokens)):
                if b is not None:
                    b.take(amount)
