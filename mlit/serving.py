"""One Ray Serve application: every trained model (and a self-hosted judge) behind an OpenAI API.

    mlit serve results/language_count          # the models of a run
    mlit serve --model demo-base=demo --port 8000
    serve run serve/config.yaml                # the same app from a Serve config file

Two deployments:

- ``Gateway`` (`mlit.gateway`): a FastAPI ingress of our own. It checks the bearer token, validates requests
  (`mlit.openai_api`), answers client mistakes with 4xx OpenAI-style errors, and forwards each
  request to ``ModelServer`` with the request's ``model`` as the multiplexed model id.
- ``ModelServer``: loads models per replica with ``@serve.multiplexed`` (an LRU of
  ``max_models_per_replica``) and hands each request to the replica's continuous-batching
  scheduler (`mlit.scheduler`): one batch per model, requests join and leave it between decode
  steps, tokens stream out as they are sampled, and each request keeps its own sampling
  parameters and seed (`mlit.engine`). It replaced ``@serve.batch``: static batches stayed small
  under load (answers came back a batch at a time, so the next requests arrived in waves that a
  batch wait split), a batch mixing models generated them in turn, and nothing could stream.

It binds to 127.0.0.1 unless told otherwise. The API key is never stored or logged: the gateway
keeps only its SHA-256.

No ``from __future__ import annotations`` here: FastAPI reads the route annotations at runtime.
"""

import asyncio
import json
import logging
import os
import re
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from ray import serve

from mlit import engine, jobs, vllm_engine
from mlit.gateway import Gateway, hash_key
from mlit.integrity import verify_dir
from mlit.run_folder import RunFolder
from mlit.scheduler import Request, Scheduler
from mlit.store import local_copy

APP_NAME = "mlit"
logger = logging.getLogger("ray.serve")


@dataclass(frozen=True)
class ServeConfig:
    models: dict[str, str]  # served name -> model directory (local path or s3:// / gs:// URI)
    host: str = "127.0.0.1"
    port: int = 8000
    api_key_sha256: str | None = None
    max_models_per_replica: int = 4
    # Rows per decode step of one model (continuous batching: requests join between steps).
    max_batch_size: int = 64
    max_body_bytes: int = 2 * 1024 * 1024
    engine: str = "hf"  # hf (ours), vllm, or auto: vllm where it is installed and there is a GPU
    replicas: int = 1
    num_cpus: float = 1.0
    num_gpus: float = 0.0
    autoscaling: dict | None = field(default=None)  # Serve autoscaling_config; overrides replicas
    default_max_tokens: int = 256

    def __post_init__(self) -> None:
        if not self.models:
            raise ValueError("no models to serve: give a run folder, --store or --model NAME=PATH")
        for name in self.models:
            if not re.fullmatch(r"[A-Za-z0-9._:@/-]+", name):
                raise ValueError(f"invalid model name {name!r}: use letters, digits and ._:@/-")
        if self.engine not in vllm_engine.ENGINES:
            raise ValueError(f"unknown engine {self.engine!r}: use one of hf, vllm, auto")


def model_context(path: str) -> int | None:
    """The context length from a model's config.json, without loading weights."""
    cfg_file = Path(path) / "config.json"
    if not cfg_file.exists():
        return None
    cfg = json.loads(cfg_file.read_text())
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        if isinstance(cfg.get(name), int):
            return cfg[name]
    return None


