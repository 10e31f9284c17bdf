"""Which models a replica holds, and whose waiting requests go next: models served in turns.

A replica holds at most ``capacity`` models. Loading a model per request on a plain LRU thrashes
once a burst spans more models than fit: a burst of 200 requests over 12 models with 4 per replica
loaded models 130-154 times (each request evicted a model that other requests were about to use).
Here requests wait by model instead:

- a request for a held model runs at once, unless its model's turn is over (below);
- otherwise it waits with the other requests for its model. Models take turns in the order their
  oldest request arrived: a waiting model is loaded into a free slot, or in place of a held model
  that has no request running (evicted by demand, never under a running request). A held model
  still asked for since others began to wait is in use and keeps its slot, even between two of
  its requests, until its turn is over or its requests stop coming (none for three of their
  mean gaps): a burst reaches a replica over seconds, interleaved across models, and a model
  evicted in such a gap is loaded again for its next request;
- a held model's turn is over once other models have waited for its turn's length: its new
  requests queue too, so that it drains and the waiting models get their turn (without that, a
  model with steady traffic would keep its slot and starve the rest). A turn lasts ``TURN_LOADS``
  times what loading the model took (or the replica's median load, if shorter: a replica's first
  load also imports the model's code), between ``TURN_MIN_S`` and ``turn_s``: a load is amortized
  over its turn whether it took 0.07 s (the demo model here) or minutes (a 70B one). Slots then
  rotate while a burst is still coming in, instead of the first models keeping them until the
  burst has arrived.

So a burst loads each model about once, and every request is answered. ``load`` is the replica's
loader (Serve's multiplexed LRU, which also tells Serve's router where each model is, so requests
go to the replica that holds their model); ``touch`` marks a held model as recently used there, so
that the LRU's victim is always the one chosen here. Nothing here imports Ray: tests drive it alone.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

TURN_S = 30.0  # the longest a model keeps its slot while other models wait
TURN_MIN_S = 1.0  # the shortest
TURN_LOADS = 20  # a turn lasts this many times the model's load time: its load is amortized
SETTLE_S = 0.5  # how long a model no request asked for keeps its slot from a waiting one
QUIET_GAPS = 3  # a model in use whose requests have not come for this many of their mean gaps...
QUIET_MIN_S = 0.1  # ...nor for this long, is no longer in use


@dataclass(eq=False)
class _Held:
    ready: asyncio.Future  # the loaded model, or the load's error
    since: float  # when it was loaded (its turn begins then, or when others began to wait)
    running: int = 0
    asked: float = 0.0  # when a request last asked for it
    asks: int = 0  # requests that asked for it since it was loaded
    first_ask: float = 0.0  # the first of them
    load_s: float = 0.0  # how long its load took


@dataclass
class Turns:
    capacity: int
    load: Callable[[str], Awaitable[object]]
    touch: Callable[[str], Awaitable[object]] | None = None
    turn_s: float = TURN_S
    settle_s: float = SETTLE_S
    _held: dict[str, _Held] = field(default_factory=dict)
    _waiting: OrderedDict = field(default_factory=OrderedDict)  # name -> [futures], oldest first
    _lock: asyncio.Lock | None = None  # one load at a time, as the LRU does
    _recheck: asyncio.TimerHandle | None = None
    _contended: float = 0.0  # since when some model has been waiting
    _load_times: deque = field(default_factory=lambda: deque(maxlen=8))  # the latest loads, in s

    def __post_init__(self) -> None:
        if self.capacity < 1:
            raise ValueError(f"a replica holds at least one model, got {self.capacity}")

    def held(self) -> list[str]:
        return list(self._held)

    def waiting(self) -> dict[str, int]:
        return {name: len(futures) for name, futures in self._waiting.items()}

    @asynccontextmanager
    async def turn(self, name: str):
        """``async with turns.turn(name) as model``: the loaded model, once it is this request's
        turn; the slot is the request's until the block ends. A load that fails fails every
        request waiting for it (the caller answers them)."""
        held = self._held.get(name)
        if held is not None:
            held.asked = now = time.monotonic()
            if now >= held.since:
                if not held.asks:
                    held.first_ask = now
                held.asks += 1
        if held is not None and not self._turn_over(name, held):
            held.running += 1
        else:
            waiter = asyncio.get_running_loop().create_future()
            if not self._waiting:
                self._contended = time.monotonic()
            self._waiting.setdefault(name, []).append(waiter)
            self._schedule()
            try:
                held = await waiter
            except asyncio.CancelledError:
                self._forget(name, waiter)
                raise
        try:
            yield await asyncio.shield(held.ready)
        finally:
            held.running -= 1
            self._schedule()

    # ----------------------------------------------------------------------------------------

    def _turn_over(self, name: str, held: _Held) -> bool:
        others_wait = any(other != name for other in self._waiting)
        began = max(held.since, self._contended)
        return others_wait and time.monotonic() - began >= self._turn_s(held)

    def _turn_s(self, held: _Held) -> float:
        """``TURN_LOADS`` times its load time, or the replica's median one if that is shorter:
        the first load in a replica also imports the model's code (1.5 s here, then 0.07 s), and
        must not give that model a turn twenty times too long."""
        typical = statistics.median(self._load_times) if self._load_times else held.load_s
        return min(self.turn_s, max(TURN_MIN_S, TURN_LOADS * min(held.load_s, typical)))

    def _forget(self, name: str, waiter: asyncio.Future) -> None:
        if waiter.done() and not waiter.cancelled():  # admitted as it was cancelled
            waiter.result().running -= 1
            self._schedule()
            return
        futures = self._waiting.get(name, [])
        if waiter in futures:
            futures.remove(waiter)
        if not futures:
            self._waiting.pop(name, None)

    def _schedule(self) -> None:
        """Give turns to the waiting models, oldest request first, while slots can be had."""
        for name in list(self._waiting):
            held = self._held.get(name)
            if held is None:
                victim = self._victim()
                if len(self._held) >= self.capacity and victim is None:
                    break  # every slot is in use: the next request to end schedules again
                if victim is not None and len(self._held) >= self.capacity:
                    del self._held[victim]
                held = self._held[name] = self._start(name, victim)
            elif self._turn_over(name, held) and held.running:
                continue  # it drains first, then comes back in its turn
            elif self._turn_over(name, held):
                # No request runs on it and others wait: its waiters go to the back of the line.
                self._waiting.move_to_end(name)
                continue
            futures = self._waiting.pop(name)
            for waiter in futures:
                if not waiter.done():
                    held.running += 1
                    waiter.set_result(held)

    def _victim(self) -> str | None:
        """A held model with nothing running, whose slot a waiting model can take. One that has had
        its turn goes first. One asked for since others began to wait is in use: it keeps its slot
        until its turn is over, even between two of its requests (a burst's requests reach a
        replica over seconds, interleaved across models; evicted in such a gap, a model is loaded
        again for its next request: 25-31 loads for a 12-model burst here, without). One not asked
        for since then can go once it has not been asked for during ``settle_s``."""
        idle = [
            (h.asked, name) for name, h in self._held.items() if h.running == 0 and h.ready.done()
        ]
        if not idle:
            return None
        done = [name for _, name in sorted(idle) if self._turn_over(name, self._held[name])]
        if done:
            return done[0]
        now = time.monotonic()
        at, name = min((self._free_at(name, asked), name) for asked, name in idle)
        if at > now:  # look again then: no request may end before it to schedule again
            if self._recheck is not None:
                self._recheck.cancel()
            self._recheck = asyncio.get_running_loop().call_later(at - now, self._rechecked)
            return None
        return name

    def _free_at(self, name: str, asked: float) -> float:
        held = self._held[name]
        began = max(held.since, self._contended)
        if asked < began:  # not asked for since it was loaded or since others began to wait:
            return max(asked, held.since) + self.settle_s  # a new one has a moment to be asked
        # In use: until its turn is over, or until its requests have stopped coming (no request
        # for QUIET_GAPS times their mean gap: a burst's intake is over).
        gap = (asked - held.first_ask) / (held.asks - 1) if held.asks > 1 else self.settle_s
        return min(began + self._turn_s(held), asked + max(QUIET_MIN_S, QUIET_GAPS * gap))

    def _rechecked(self) -> None:
        self._recheck = None
        self._schedule()

    def _start(self, name: str, victim: str | None) -> _Held:
        now = time.monotonic()
        held = _Held(asyncio.get_running_loop().create_future(), now, asked=now)
        asyncio.get_running_loop().create_task(self._load(name, held))
        return held

    async def _load(self, name: str, held: _Held) -> None:
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            try:
                if self.touch is not None:  # the LRU must evict the victim, not a held model
                    for other, h in list(self._held.items()):
                        if other != name and h.ready.done() and not h.ready.exception():
                            await self.touch(other)
                started = time.monotonic()
                model = await self.load(name)
            except Exception as err:
                if self._held.get(name) is held:
                    del self._held[name]  # its slot is free; the next request tries again
                held.ready.set_exception(err)
                held.ready.exception()  # retrieved: waiters that left must not warn
                self._schedule()
                return
            loaded = time.monotonic()
            held.load_s = loaded - started
            self._load_times.append(held.load_s)
            held.since = loaded  # the turn starts once the model is there
            held.ready.set_result(model)
