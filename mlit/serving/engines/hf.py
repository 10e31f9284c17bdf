"""The ``hf`` engine: transformers models in the replica's process, stepped by our continuous
batching (`mlit.serving.engines.scheduler`: one batch per model, requests join and leave it between
decode steps, tokens handed out as they are sampled, each request with its own sampling settings
and seed). It replaced ``@serve.batch``: static batches stayed small under load (answers came back
a batch at a time, so the next requests arrived in waves that a batch wait split), a batch mixing
models generated them in turn, and nothing could stream.
"""

from __future__ import annotations

import asyncio

from mlit import decoding
from mlit.serving.engines import GenerationError, Loaded
from mlit.serving.engines.scheduler import Request, Scheduler


class HFEngine:
    name = "hf"

    def __init__(self, max_batch: int):
        self.scheduler = Scheduler(max_batch)

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
        loop = asyncio.get_running_loop()
        events: asyncio.Queue = asyncio.Queue()
        request = Request(
            job.ids,
            decoding.Sampling(**job.params),
            sink=lambda event: loop.call_soon_threadsafe(events.put_nowait, event),
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