def _local_dir(path: str) -> str:
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

    def __init__(self, models: dict[str, str], max_models: int, max_batch: int, kind="hf"):
        self._paths = dict(models)
        self.engine = kind
        self.loads: Counter[str] = Counter()
        if kind == "vllm":
            from mlit.vllm_engine import VllmModels

            self._vllm = VllmModels(max_models)
            self.loads = self._vllm.loads
            return
        self.scheduler = Scheduler(max_batch)

        async def load(model_id: str):
            return await asyncio.to_thread(self._load, model_id)

        # Built here, not as a decorator, so the LRU size is a deployment argument.
        self._get_model = serve.multiplexed(max_num_models_per_replica=max_models)(load)

    def _checked_dir(self, name: str) -> str:
        path = _local_dir(self._paths[name])
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
                path = await asyncio.to_thread(self._checked_dir, model_id)
                llm, tok, vocab, limit = await self._vllm.get(model_id, path)
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
                async for event in vllm_engine.events(llm, tok, job, stream):
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
        steps = [] if self.engine == "vllm" else self.scheduler.steps[-1000:]
        return {"engine": self.engine, "loads": dict(self.loads), "batch_sizes": list(steps)}


def _error(status: int, message: str) -> dict:
    return {"error": {"status": status, "message": message}}


def _internal_error(what: str) -> dict:
    """A 500 for the client with a reference only; the traceback goes to the replica's log.
    Call it inside the ``except`` block whose exception it reports."""
    ref = uuid.uuid4().hex[:12]
    logger.exception("%s (request %s)", what, ref)
    return _error(500, f"{what} (request {ref})")


# --------------------------------------------------------------------------------------------
# Building and starting the app


def build_app(cfg: ServeConfig):
    # Replicas read models on object storage with the caller's credentials and endpoint (a
    # MinIO or moto server): the driver's environment is not a replica's.
    storage_env = {k: v for k, v in os.environ.items() if k.startswith("AWS_")}
    kind = vllm_engine.resolve(cfg.engine, cfg.num_gpus)
    if kind == "vllm" and not cfg.num_gpus:
        for name, path in cfg.models.items():
            vllm_engine.check_cpu_model(name, path)
    runtime_env = vllm_engine.runtime_env() if kind == "vllm" else {"env_vars": {}}
    runtime_env["env_vars"].update(storage_env)
    server_options: dict = {
        "ray_actor_options": {"num_cpus": cfg.num_cpus, "num_gpus": cfg.num_gpus},
        "max_ongoing_requests": max(64, 4 * cfg.max_batch_size),
    }
    if runtime_env["env_vars"] or len(runtime_env) > 1:
        server_options["ray_actor_options"]["runtime_env"] = runtime_env
    if cfg.autoscaling:
        server_options["autoscaling_config"] = cfg.autoscaling
    else:
        server_options["num_replicas"] = cfg.replicas
    # Warnings only, no access log: one line per request buries a sweep's output (and the
    # bearer token is never logged either way).
    quiet = {"log_level": "WARNING", "enable_access_log": False}
    server_options["logging_config"] = quiet
    server = ModelServer.options(**server_options).bind(
        cfg.models, cfg.max_models_per_replica, cfg.max_batch_size, kind
    )
    contexts = {name: model_context(_local_dir(path)) for name, path in cfg.models.items()}
    return Gateway.options(ray_actor_options={"num_cpus": 0}, logging_config=quiet).bind(
        server, contexts, cfg.api_key_sha256, cfg.default_max_tokens, cfg.max_body_bytes
    )


def resolve_model_path(path: str) -> str:
    """'demo' is the demo base model (built on first use); anything else is a path or URI."""
    if path == "demo":
        from mlit import demo

        return str(demo.build_demo_model())
    if path == "demo-judge":
        from mlit import demo_judge

        return str(demo_judge.build_demo_judge())
    if "://" in path:
        return path
    p = Path(path).expanduser()
    if not (p / "config.json").exists():
        raise ValueError(f"model directory {path!r} has no config.json")
    return str(p.resolve())


