"""The model server of the Serve app: models loaded per replica, requests handed to one engine.

``ModelServer`` keeps the models of a replica in Serve's multiplexing LRU (``max_models_per_replica``,
so requests for a model go to the replica that holds it), loads them in turns by demand
(`mlit.serving.model_turns`: a burst over more models than fit loads each about once), prepares each request
(`mlit.serving.preparation`) and hands it to its engine through `mlit.serving.engines.Engine`. Which
engine runs is decided once, when the replica starts (`mlit.serving.engines.registry`); nothing here
depends on it. It runs as a deployment of its own, or, as the app's one replica, inside the
gateway's replica (`mlit.serving.shards`); every request names its model either way.
"""

import asyncio
import logging
import time
import uuid
from collections import Counter
from contextlib import aclosing

from ray import serve

from mlit.generation import decoding
from mlit.serving import engines, preparation
from mlit.serving.engines import registry
from mlit.serving.model_turns import Turns
from mlit.serving.protocol import RESTART_RETRY_S
from mlit.store.checksums import verify_dir
from mlit.store.downloads import local_copy

logger = logging.getLogger("ray.serve")


def local_dir(path: str) -> str:
    """A model directory on this machine: the store's download cache copies one on object storage
    (s3://, gs://) once, atomically."""
    return str(local_copy(path))


@serve.deployment(max_ongoing_requests=256)
class ModelServer:
    """Loads models (an LRU per replica) and hands each request to the replica's engine.

    Everything that depends on one request (templating, tokenizing, its sampling settings, its
    context length) is checked first, off the event loop (`mlit.serving.preparation`): it fails
    that request alone with a 400. A batch only fails on a bug, with a generic 500.
    """

    def __init__(
        self,
        models: dict[str, str],
        max_models: int,
        max_batch: int,
        kind: str,  # the engine, resolved (`mlit.planning.engine_choice.resolve`)
        loras: dict | None = None,  # served name -> adapter on its base's engine, where supported
    ):
        self._paths = dict(models)
        self.loads: Counter[str] = Counter()
        self.failed_loads: Counter[str] = Counter()
        self._unloadable: dict[str, tuple[float, str]] = {}  # name -> (when, why)
        self.engine = registry.create(
            kind, list(models), max_models, max_batch, loras or {}, _threads()
        )

        async def load(model_id: str):
            return await asyncio.to_thread(self._load, model_id)

        # Built here, not as a decorator, so the LRU size is a deployment argument. Serve's
        # multiplexing LRU holds the models and tells the router where each one is; which model
        # is loaded when (in turns, evicted by demand) is decided by `Turns`.
        get_model = serve.multiplexed(max_num_models_per_replica=max_models)(load)
        self.turns = Turns(max_models, self._loader(get_model), touch=get_model)

    def _loader(self, get_model):
        async def load(model_id: str):
            try:
                return await get_model(model_id)
            except _Unloadable as err:
                self._failed(model_id, str(err))
                raise _LoadFailed(_error(424, str(err))) from err
            except Exception as err:  # a broken model folder must not take the replica down
                reason = f"model {model_id!r} cannot be loaded ({type(err).__name__})"
                self._failed(model_id, f"{reason}; see the server log")
                raise _LoadFailed(_internal_error(reason, 424)) from err

        return load

    def _failed(self, model_id: str, reason: str) -> None:
        # A model that failed to load is not tried again for a while: its requests fail at once
        # (424, with the reason) instead of each one reloading it.
        self.failed_loads[model_id] += 1
        self._unloadable[model_id] = (time.monotonic(), reason)

    def _load(self, name: str) -> engines.Loaded:
        path = local_dir(self._paths[name])
        problem = verify_dir(path)  # a model is checked against its sha256s when it is loaded
        if problem:
            logger.error("model %r at %s is damaged: %s", name, path, problem)
            raise _Unloadable(
                f"model {name!r} cannot be loaded: it is damaged ({problem}); a sweep retrains "
                "it on its next run (or `mlit store verify --repair` removes it)"
            )
        loaded = self.engine.load(name, path)
        self.loads[name] += 1
        return loaded

    async def complete(self, item: dict, model_id: str) -> dict:
        """One request for ``model_id``, answered whole: ``{"ok": completion}`` or
        ``{"error": ...}``. Called through Serve (`mlit.serving.shards`, with ``model_id`` as the
        multiplexed id that routed it here) or in the gateway's own process."""
        async for event in self._events(dict(item, stream=False), model_id):
            if "delta" not in event:
                return event
        return _internal_error("the answer ended without a result")

    async def stream(self, item: dict, model_id: str):
        """One request, streamed: ``{"delta": text}`` as tokens are sampled, then the result."""
        async for event in self._events(dict(item, stream=True), model_id):
            yield event

    def gone(self) -> str | None:
        """Why this replica cannot answer any more (its engine exited), or None."""
        try:
            self.engine.check_health()
        except Exception as err:
            return str(err)
        return None

    async def _events(self, item: dict, model_id: str):
        gone = self.gone()
        if gone:  # Serve replaces this replica within seconds (its health check fails)
            yield unavailable(gone)
            return
        failed = self._unloadable.get(model_id)
        if failed and time.monotonic() - failed[0] < RELOAD_AFTER_S:
            yield _error(424, failed[1])
            return
        try:
            async with self.turns.turn(model_id) as loaded:
                async for event in self._generate(loaded, item):
                    yield event
        except _LoadFailed as err:
            yield err.event

    async def _generate(self, loaded: engines.Loaded, item: dict):
        try:  # tokenizing a long prompt must not stall the replica's other requests
            job = await asyncio.to_thread(
                preparation.prepare, loaded.tokenizer, item, loaded.vocab, loaded.context
            )
        except (ValueError, TypeError, UnicodeError, KeyError, IndexError) as err:
            yield _error(400, f"this request cannot be run: {err}")
            return
        stream = bool(item.get("stream"))
        try:
            async for event in self._answer(loaded, job, stream):
                yield event
        except engines.GenerationError as err:
            gone = self.gone()
            yield unavailable(gone) if gone else _error(500, f"{err} (see the server log)")
        except Exception:
            yield _internal_error("internal error while generating")

    async def _answer(self, loaded: engines.Loaded, job: preparation.Job, stream: bool):
        prompt_lps = None
        if job.echo and job.top_logprobs is not None:
            prompt_lps = await self.engine.prompt_logprobs(loaded, job.ids, job.top_logprobs)
        wants_lps = stream and job.top_logprobs is not None
        if stream and job.echo:
            yield _delta(job.echo_text, prompt_lps if wants_lps else None)
        if not job.generates:  # max_tokens=0 with echo: the prompt's log-likelihoods only
            lps = () if job.top_logprobs is not None else None
            done = decoding.Completion("", "length", len(job.ids), 0, lps)
            yield {"ok": preparation.completion_dict(done, job.echo_text, prompt_lps)}
            return
        # aclosing: a client that goes away closes the engine's stream at once (it stops
        # spending decode steps on the request), not whenever the collector gets to it.
        async with aclosing(self.engine.events(loaded, job, stream)) as events:
            held, sent_at = [], 0.0
            lps, lps_sent = [], 0  # a piece's logprob entries go with it, where asked for
            async for kind, value in events:
                if kind == "logprobs":
                    lps += value
                    continue
                if kind == "token":
                    # Text leaves in chunks: the first piece at once, then what was sampled since,
                    # every STREAM_INTERVAL_S. Every object a stream yields costs this replica,
                    # the gateway and the proxy a message: with one client in four streaming, a
                    # token a message held served tokens/s a fifth lower.
                    held.append(value)
                    now = time.monotonic()
                    if now - sent_at >= STREAM_INTERVAL_S:
                        yield _delta("".join(held), lps if wants_lps else None)
                        held, sent_at, lps_sent, lps = [], now, lps_sent + len(lps), []
                    continue
                if wants_lps:  # the entries of tokens sampled after the last piece, if any
                    lps = list(value.logprobs[lps_sent:])
                if held or lps:
                    yield _delta("".join(held), lps if wants_lps else None)
                yield {"ok": preparation.completion_dict(value, job.echo_text, prompt_lps)}

    def check_health(self) -> None:
        """Serve's periodic health check: a replica whose engine is gone is replaced."""
        self.engine.check_health()

    def stats(self) -> dict:
        return {
            "loads": dict(self.loads),
            "failed_loads": dict(self.failed_loads),
            "held": self.turns.held(),
            "waiting": self.turns.waiting(),
            **self.engine.stats(),
        }


