"""Admission control at the gateway: bounded work per model and in all, refused at once past it.

Without a bound, overload stalled everything: above the gateway's request limit Serve queued every
new request in front of it, health checks included, so 1,000 concurrent chat requests all waited
(p50 15.6 s) and ``/healthz`` did not answer within 30 s; a liveness probe would have restarted a
healthy server at its peak. Now the gateway counts the sequences it has sent to the model servers:
past ``per_model`` for one model, or ``total`` in all, a request is answered 429 at once with a
``Retry-After`` (the recent time a request took, so a client that honours it comes back about when
room is made). What is admitted is served: each model-server replica holds its share (its batch
and the next requests at hand). Serve's proxy refuses past the same bound before a request
reaches the gateway (`mlit.serving.front`); the check here covers sequences (prompts x n) and
an app whose proxy lacks that middleware.
"""

from __future__ import annotations

import math
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field

from mlit.serving.protocol import APIError


@dataclass(frozen=True)
class Limits:
    per_model: int  # sequences in flight for one model (prompts x n of each request)
    total: int  # sequences in flight at this gateway replica
    request_tokens: int = 32_768  # new tokens one request may ask for: sequences x max_tokens

    def __post_init__(self) -> None:
        if self.per_model < 1 or self.total < 1 or self.request_tokens < 1:
            raise ValueError(f"admission limits must be at least 1, got {self}")


def limits_for(
    server_ongoing: int, server_replicas: int, shards: int, request_tokens: int
) -> Limits:
    """What the model servers take at once: a replica takes 4 batches' worth (one decoding, the
    next ones at hand), so nothing has to wait in the gateway as well, and a burst's refusals
    come after fewer requests taken in. One model is served by one shard's replicas; all models
    by every shard's."""
    per_model = server_ongoing * server_replicas
    return Limits(per_model, per_model * shards, request_tokens)


@dataclass
class Admission:
    limits: Limits
    running: Counter = field(default_factory=Counter)
    in_flight: int = 0
    refused: int = 0
    seconds: float = 1.0  # moving average of an admitted request's time

    def check_size(self, sequences: int, max_new: int) -> None:
        """A 400 naming the cap for a request that asks for more new tokens than one may."""
        asked = sequences * max_new
        if asked > self.limits.request_tokens:
            raise APIError(
                400,
                f"{sequences} sequence(s) x max_tokens {max_new} = {asked} new tokens is over "
                f"the cap of {self.limits.request_tokens} per request; ask for fewer sequences "
                "or fewer tokens",
                "max_tokens",
            )

    def check(self) -> None:
        """Refuse at once when the server is full, before the request body is read."""
        if self.in_flight >= self.limits.total:
            self._refuse(f"the server has {self.in_flight} sequences waiting or running")

    def enter(self, model: str, sequences: int) -> float:
        """Admit a request's sequences or raise a 429; returns the admission time for ``leave``."""
        if self.running[model] + sequences > self.limits.per_model:
            self._refuse(f"model {model!r} has {self.running[model]} sequences waiting or running")
        if self.in_flight + sequences > self.limits.total:
            self._refuse(f"the server has {self.in_flight} sequences waiting or running")
        self.running[model] += sequences
        self.in_flight += sequences
        return time.monotonic()

    def leave(self, model: str, sequences: int, since: float) -> None:
        self.running[model] -= sequences
        if not self.running[model]:
            del self.running[model]
        self.in_flight -= sequences
        self.seconds = 0.9 * self.seconds + 0.1 * (time.monotonic() - since)

    def retry_after(self) -> int:
        return max(1, min(60, math.ceil(self.seconds)))

    def _refuse(self, why: str) -> None:
        self.refused += 1
        raise APIError(
            429,
            f"the server is at capacity ({why}); retry after {self.retry_after()} s",
            code="overloaded",
            headers={"Retry-After": str(self.retry_after())},
        )


def group(items: list[dict]) -> list[dict]:
    """The sequences of one request, marked as one: the scheduler hands free batch rows to
    requests in turn, so a request of 16 sequences does not hold the batch from the others."""
    tag = uuid.uuid4().hex
    return [dict(item, group=tag) for item in items]
