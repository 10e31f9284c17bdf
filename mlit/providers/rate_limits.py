"""A provider's rate limits: requests per minute and tokens per minute, over a rolling window.

Paid APIs enforce both; staying under them costs less time than meeting 429s and backing off.
Providers count over any rolling minute, so a token bucket that starts full lets a burst through
and then the refill: twice the allowance in the first minute. Here every call is logged with
its amount, and a call goes only when the calls of the last `WINDOW_S` seconds (counted until
their replies came back), with it, stay within the limit: no window of that length ever holds
more than the allowance where the provider counts, from the first call on. One `Limiter` is
shared by every call of a run (one event loop).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from contextlib import asynccontextmanager

# A minute, and a second more: the provider counts calls as they arrive, a little after they
# were sent, and a call that arrives late must not fall into the window of the next minute's.
WINDOW_S = 61.0


def tokens(prompt: str, max_tokens: int) -> int:
    """What a call counts against a token limit before its usage is known: the prompt at ~4
    characters a token, and as many reply tokens as the prompt's text (a translation's length),
    at most ``max_tokens``."""
    prompt_tokens = len(prompt) // 4 + 1
    return prompt_tokens + min(max_tokens, prompt_tokens)


class _Window:
    """What was sent in the last ``window_s`` seconds, against an allowance for that window.

    A call counts from the moment it is allowed until ``window_s`` after its reply came back:
    the provider counts it when it arrives, some time between the two (a client's first call
    can take a second to leave), so only its reply's time bounds its arrival from above."""

    def __init__(self, allowance: float, window_s: float):
        self.allowance, self.window_s = allowance, window_s
        self.done: deque[tuple[float, float]] = deque()  # (replied, amount): in reply order
        self.done_total = 0.0
        self.in_flight = 0.0

    def wait_for(self, amount: float, now: float) -> float:
        """Seconds until ``amount`` fits in the window (0: now). One call larger than the whole
        allowance waits for an empty window, then goes alone."""
        while self.done and self.done[0][0] <= now - self.window_s:
            self.done_total -= self.done.popleft()[1]
        need = self.in_flight + self.done_total + min(amount, self.allowance) - self.allowance
        if need <= 1e-9:
            return 0.0
        for replied, spent in self.done:  # the oldest replies leave the window first
            need -= spent
            if need <= 1e-9:
                return max(0.0, replied + self.window_s - now)
        return 0.05  # only calls in flight can free it: ask again when one may have replied

    def take(self, amount: float) -> float:
        amount = min(amount, self.allowance)
        self.in_flight += amount
        return amount

    def replied(self, amount: float, now: float) -> None:
        self.in_flight -= amount
        self.done.append((now, amount))
        self.done_total += amount


class Limiter:
    """Requests per minute (``rpm``) and tokens per minute (``tpm``); None: no limit (a call
    goes at once). ``window_s``: the window the allowances are counted over (tests shorten it).
    Every call is made inside ``async with limiter.call(tokens):``."""

    def __init__(self, rpm: float | None = None, tpm: float | None = None, window_s=WINDOW_S):
        for name, value in (("rpm", rpm), ("tpm", tpm)):
            if value is not None and value <= 0:
                raise ValueError(f"--{name} must be positive, got {value}")
        self.rpm, self.tpm = rpm, tpm
        self._requests = _Window(rpm, window_s) if rpm else None
        self._tokens = _Window(tpm, window_s) if tpm else None
        self._locks: dict[int, asyncio.Lock] = {}  # one per event loop (a rerun runs a new one)
        self.waited_s = 0.0

    def _windows(self, tokens: int) -> list[tuple[_Window, float]]:
        pairs = ((self._requests, 1.0), (self._tokens, float(tokens)))
        return [(w, amount) for w, amount in pairs if w is not None]

    @asynccontextmanager
    async def call(self, tokens: int):
        """Wait until a call of ``tokens`` fits every window; it counts until its reply."""
        windows = self._windows(tokens)
        if not windows:
            yield
            return
        lock = self._locks.setdefault(id(asyncio.get_running_loop()), asyncio.Lock())
        async with lock:  # first come, first served: no call starves behind later ones
            while True:
                now = time.monotonic()
                wait = max(w.wait_for(amount, now) for w, amount in windows)
                if wait <= 0:
                    break
                self.waited_s += wait
                await asyncio.sleep(wait)
            taken = [(w, w.take(amount)) for w, amount in windows]
        try:
            yield
        finally:
            now = time.monotonic()
            for w, amount in taken:
                w.replied(amount, now)
