"""The `mlit` commands that build and serve models: `demo-model`, `demo-judge`, `serve`.

Registered on the one command line in `mlit.cli.main`; heavy stacks are imported inside each command.
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import click

from mlit.plumbing import console


@click.command("demo-model")
@click.argument("out_dir", required=False, type=click.Path(path_type=Path))
@click.option("--pretrain-steps", type=int, help="Override the pretraining steps (default 400).")
def demo_model_cmd(out_dir: Path | None, pretrain_steps: int | None) -> None:
    """Build the embedded default's tiny base model locally (cached; no download), in OUT_DIR
    (default: ~/.cache/mlit/demo/base)."""
    from mlit.demo import base_model

    cfg = base_model.DemoModelConfig()
    if pretrain_steps is not None:
        cfg = replace(cfg, pretrain_steps=pretrain_steps)
    target = out_dir or base_model.default_dir()
    cached = base_model.is_built(target, cfg)
    path = base_model.build_demo_model(target, cfg)
    meta = json.loads((path / base_model.MARKER).read_text())
    state = "cached" if cached else f"built in {meta['seconds']} s"
    click.echo(
        f"demo base model ({meta['parameters']:,} parameters, final pretraining loss "
        f"{meta['loss_last']:.2f}), {state}: {path}"
    )


@click.command("serve")
@click.argument("run_dir", required=False, type=click.Path(path_type=Path))
@click.option("--model", multiple=True, help="NAME=PATH to serve (repeatable); PATH may be 'demo'.")
@click.option("--store", "store_root", help="Also serve every model in this store.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Bind address.")
@click.option(
    "--port",
    type=int,
    default=None,
    help="HTTP port (default: 8000 when it is free, else a free one; the URL is printed).",
)
@click.option(
    "--api-key-env", help="Environment variable holding the API key; requests without it get 401."
)
@click.option(
    "--max-models-per-replica",
    default=4,
    show_default=True,
    help="Models loaded at once per replica; more are served in turns (each loaded once per "
    "burst, the one asked for longest ago evicted when no request runs on it).",
)
@click.option(
    "--max-batch-size",
    default=64,
    show_default=True,
    help="Most requests decoded together per model (1 turns batching off).",
)
@click.option(
    "--engine",
    default="hf",
    show_default=True,
    help="hf (continuous batching of our own), vllm (needs `make vllm-env`), or auto "
    "(vllm where it is installed and replicas have a GPU).",
)
@click.option(
    "--max-request-tokens",
    default=32_768,
    show_default=True,
    help="New tokens one request may ask for (sequences x max_tokens); more gets a 400.",
)
@click.option(
    "--replicas",
    default=1,
    show_default=True,
    help="Model-server replicas. With one (and one shard, engine hf) the model server runs in the "
    "gateway's own replica: no hop through Serve between them.",
)
@click.option(
    "--num-cpus",
    type=float,
    default=None,
    help="CPUs per model-server replica (its torch threads). Default: on CPU, the cores of a "
    "node shared by the replicas (on one machine, all of them); 1 with --num-gpus.",
)
@click.option("--num-gpus", default=0.0, show_default=True, help="GPUs (or a part) per replica.")
@click.option(
    "--shards",
    default=1,
    show_default=True,
    help="Split the models over this many model-server deployments, each with its own "
    "replicas (e.g. one per GPU: each answers its own models at the same time).",
)
@click.option(
    "--download-cache-gb",
    type=click.FloatRange(min=0.001),
    default=None,
    help="Gigabytes each replica keeps of models downloaded from object storage; the least "
    "recently used go first (default: $MLIT_DOWNLOAD_CACHE_GB or 200).",
)
def serve_cmd(
    run_dir: Path | None,
    model: tuple[str, ...],
    store_root: str | None,
    host: str,
    port: int | None,
    api_key_env: str | None,
    max_models_per_replica: int,
    max_batch_size: int,
    max_request_tokens: int,
    engine: str,
    replicas: int,
    num_cpus: float | None,
    num_gpus: float,
    shards: int,
    download_cache_gb: float | None,
) -> None:
    """Serve models behind an OpenAI-compatible API on Ray Serve, until Ctrl-C: every model of
    a run folder (RUN_DIR), of a store, or given by --model; the demo base model by default."""
    import signal
    import threading

    if download_cache_gb is not None:  # the replicas' environment carries it (serving.app)
        os.environ["MLIT_DOWNLOAD_CACHE_GB"] = str(download_cache_gb)

    from mlit.plumbing.ports import http_port
    from mlit.serving import app as serving

    try:
        port = http_port(port, host)  # a port another app holds is named now, before Ray starts
        models = serving.collect_models(run_dir, store_root, list(model))
        key = None
        if api_key_env:
            key = os.environ.get(api_key_env)
            if not key:
                raise ValueError(f"--api-key-env {api_key_env}: that variable is not set or empty")
        cfg = serving.ServeConfig(
            models=models,
            host=host,
            port=port,
            api_key_sha256=serving.hash_key(key) if key else None,
            max_models_per_replica=max_models_per_replica,
            max_batch_size=max_batch_size,
            max_request_tokens=max_request_tokens,
            engine=engine,
            replicas=replicas,
            num_cpus=num_cpus,
            num_gpus=num_gpus,
            shards=shards,
        )
        serving.engine_choice.resolve(
            engine, num_gpus
        )  # no vLLM anywhere: say so before Ray starts
    except ValueError as err:
        console.fail(str(err))
    except OSError as err:  # a taken port: named by the one exit policy, as the environment's
        console.exit_for(err)
    url = serving.start(cfg)
    click.echo(f"serving {len(models)} model(s) at {url}/v1  (OpenAI-compatible; Ctrl-C stops)")
    for name in sorted(models):
        click.echo(f"  {name}")
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stop.wait()
    click.echo("shutting down")
    serving.stop()


@click.command("demo-judge")
@click.argument("out_dir", required=False, type=click.Path(path_type=Path))
@click.option("--steps", type=int, help="Override the fine-tuning steps.")
def demo_judge_cmd(out_dir: Path | None, steps: int | None) -> None:
    """Fine-tune the demo base model into a pairwise judge (cached) and report its accuracy; in
    OUT_DIR (default: ~/.cache/mlit/demo/judge)."""
    from mlit.demo import judge_model

    cfg = judge_model.DemoJudgeConfig()
    if steps is not None:
        cfg = replace(cfg, steps=steps)
    path = judge_model.build_demo_judge(out_dir, cfg=cfg)
    meta = json.loads((path / judge_model.MARKER).read_text())
    held = meta["held_out"]
    click.echo(
        f"demo judge: held-out pair accuracy {held['accuracy']:.1%} (chance 50%), order "
        f"consistency {held['order_consistency']:.1%} on {held['pairs']} eval-split pairs: {path}"
    )