def app_builder(args: dict):
    """Entry point for `serve run serve/config.yaml` (``import_path: mlit.serving:app_builder``)."""
    key_env = args.get("api_key_env")
    key = os.environ.get(key_env) if key_env else None
    if key_env and not key:  # an open server by accident is worse than no server
        raise ValueError(
            f"api_key_env names {key_env!r}, which is not set in this environment: set it, or "
            "remove api_key_env to serve without a key"
        )
    models = {name: resolve_model_path(str(p)) for name, p in (args.get("models") or {}).items()}
    if args.get("run_dir"):
        models.update(run_models(args["run_dir"]))
    cfg = ServeConfig(
        models=models,
        api_key_sha256=hash_key(key) if key else None,
        max_models_per_replica=int(args.get("max_models_per_replica", 4)),
        max_batch_size=int(args.get("max_batch_size", ServeConfig.max_batch_size)),
        max_body_bytes=int(args.get("max_body_bytes", ServeConfig.max_body_bytes)),
        engine=str(args.get("engine", ServeConfig.engine)),
        num_cpus=float(args.get("num_cpus", 1)),
        num_gpus=float(args.get("num_gpus", 0)),
    )
    return build_app(cfg)


def collect_models(
    run_dir: str | Path | None, store_root: str | None, specs: list[str]
) -> dict[str, str]:
    """Served name -> model path for `mlit serve`: a run folder's models, every model of a store
    (named mixture-key8), and NAME=PATH specs; the demo base model when nothing is given."""
    models: dict[str, str] = {}
    if run_dir:
        models.update(run_models(run_dir))
    if store_root:
        from mlit.store import Store

        store = Store(store_root)
        for key in store.model_keys():
            info = store.model_info(key) or {}
            models[f"{info.get('mixture', 'model')}-{key[:8]}"] = store.model_uri(key)
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or not name:
            raise ValueError(f"--model takes NAME=PATH, got {spec!r}")
        models[name] = resolve_model_path(path)
    if not models:
        models["demo-base"] = resolve_model_path("demo")
    return models


def run_models(run_dir: str | Path) -> dict[str, str]:
    """The models of a run folder: served name -> model directory."""
    return {name: entry["path"] for name, entry in RunFolder(Path(run_dir)).models().items()}


def start(cfg: ServeConfig) -> str:
    """Deploy the app on the connected (or a new local) Ray cluster; returns the base URL."""
    import ray

    from mlit import interrupts

    if not ray.is_initialized():
        ray.init(log_to_driver=False)
    interrupts.install()  # Ray installs its own handlers: SIGTERM must stay an interrupt
    serve.start(http_options={"host": cfg.host, "port": cfg.port})
    _ensure_http(cfg)
    serve.run(build_app(cfg), name=APP_NAME, route_prefix="/", blocking=False)
    host = "127.0.0.1" if cfg.host in ("0.0.0.0", "::") else cfg.host
    return f"http://{host}:{cfg.port}"


def _ensure_http(cfg: ServeConfig) -> None:
    """Serve keeps the HTTP options of its first start; restart it when they differ from ours.

    A Serve instance left running with another host or port (an earlier run, another test) would
    otherwise make the app answer somewhere the caller is not looking.
    """
    from ray.serve.context import _get_global_client  # no public getter for the HTTP options

    http = _get_global_client().http_config
    if (http.host, http.port) == (cfg.host, cfg.port):
        return
    others = [name for name in serve.status().applications if name != APP_NAME]
    if others:
        raise RuntimeError(
            f"Ray Serve already listens on {http.host}:{http.port} with other apps ({others}); "
            f"serve there (--port {http.port}) or stop them first"
        )
    serve.shutdown()
    serve.start(http_options={"host": cfg.host, "port": cfg.port})


def stop() -> None:
    """Take the app down (training phases need its CPUs and GPUs back)."""
    serve.delete(APP_NAME, _blocking=True)


def stop_if_running() -> bool:
    """Take the app down if it is deployed on the connected cluster; True if it was."""
    import ray

    if not ray.is_initialized():
        return False
    try:
        running = APP_NAME in serve.status().applications
    except Exception:  # Serve was never started on this cluster
        return False
    if running:
        stop()
    return running
