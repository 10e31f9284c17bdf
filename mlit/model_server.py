"""The model server of the Serve app (`mlit.serving`): models loaded per replica, one engine.

``ModelServer`` loads models per replica (an LRU of ``max_models_per_replica``) and hands each
request to its engine: ``hf``, the replica's continuous-batching scheduler (`mlit.scheduler`: one
batch per model, requests join and leave it between decode steps, tokens stream out as they are
sampled, each request keeps its own sampling parameters and seed), or ``vllm``
(`mlit.vllm_engine`). The scheduler replaced ``@serve.batch``: static batches stayed small under
load (answers came back a batch at a time, so the next requests arrived in waves that a batch wait
split), a batch mixing models generated them in turn, and nothing could stream.
"""

import asyncio
import logging
import uuid
from collections import Counter

from ray import serve

from mlit import engine, jobs
from mlit.integrity import verify_dir
from mlit.scheduler import Request, Scheduler
from mlit.store import local_copy

logger = logging.getLogger("ray.serve")


def local_dir(path: str) -> str:
    """A model directory on this machine: the store's download cache copies one on object storage
    (s3://, gs://) once, atomically."""
    return str(local_copy(path))


# --------------------------------------------------------------------------------------------
# The model server: multiplexed, batched


@serve.deployment(max_ongoing_requests=256)
class ModelServer:
    """Loads models (an LRU per replica) and hands each request to its engine: ``hf``, our
    continuous batching (`mlit.scheduler`), or ``vllm`` (`mlit.vllm_engine`).

    Everything that depends on one request (templating, tokenizing, its sampling settings, its
    context length) is checked first, off the event loop (`mlit.jobs`): it fails that request
    alone with a 400. A batch only fails on a bug, with a generic 500.
    """

    def __init__(
        self,
        models: dict[str, str],
        max_models: int,
        max_batch: int,
        kind: str = "hf",
        loras: dict | None = None,  # vllm: served name -> `mlit.vllm_engine.Lora`
    ):
        self._paths = dict(models)
        self.engine = kind
        self.loads: Counter[str] = Counter()
        if kind == "vllm":
            from mlit import vllm_engine

            self._engines = vllm_engine.Engines(list(models), max_models, loras or {})

            def load_sync(model_id: str):
                loaded = vllm_engine.load(self._engines, model_id, self._checked_dir(model_id))
                self.loads[model_id] += 1
                return loaded

        else:
            self.scheduler = Scheduler(max_batch)
            load_sync = self._load

        async def load(model_id: str):
            return await asyncio.to_thread(load_sync, model_id)

        # Built here, not as a decorator, so the LRU size is a deployment argument.
        self._get_model = serve.multiplexed(max_num_models_per_replica=max_models)(load)

    def _checked_dir(self, name: str) -> str:
        path = local_dir(self._paths[name])
        problem = verify_dir(path)  # a model is checked against its sha256s when it is loaded
        if problem:
            raise ValueError(
                f"model {name!r} at {path} is damaged: {problem}; rerun the sweep "
                "to train it again (or `mlit store verify --repair`)"
            )
        return path

    def _load(self, name: str):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        path = self._checked_dir(name)
        tokenizer = AutoTokenizer.from_pretrained(path)
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        dtype = torch.bfloat16 if torch.cuda.is_available() else torch.float32
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
        if torch.cuda.is_available():
            model = model.to("cuda")
        model.eval()
        self.loads[name] += 1
        return model, tokenizer

    async def complete(self, item: dict) -> dict:
        """One request, answered whole: ``{"ok": completion}`` or ``{"error": ...}``."""
        async for event in self._events(dict(item, stream=False)):
            if "delta" not in event:
                return event
        return _internal_error("the answer ended without a result")

    async def stream(self, item: dict):
        """One request, streamed: ``{"delta": text}`` as tokens are sampled, then the result."""
        async for event in self._events(dict(item, stream=True)):
            yield event

    async def _events(self, item: dict):
        model_id = serve.get_multiplexed_model_id()
        try:
            if self.engine == "vllm":
                loaded = await self._get_model(model_id)
                tok, vocab, limit = loaded.tokenizer, loaded.vocab, loaded.context
            else:
                model, tok = await self._get_model(model_id)
                vocab = model.get_input_embeddings().num_embeddings
                limit = engine.context_length(model)
        except Exception:  # a broken model folder must not take the replica down
            yield _internal_error(f"model {model_id!r} failed to load")
            return
        try:  # tokenizing a long prompt must not stall the replica's other requests
            job = await asyncio.to_thread(jobs.prepare, tok, item, vocab, limit)
        except (ValueError, TypeError, UnicodeError, KeyError, IndexError) as err:
            yield _error(400, f"this request cannot be run: {err}")
            return
        stream = bool(item.get("stream"))
        if stream and job.echo:
            yield {"delta": job.echo_text}
        if self.engine == "vllm":
            from mlit import vllm_engine

            try:
                async for event in vllm_engine.events(loaded, job, stream):
                    yield event
            except Exception:
                yield _internal_error("internal error while generating")
            return
        async for event in self._hf_events(model, tok, job, stream):
            yield event

    async def _hf_events(self, model, tok, job: jobs.Job, stream: bool):
        prompt_lps = None
        if job.echo and job.top_logprobs is not None:
            prompt_lps = await asyncio.to_thread(
                engine.prompt_logprobs, model, tok, job.ids, job.top_logprobs
            )
        if not job.generates:  # max_tokens=0 with echo: the prompt's log-likelihoods only
            lps = () if job.top_logprobs is not None else None
            done = engine.Completion("", "length", len(job.ids), 0, lps)
            yield {"ok": jobs.completion_dict(done, job.echo_text, prompt_lps)}
            return
        loop = asyncio.get_running_loop()
        events: asyncio.Queue = asyncio.Queue()
        request = Request(
            job.ids,
            engine.Sampling(**job.params),
            sink=lambda event: loop.call_soon_threadsafe(events.put_nowait, event),
            stream=stream,
        )
        self.scheduler.submit(model, tok, request)
        try:
            while True:
                kind, value = await events.get()
                if kind == "token":
                    yield {"delta": value}
                elif kind == "done":
                    yield {"ok": jobs.completion_dict(value, job.echo_text, prompt_lps)}
                    return
                else:
                    yield _error(500, f"{value} (see the server log)")
                    return
        finally:
            request.cancelled = True  # the client went away: stop spending steps on it

    def stats(self) -> dict:
        if self.engine == "vllm":  # vLLM schedules its own batches; engine starts say more
            starts = dict(self._engines.starts)
            return {
                "engine": "vllm",
                "loads": dict(self.loads),
                "batch_sizes": [],
                "starts": starts,
            }
        steps = self.scheduler.steps[-1000:]
        return {"engine": self.engine, "loads": dict(self.loads), "batch_sizes": list(steps)}


def _error(status: int, message: str) -> dict:
    return {"error": {"status": status, "message": message}}


def _internal_error(what: str) -> dict:
    """A 500 for the client with a reference only; the traceback goes to the replica's log.
    Call it inside the ``except`` block whose exception it reports."""
    ref = uuid.uuid4().hex[:12]
    logger.exception("%s (request %s)", what, ref)
    return _error(500, f"{what} (request {ref})")
