"""The Serve application: building it from a `ServeConfig`, starting and stopping it.

    mlit serve results/language_count          # the models of a run
    mlit serve --model demo-base=demo --port 8000
    serve run serve/config.yaml                # the same app from a Serve config file

Two deployments:

- ``Gateway`` (`mlit.serving.gateway`): a FastAPI ingress of our own. It checks the bearer token,
  validates requests (`mlit.serving.protocol`), answers client mistakes with 4xx OpenAI-style
  errors, and forwards each request to the model server of its model's shard, with the request's
  ``model`` as the multiplexed model id.
- ``ModelServer`` (`mlit.serving.model_server`), one deployment per shard: loads models per replica
  (an LRU of ``max_models_per_replica``) and generates with its engine (`mlit.serving.engines`).

It binds to 127.0.0.1 unless told otherwise. The API key is never stored or logged: the gateway
keeps only its SHA-256.

No ``from __future__ import annotations`` here: FastAPI reads the route annotations at runtime.
"""

import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from ray import serve

from mlit.planning import engine_choice
from mlit.plumbing import ingress
from mlit.results.run_folder import RunFolder
from mlit.serving import shards
from mlit.serving.admission import limits_for
from mlit.serving.gateway import Gateway, hash_key
from mlit.serving.model_server import ModelServer, local_dir
from mlit.store import model_refs

APP_NAME = "mlit"
# Warnings only, no access log, for the replicas and Serve's proxy: one line per request buries a
# sweep's output and costs the proxy time under a burst (the bearer token is never logged).
QUIET = {"log_level": "WARNING", "enable_access_log": False}
# Serve's proxy and controller: errors only. Under overload the proxy's router logs a warning for
# every request it refuses (hundreds a second, each a write to its log).
SYSTEM_QUIET = {"log_level": "ERROR", "enable_access_log": False}
GATEWAY_CONNECTIONS = ingress.HAPROXY_MAXCONN  # requests the gateway holds at once, at most


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
    body_timeout_s: float = 30.0  # a request body must arrive within this, else 408
    engine: str = "hf"  # hf (ours), vllm, or auto: vllm where it is installed and there is a GPU
    replicas: int = 1
    # CPUs per model-server replica, and so its torch threads. None: with GPUs, 1; on CPU, a
    # node's cores shared by the replicas (on one machine: every core of it).
    num_cpus: float | None = None
    num_gpus: float = 0.0
    autoscaling: dict | None = field(default=None)  # Serve autoscaling_config; overrides replicas
    default_max_tokens: int = 256
    max_request_tokens: int = 32_768  # new tokens per request: sequences x max_tokens
    # Model-server deployments the models are split over (`shard_of`), each with its own replicas:
    # a sweep on GPUs runs one per GPU, so every GPU answers its own models at the same time.
    shards: int = 1

    def __post_init__(self) -> None:
        if not self.models:
            raise ValueError("no models to serve: give a run folder, --store or --model NAME=PATH")
        for name in self.models:
            if not re.fullmatch(r"[A-Za-z0-9._:@/-]+", name):
                raise ValueError(f"invalid model name {name!r}: use letters, digits and ._:@/-")
        if self.engine not in engine_choice.ENGINES:
            raise ValueError(f"unknown engine {self.engine!r}: use one of hf, vllm, auto")
        if not 1 <= self.shards <= len(self.models):
            raise ValueError(f"shards must be between 1 and the {len(self.models)} models served")

    def shard_of(self) -> dict[str, int]:
        """Which model-server deployment serves each model: the models in turn, so that a sweep's
        models (the judge last) spread evenly. Generation runs one model per shard at a time."""
        return {name: i % self.shards for i, name in enumerate(self.models)}


