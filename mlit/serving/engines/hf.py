"""The ``hf`` engine: transformers models stepped by our continuous batching
(`mlit.serving.engines.scheduler`: one batch per model, requests join and leave it between decode
steps, tokens handed out as they are sampled, each request with its own sampling settings and
seed), in a process of the engine's own (`mlit.serving.engines.engine_process`).

The replica keeps a tokenizer per model (requests are prepared here, `mlit.serving.preparation`)
and relays events: each decode step's events arrive in one message and wake the replica's event
loop once. It replaced ``@serve.batch``: static batches stayed small under load (answers came back
a batch at a time, so the next requests arrived in waves that a batch wait split), a batch mixing
models generated them in turn, and nothing could stream.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import socket
import subprocess
import sys
import threading
import weakref
from collections import deque
from concurrent.futures import Future
from multiprocessing.connection import Connection

from mlit.serving.engines import GenerationError, Loaded
from mlit.serving.engines.engine_process import load_tokenizer

logger = logging.getLogger("ray.serve")


class HFEngine:
    name = "hf"

    def __init__(self, max_batch: int, threads: int | None = None):
        self._process = EngineProcess(max_batch, threads or 1)
        self._ids = itertools.count()

    def load(self, name: str, model_dir: str) -> Loaded:
        tokenizer = load_tokenizer(model_dir)
        key = f"{name}#{next(self._ids)}"  # a reload is a new model in the process
        vocab, context = self._process.call("load", key, model_dir).result()
        return Loaded(self, name, tokenizer, vocab, context, key)

    async def prompt_logprobs(self, loaded: Loaded, ids: list[int], k: int) -> list:
        return await asyncio.wrap_future(self._process.call("logprobs", loaded.handle, ids, k))

    async def events(self, loaded: Loaded, job, stream: bool):
        events: asyncio.Queue = asyncio.Queue()
        rid = self._process.submit(loaded.handle, job, stream, events)
        finished = False
        try:
            while True:
                kind, value = await events.get()
                if kind == "error":
                    finished = True
                    raise GenerationError(value)
                if kind == "done":
                    finished = True
                yield kind, value
                if finished:
                    return
        finally:
            self._process.forget(rid, cancel=not finished)  # the client went away: stop it

    def stats(self) -> dict:
        return {
            "engine": self.name,
            "batch_sizes": list(self._process.steps),
            "decode_steps": self._process.decode_steps,
            "decode_rows": self._process.decode_rows,
        }

    def check_health(self) -> None:
        """Raises once the engine's process is gone: Serve then replaces the replica."""
        self._process.check_health()

    def close(self) -> None:
        """Ends the engine's process now, not when this process exits (a replica's engine ends
        with the replica; one driven from a script, as the benchmarks do, would idle till then)."""
        self._process.close()

    def unload(self, loaded: Loaded) -> None:
        """The process forgets the model; its batch goes once it has no rows. A process that is
        gone (or an interpreter shutting down) has nothing to forget."""
        try:  # not contextlib: at interpreter shutdown its module may be gone already
            self._process.send(("unload", loaded.handle))
        except Exception:
            return


