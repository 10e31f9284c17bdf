"""The ``hf`` engine: transformers models in the replica's process, stepped by our continuous
batching (`mlit.serving.engines.scheduler`: one batch per model, requests join and leave it between
decode steps, tokens handed out as they are sampled, each request with its own sampling settings
and seed). It replaced ``@serve.batch``: static batches stayed small under load (answers came back
a batch at a time, so the next requests arrived in waves that a batch wait split), a batch mixing
models generated them in turn, and nothing could stream.
"""

from __future__ import annotations

import asyncio
import threading
import weakref

from mlit import decoding
from mlit.serving.engines import GenerationError, Loaded
from mlit.serving.engines.scheduler import Request, Scheduler


class HFEngine:
    name = "hf"

    def __init__(self, max_batch: int, threads: int | None = None):
        if threads:  # the replica's CPUs: Ray's OMP_NUM_THREADS is not what torch read at import
            import torch

            torch.set_num_threads(threads)
        self.scheduler = Scheduler(max_batch)
        self._mail: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # loop -> _Mailbox

    def load(self, name: str, model_dir: str) -> Loaded:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        dtype = torch.bfloat16 if torch.cuda.is_available() else torch.float32
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype)
        if torch.cuda.is_available():
            model = model.to("cuda")
        model.eval()
        vocab = model.get_input_embeddings().num_embeddings
        return Loaded(self, name, tokenizer, vocab, decoding.context_length(model), model)

    async def prompt_logprobs(self, loaded: Loaded, ids: list[int], k: int) -> list:
        return await asyncio.to_thread(
            decoding.prompt_logprobs, loaded.handle, loaded.tokenizer, ids, k
        )

    async def events(self, loaded: Loaded, job, stream: bool):
        events: asyncio.Queue = asyncio.Queue()
        loop = asyncio.get_running_loop()
        mail = self._mail.get(loop) or self._mail.setdefault(loop, _Mailbox(loop))
        post = mail.post
        request = Request(
            job.ids,
            decoding.Sampling(**job.params),
            sink=lambda event: post(events, event),
            stream=stream,
            group=job.group,
        )
        self.scheduler.submit(loaded.handle, loaded.tokenizer, request)
        try:
            while True:
                kind, value = await events.get()
                if kind == "error":
                    raise GenerationError(value)
                yield kind, value
                if kind == "done":
                    return
        finally:
            request.cancelled = True  # the client went away: stop spending steps on it

    def stats(self) -> dict:
        return {"engine": self.name, "batch_sizes": list(self.scheduler.steps[-1000:])}

    def unload(self, loaded: Loaded) -> None:
        """Nothing to stop: the scheduler forgets a model's batch once it has no work, and the
        weights go with the last reference."""


class _Mailbox:
    """Events from the scheduler thread to the event loop, one wake-up for all that are waiting:
    a decode step samples a token for every row, and each wake-up of the loop from another thread
    is a system call and a turn of the loop. It holds its loop weakly: the loop is its key."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self._loop = weakref.ref(loop)
        self._lock = threading.Lock()
        self._pending: list[tuple[asyncio.Queue, tuple]] = []
        self._woken = False

    def post(self, queue: asyncio.Queue, event: tuple) -> None:
        with self._lock:
            self._pending.append((queue, event))
            if self._woken:
                return
            self._woken = True
        loop = self._loop()
        if loop is not None:
            loop.call_soon_threadsafe(self._deliver)

    def _deliver(self) -> None:
        with self._lock:
            pending, self._pending, self._woken = self._pending, [], False
        for queue, event in pending:
            queue.put_nowait(event)
