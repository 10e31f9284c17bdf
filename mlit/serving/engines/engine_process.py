"""The hf engine's own process: the models and the decode loop, apart from the replica's Ray threads.

A model-server replica is a Ray actor. Ray's threads (its core worker, Serve's request loop and
router) run Python beside the decode loop, and in one process they share one interpreter lock: a
decode step of the demo model under 64 clients took 2.5x as long in the replica as alone, with a
core partly idle. So the decode loop (`mlit.serving.engines.scheduler`) runs in a process of its own,
as vLLM's engine core does; the replica (`mlit.serving.engines.hf`) only prepares requests and
relays text.

    python -m mlit.serving.engines.engine_process FD MAX_BATCH THREADS   # started by `EngineProcess`

Messages over the socket FD (pickled, `multiprocessing.connection`). To the process:
``("load", call, key, path)``, ``("unload", key)``, ``("submit", rid, key, ids, params, stream,
group)``, ``("cancel", rid)``, ``("logprobs", call, key, ids, k)``. Back: ``("events", [(rid,
event), ...], steps, totals)`` — every event of a decode step in one message, with the rows of the
steps since the last one (the last 1,000 at most) and the steps and rows ever — and ``("reply",
call, value)`` or ``("failed", call, message)``.
"""

from __future__ import annotations

import logging
import sys
import threading
from multiprocessing.connection import Connection

from mlit.generation import decoding
from mlit.serving.engines.scheduler import Request, Scheduler, lower_priority

logger = logging.getLogger("mlit.engine")


class _Outbox:
    """Events from the decode thread, sent by a thread of their own: the decode loop never waits
    on the socket, and a step's events (one per row) leave together."""

    def __init__(self, conn: Connection, scheduler: Scheduler):
        self.conn, self.scheduler = conn, scheduler
        self._lock = threading.Lock()  # the events waiting
        self._sending = threading.Lock()  # one writer at a time on the socket
        self._events: list[tuple] = []
        self._ready = threading.Event()
        self._stepped = 0  # steps already reported
        threading.Thread(target=self._send_forever, name="mlit-outbox", daemon=True).start()

    def post(self, rid: int, event: tuple) -> None:
        with self._lock:
            self._events.append((rid, event))
        self._ready.set()

    def send(self, message: tuple) -> None:
        with self._sending:
            self.conn.send(message)

    def _send_forever(self) -> None:
        while True:
            self._ready.wait()
            self._ready.clear()
            with self._lock:
                events, self._events = self._events, []
            count = self.scheduler.stepped
            new, self._stepped = min(count - self._stepped, 1000), count
            steps = self.scheduler.steps[-new:] if new else []
            if events or steps:
                totals = (count, self.scheduler.stepped_rows)
                self.send(("events", events, steps, totals))


def serve(conn: Connection, max_batch: int, threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    scheduler = Scheduler(max_batch)
    out = _Outbox(conn, scheduler)
    models: dict[str, tuple] = {}  # key -> (model, tokenizer)
    requests: dict[int, Request] = {}

    def sink(rid: int):
        def post(event: tuple) -> None:
            if event[0] in ("done", "error"):  # the request's last event
                requests.pop(rid, None)
            out.post(rid, event)

        return post

    def call(number: int, work) -> None:
        # Loads and prompt log-likelihoods take seconds: off the command loop, so that requests
        # for the other models are still admitted meanwhile.
        def run():
            lower_priority()  # like decode: below the HTTP path that answers health and refusals
            try:
                out.send(("reply", number, work()))
            except Exception as err:
                out.send(("failed", number, f"{type(err).__name__}: {err}"))

        threading.Thread(target=run, daemon=True).start()

    def load(key: str, path: str) -> tuple[int, int | None]:
        model, tokenizer = _load(path)
        models[key] = (model, tokenizer)
        return model.get_input_embeddings().num_embeddings, decoding.context_length(model)

    def logprobs(key: str, ids: list[int], k: int) -> list:
        model, tokenizer = models[key]
        with torch.no_grad():
            return decoding.prompt_logprobs(model, tokenizer, ids, k)

    def handle(message: tuple) -> None:
        op = message[0]
        if op == "submit":
            _, rid, key, ids, params, stream, group = message
            model, tokenizer = models[key]
            req = Request(ids, decoding.Sampling(**params), sink(rid), stream, group)
            requests[rid] = req
            scheduler.submit(model, tokenizer, req)
        elif op == "cancel":
            req = requests.pop(message[1], None)
            if req is not None:
                req.cancelled = True
        elif op == "load":
            _, number, key, path = message
            call(number, lambda: load(key, path))
        elif op == "logprobs":
            _, number, key, ids, k = message
            call(number, lambda: logprobs(key, ids, k))
        elif op == "unload":
            models.pop(message[1], None)  # the scheduler drops its batch once it has no rows

    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):  # the replica is gone
            return
        try:
            handle(message)
        except Exception as err:  # a bad command fails its request, never the process
            if message[0] == "submit":
                out.post(message[1], ("error", f"the engine could not take the request: {err!r}"))
            else:
                logger.exception("engine command %r failed", message[0])


def load_tokenizer(path: str):
    """A model's tokenizer as the engine uses it (the replica keeps its own copy to prepare
    requests): padded with its end-of-sequence token where it has no pad token."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _load(path: str):
    import torch
    from transformers import AutoModelForCausalLM

    tokenizer = load_tokenizer(path)
    dtype = torch.bfloat16 if torch.cuda.is_available() else torch.float32
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    if torch.cuda.is_available():
        model = model.to("cuda")
    model.eval()
    return model, tokenizer


def main() -> None:
    # It ends when the replica does, however it ends: the kernel closes the replica's end of the
    # socket, ``recv`` raises, and the threads here are daemons.
    fd, max_batch, threads = (int(a) for a in sys.argv[1:4])
    serve(Connection(fd), max_batch, threads)


if __name__ == "__main__":
    main()