class EngineProcess:
    """The engine's process, seen from the replica: commands go out on a socket; a reader thread
    hands each message's events to the event loops of the requests they belong to."""

    def __init__(self, max_batch: int, threads: int):
        mine, theirs = socket.socketpair()
        fd = theirs.fileno()
        args = [sys.executable, "-m", "mlit.serving.engines.engine_process", str(fd)]
        self._proc = subprocess.Popen([*args, str(max_batch), str(threads)], pass_fds=[fd])
        theirs.close()
        self._conn = Connection(os.dup(mine.fileno()))
        mine.close()
        self._sending = threading.Lock()
        self._numbers = itertools.count()
        self._calls: dict[int, Future] = {}
        self._waiting: dict[int, tuple[_Mailbox, asyncio.Queue]] = {}
        self._mail: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # loop -> _Mailbox
        self.steps: deque[int] = deque(maxlen=1000)  # rows per decode step (the stats)
        # Decode steps and their rows ever, as of the engine's last message: two readings give
        # the mean batch between them.
        self.decode_steps = self.decode_rows = 0
        self.gone: str | None = None  # why the process is gone, once it is
        threading.Thread(target=self._read_forever, name="mlit-engine-reader", daemon=True).start()

    def send(self, message: tuple) -> None:
        if self.gone:
            raise GenerationError(self.gone)
        with self._sending:
            self._conn.send(message)

    def call(self, *message) -> Future:
        number = next(self._numbers)
        future: Future = Future()
        self._calls[number] = future
        try:
            self.send((message[0], number, *message[1:]))
        except BaseException:
            self._calls.pop(number, None)
            raise
        return future

    def submit(self, key: str, job, stream: bool, queue: asyncio.Queue) -> int:
        loop = asyncio.get_running_loop()
        mail = self._mail.get(loop) or self._mail.setdefault(loop, _Mailbox(loop))
        rid = next(self._numbers)
        self._waiting[rid] = (mail, queue)
        try:
            self.send(("submit", rid, key, job.ids, job.params, stream, job.group))
        except BaseException:
            self._waiting.pop(rid, None)
            raise
        return rid

    def forget(self, rid: int, cancel: bool) -> None:
        """Stop relaying a request's events (and stop the request, with ``cancel``). Called as a
        request ends, however it ends: a process that is gone has nothing left to cancel."""
        self._waiting.pop(rid, None)
        if cancel:
            try:
                self.send(("cancel", rid))
            except (GenerationError, OSError):
                return

    def _read_forever(self) -> None:
        try:
            while True:
                message = self._conn.recv()
                if message[0] == "events":
                    self.steps.extend(message[2])
                    self.decode_steps, self.decode_rows = message[3]
                    by_loop: dict[_Mailbox, list] = {}
                    for rid, event in message[1]:
                        waiter = self._waiting.get(rid)
                        if waiter is not None:
                            by_loop.setdefault(waiter[0], []).append((waiter[1], event))
                    for mail, events in by_loop.items():
                        mail.post(events)
                else:
                    future = self._calls.pop(message[1], None)
                    if future is None:
                        continue
                    if message[0] == "reply":
                        future.set_result(message[2])
                    else:
                        future.set_exception(GenerationError(message[2]))
        except (EOFError, OSError):
            pass
        code = self._proc.wait()
        if self.gone is None:  # not closed on purpose
            self.gone = f"the engine process exited (code {code}); Serve replaces this replica"
            logger.error("%s", self.gone)
        for future in self._calls.values():
            future.set_exception(GenerationError(self.gone))
        for mail, queue in list(self._waiting.values()):
            mail.post([(queue, ("error", self.gone))])

    def check_health(self) -> None:
        if self.gone:
            raise RuntimeError(self.gone)

    def close(self, timeout: float = 10.0) -> None:
        """Requests still waiting fail (as the reader sees the process end); a process that
        does not end on SIGTERM within ``timeout`` is killed."""
        self.gone = self.gone or "the engine was closed"
        self._proc.terminate()
        try:
            self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()


class _Mailbox:
    """Events for one event loop, one wake-up for all that are waiting: a decode step samples a
    token for every row, and each wake-up of a loop from another thread is a system call and a
    turn of the loop. It holds its loop weakly: the loop is its key."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self._loop = weakref.ref(loop)
        self._lock = threading.Lock()
        self._pending: list[tuple[asyncio.Queue, tuple]] = []
        self._woken = False

    def post(self, events: list[tuple[asyncio.Queue, tuple]]) -> None:
        with self._lock:
            self._pending += events
            if self._woken:
                return
            self._woken = True
        loop = self._loop()
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._deliver)

    def _deliver(self) -> None:
        with self._lock:
            pending, self._pending, self._woken = self._pending, [], False
        for queue, event in pending:
            queue.put_nowait(event)