def _threads() -> int:
    """The CPUs Ray gave this replica, as threads for its engine (at least one)."""
    import ray

    return max(1, int(ray.get_runtime_context().get_assigned_resources().get("CPU", 1)))


def _delta(text: str, logprobs) -> dict:
    """A streamed piece; with the logprob entries of its tokens where the request asked."""
    if logprobs is None:
        return {"delta": text}
    return {"delta": text, "logprobs": preparation.plain_logprobs(logprobs)}


def _error(status: int, message: str) -> dict:
    return {"error": {"status": status, "message": message}}


def unavailable(why: str) -> dict:
    """A 503 with ``Retry-After``: the engine is gone and Serve is replacing the replica, so the
    same request succeeds a few seconds later (a 500 would say it never will)."""
    message = f"{why}; the server is being restarted: retry in {RESTART_RETRY_S} s"
    return {"error": {"status": 503, "message": message, "retry_after": RESTART_RETRY_S}}


def _internal_error(what: str, status: int = 500) -> dict:
    """A 500 for the client with a reference only; the traceback goes to the replica's log.
    Call it inside the ``except`` block whose exception it reports."""
    ref = uuid.uuid4().hex[:12]
    logger.exception("%s (request %s)", what, ref)
    return _error(status, f"{what} (request {ref})")


class _LoadFailed(Exception):
    """A load failed; ``event`` is the answer for every request that waited for it."""

    def __init__(self, event: dict):
        super().__init__(event["error"]["message"])
        self.event = event


class _Unloadable(Exception):
    """A model that cannot be loaded, with a reason the client may read (no server paths)."""


# Streamed text leaves the replica at most this often, after the first piece.
STREAM_INTERVAL_S = 0.1
RELOAD_AFTER_S = 300.0  # how long a model that failed to load is answered 424 without a retry