def shards_for(gpus_per_replica: float, cluster_gpus: float, models: int) -> int:
    """One model-server deployment per GPU the cluster has (at most one per model); 1 on CPU."""
    if gpus_per_replica <= 0:
        return 1
    return max(1, min(models, int(cluster_gpus // gpus_per_replica)))


# --------------------------------------------------------------------------------------------
# Building and starting the app


def build_app(cfg: ServeConfig):
    # Replicas read models on object storage with the caller's credentials and endpoint (a
    # MinIO or moto server): the driver's environment is not a replica's.
    storage_env = {
        k: v
        for k, v in os.environ.items()
        if k.startswith("AWS_") or k == "MLIT_DOWNLOAD_CACHE_GB"  # the download cache's limit
    }
    kind = engine_choice.resolve(cfg.engine, cfg.num_gpus)
    if kind == "vllm" and not cfg.num_gpus:
        for name, path in cfg.models.items():
            engine_choice.check_cpu_model(name, path)
    runtime_env = engine_choice.runtime_env() if kind == "vllm" else {"env_vars": {}}
    runtime_env["env_vars"].update(storage_env)
    # torch's OpenMP threads spin between the small ops of a decode step (their default). Behind
    # Serve's proxy, sleeping (PASSIVE) served 25% more tokens/s on CPU: the spin took a core the
    # proxy needed. Behind HAProxy the HTTP path needs ~11 ms of CPU per answer, not ~43, and
    # spinning serves 25% more (2,096 -> 2,613 tokens/s, benchmarks/serve_load.py).
    if "OMP_WAIT_POLICY" in os.environ:  # as the caller wants them
        runtime_env["env_vars"]["OMP_WAIT_POLICY"] = os.environ["OMP_WAIT_POLICY"]
    ongoing = max(64, 4 * cfg.max_batch_size)  # a replica's batch, and the next ones at hand
    server_options: dict = {
        "ray_actor_options": {"num_cpus": replica_cpus(cfg), "num_gpus": cfg.num_gpus},
        "max_ongoing_requests": ongoing,
    }
    if runtime_env["env_vars"] or len(runtime_env) > 1:
        server_options["ray_actor_options"]["runtime_env"] = runtime_env
    if cfg.autoscaling:
        server_options["autoscaling_config"] = cfg.autoscaling
    else:
        server_options["num_replicas"] = cfg.replicas
    server_options["logging_config"] = QUIET
    server_options.update(HEALTH_CHECKS)
    shard = cfg.shard_of()
    dirs = {name: local_dir(path) for name, path in cfg.models.items()}  # downloads once
    loras = {}
    if kind == "vllm":  # imports no vLLM: reads the models' adapter files
        from mlit.serving.engines.vllm import lora_targets

        loras = lora_targets(dirs)
    replicas = (cfg.autoscaling or {}).get("max_replicas", cfg.replicas)
    limits = limits_for(ongoing, replicas, cfg.shards, cfg.max_request_tokens)
    gateway_options = _gateway_options(limits)
    contexts = {name: model_refs.context(here) for name, here in dirs.items()}
    gateway_args = (shard, contexts, cfg.api_key_sha256, limits, cfg.default_max_tokens)
    gateway_args += (cfg.max_body_bytes, cfg.body_timeout_s)
    if kind == "hf" and cfg.shards == 1 and replicas == 1 and not cfg.autoscaling:
        # One model-server replica, nothing to route: the gateway runs it in its own replica
        # (`mlit.serving.shards`), a hop through Serve less on every request. vLLM's replica runs
        # in vLLM's interpreter (and that layout is not measured): it stays a deployment.
        gateway_options["ray_actor_options"] = server_options["ray_actor_options"]
        spec = shards.InProcess(
            dict(cfg.models), cfg.max_models_per_replica, cfg.max_batch_size, kind
        )
        return Gateway.options(**gateway_options).bind([spec], *gateway_args)
    servers = []
    for i in range(cfg.shards):
        mine = {name: path for name, path in cfg.models.items() if shard[name] == i}
        name = "ModelServer" if cfg.shards == 1 else f"ModelServer{i}"
        servers.append(
            ModelServer.options(name=name, **server_options).bind(
                mine,
                cfg.max_models_per_replica,
                cfg.max_batch_size,
                kind,
                {n: lora for n, lora in loras.items() if n in mine},
            )
        )
    return Gateway.options(**gateway_options).bind(servers, *gateway_args)


def _gateway_options(limits) -> dict:
    """The gateway's own bounds: past anything HAProxy lets in, with no bound on its queue.

    Serve checks them before the gateway's code runs and refuses in plain text, and with direct
    ingress it counts every request that has arrived but not yet started as queued, so a bound
    there refused some of 100 connections opened at once after a burst (slow uploads, before their
    408) while the gateway had room. The gateway refuses generation past ``limits.total`` itself,
    at once, before routing (`mlit.serving.front`; admission checks sequences after).
    """
    return {
        "ray_actor_options": {"num_cpus": 0},
        "logging_config": QUIET,
        "max_ongoing_requests": max(GATEWAY_CONNECTIONS, limits.total * 2),
        "max_queued_requests": -1,
        **HEALTH_CHECKS,
    }


# Serve asks each replica's ``check_health`` this often and replaces it after 3 failures in a
# row: a replica whose engine died is replaced within ~3 s, not ~30 s (Serve's default, 10 s).
# Meanwhile its requests get 503 with Retry-After and its /healthz says why.
HEALTH_CHECKS = {"health_check_period_s": 1.0, "health_check_timeout_s": 30.0}


def replica_cpus(cfg: ServeConfig) -> float:
    """CPUs per model-server replica: as configured; else 1 with GPUs, and on CPU the cores of the
    largest node shared by the replicas (one replica on one machine takes all of them). On CPU the
    engine is the replica's work: its torch runs on as many threads as it has CPUs."""
    if cfg.num_cpus is not None:
        return cfg.num_cpus
    if cfg.num_gpus:
        return 1.0
    import ray

    if ray.is_initialized():
        nodes = [n["Resources"].get("CPU", 0.0) for n in ray.nodes() if n.get("Alive")]
    else:  # an app built before Ray is up is started on this machine
        nodes = [float(os.cpu_count() or 1)]
    replicas = (cfg.autoscaling or {}).get("max_replicas", cfg.replicas)
    return max(1.0, float(int(max(nodes, default=1.0)) // max(1, replicas)))


def resolve_model_path(path: str) -> str:
    """'demo' is the demo base model (built on first use); anything else is a path or URI."""
    if path == "demo":
        from mlit.demo import base_model

        return str(base_model.build_demo_model())
    if path == "demo-judge":
        from mlit.demo import judge_model

        return str(judge_model.build_demo_judge())
    return model_refs.served(path)


def app_builder(args: dict):
    """Entry point for `serve run serve/config.yaml` (``import_path: mlit.serving.app:app_builder``)."""
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
        max_request_tokens=int(args.get("max_request_tokens", ServeConfig.max_request_tokens)),
        engine=str(args.get("engine", ServeConfig.engine)),
        num_cpus=float(args["num_cpus"]) if args.get("num_cpus") is not None else None,
        num_gpus=float(args.get("num_gpus", 0)),
        shards=int(args.get("shards", 1)),
        replicas=int(args.get("replicas", 1)),
        autoscaling=args.get("autoscaling") or None,
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
        from mlit.store.artifacts import Store

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


def cluster_gpus() -> float:
    """GPUs of the connected (or a new local) Ray cluster."""
    import ray

    if not ray.is_initialized():
        ingress.install()
        ray.init(log_to_driver=False)
    return float(ray.cluster_resources().get("GPU", 0))


def start(cfg: ServeConfig) -> str:
    """Deploy the app on the connected (or a new local) Ray cluster; returns the base URL."""
    import ray

    from mlit.plumbing import interrupts

    if not ray.is_initialized():
        ingress.install()  # Serve's HAProxy ingress: no Python proxy on the HTTP path
        ray.init(log_to_driver=False)
    interrupts.install()  # Ray installs its own handlers: SIGTERM must stay an interrupt
    serve.start(http_options={"host": cfg.host, "port": cfg.port}, logging_config=SYSTEM_QUIET)
    _ensure_http(cfg)
    serve.run(build_app(cfg), name=APP_NAME, route_prefix="/", blocking=False)
    host = "127.0.0.1" if cfg.host in ("0.0.0.0", "::") else cfg.host
    url = f"http://{host}:{cfg.port}"
    _wait_for_route(url)
    return url


def _wait_for_route(url: str) -> None:
    """Until the gateway answers on ``url``: HAProxy (or Serve's proxy) learns the new route a
    moment after the app is running; any answer of the gateway's will do."""
    import urllib.error
    import urllib.request

    for _ in range(100):
        try:
            urllib.request.urlopen(f"{url}/v1/models", timeout=5).close()
            return
        except urllib.error.HTTPError as err:
            if err.code != 404:  # 401 without the key: the gateway answered
                return
        except OSError:
            pass
        time.sleep(0.1)


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
    serve.start(http_options={"host": cfg.host, "port": cfg.port}, logging_config=SYSTEM_QUIET)


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
