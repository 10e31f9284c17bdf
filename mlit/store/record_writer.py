"""Records filed as a phase produces them, without making it wait: one segment (`mlit.store.segments`)
every `FLUSH_S` seconds, written by a thread. A crash loses at most the records buffered since
the last write (`FLUSH_S` seconds of answers, plus the requests in flight), never a part of a
segment.
"""

from __future__ import annotations

import contextlib
import threading

from mlit.plumbing import console
from mlit.store import segments, upkeep

FLUSH_S = 2.0  # a writer's buffer goes to the store at least this often
MAX_BUFFER = 20_000  # ... or when this many records wait


class Writer:
    """Files records as a phase produces them, without making it wait: `put` only appends to a
    buffer (unless twice `MAX_BUFFER` records wait); a thread writes the buffer as one segment
    every `FLUSH_S` seconds (or at `MAX_BUFFER` records) and at `close`. A write that fails (a full disk, a refused bucket) is
    raised by the next `put` and by `close`, so the phase stops with it; what was written stays."""

    def __init__(
        self, store, kind: str, flush_s: float = FLUSH_S, compact_at: int = upkeep.COMPACT_AT
    ):
        self.store, self.kind, self.flush_s, self.compact_at = store, kind, flush_s, compact_at
        self.written = 0
        self._buffer: dict[str, dict] = {}
        self._lock = threading.Condition()
        self._wake = threading.Event()
        self._closing = False
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"mlit-{kind}-writer", daemon=True)
        self._thread.start()

    def put(self, key: str, value: dict) -> None:
        if self._error is not None:
            raise self._error
        with self._lock:
            # Bounded memory: a phase that outruns the store waits here (never in a real phase
            # at 2,000 records/s; a bulk import does).
            while len(self._buffer) >= 2 * MAX_BUFFER and self._error is None:
                self._wake.set()
                self._lock.wait(0.1)
            self._buffer[key] = value
            full = len(self._buffer) >= MAX_BUFFER
        if full:
            self._wake.set()

    def _run(self) -> None:
        while not self._closing:
            self._wake.wait(self.flush_s)
            self._wake.clear()
            self._write()
        self._write()

    def _write(self) -> None:
        with self._lock:
            batch, self._buffer = self._buffer, {}
            self._lock.notify_all()
        if not batch or self._error is not None:
            return
        try:
            segments.write_segment(
                self.store, self.kind, {k: segments.encode(k, v) for k, v in batch.items()}
            )
            self.written += len(batch)
        except BaseException as err:  # kept for the phase: the next put or close raises it
            self._error = err

    def close(self) -> None:
        self._closing = True
        self._wake.set()
        self._thread.join()
        if self._error is not None:
            raise self._error
        if self.compact_at:
            try:
                upkeep.compact(self.store, self.kind, self.compact_at)
            except OSError as err:  # the records are stored; merging them can wait
                console.warn(f"[store] merging {self.kind} segments failed ({err}); kept as is")

    def __enter__(self) -> Writer:
        return self

    def __exit__(self, *exc) -> None:
        if exc[0] is None:
            self.close()
            return
        # An error or Ctrl-C: what is buffered is still stored, and the first error goes on.
        with contextlib.suppress(BaseException):
            self.close()
