"""The `mlit` commands that build and serve models: `demo-model`, `demo-judge`, `serve`.

Registered on the one command line in `mlit.cli`; heavy stacks are imported inside each command.
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import typer

from mlit import console


def demo_model_cmd(
    out_dir: Path = typer.Argument(
        None, help="Where to write it (default: ~/.cache/mlit/demo/base)."
    ),
    pretrain_steps: int = typer.Option(None, help="Override the pretraining steps (default 400)."),
) -> None:
    """Build the embedded default's tiny base model locally (cached; no download)."""
    from mlit import demo

    cfg = demo.DemoModelConfig()
    if pretrain_steps is not None:
        cfg = replace(cfg, pretrain_steps=pretrain_steps)
    target = out_dir or demo.default_dir()
    cached = demo.is_built(target, cfg)
    path = demo.build_demo_model(target, cfg)
    meta = json.loads((path / demo.MARKER).read_text())
    state = "cached" if cached else f"built in {meta['seconds']} s"
    typer.echo(
        f"demo base model ({meta['parameters']:,} parameters, final pretraining loss "
        f"{meta['loss_last']:.2f}), {state}: {path}"
    )


def serve_cmd(
    run_dir: Path = typer.Argument(None, help="A run folder: serve every model of the run."),
    model: list[str] = typer.Option(
        None, "--model", help="NAME=PATH to serve (repeatable); PATH may be 'demo'."
    ),
    store_root: str = typer.Option(None, "--store", help="Also serve every model in this store."),
    host: str = typer.Option("127.0.0.1", help="Bind address (0.0.0.0 exposes it)."),
    port: int = typer.Option(8000, help="HTTP port."),
    api_key_env: str = typer.Option(
        None, help="Environment variable holding the API key; requests without it get 401."
    ),
    max_models_per_replica: int = typer.Option(4, help="Models kept loaded per replica (LRU)."),
    max_batch_size: int = typer.Option(
        64, help="Most requests decoded together per model (1 turns batching off)."
    ),
    engine: str = typer.Option(
        "hf",
        help="hf (continuous batching of our own), vllm (needs `make vllm-env`), or auto "
        "(vllm where it is installed and replicas have a GPU).",
    ),
    replicas: int = typer.Option(1, help="Model-server replicas."),
    num_cpus: float = typer.Option(1.0, help="CPUs per replica."),
    num_gpus: float = typer.Option(0.0, help="GPUs (or a fraction) per replica."),
    shards: int = typer.Option(
        1,
        help="Split the models over this many model-server deployments, each with its own "
        "replicas (e.g. one per GPU: each answers its own models at the same time).",
    ),
) -> None:
    """Serve models behind an OpenAI-compatible API on Ray Serve, until Ctrl-C."""
    import signal
    import threading

    from mlit import serving

    try:
        models = serving.collect_models(run_dir, store_root, model or [])
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
            engine=engine,
            replicas=replicas,
            num_cpus=num_cpus,
            num_gpus=num_gpus,
            shards=shards,
        )
        serving.vllm_engine.resolve(engine, num_gpus)  # no vLLM anywhere: say so before Ray starts
    except ValueError as err:
        console.fail(str(err))
    url = serving.start(cfg)
    typer.echo(f"serving {len(models)} model(s) at {url}/v1  (OpenAI-compatible; Ctrl-C stops)")
    for name in sorted(models):
        typer.echo(f"  {name}")
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stop.wait()
    typer.echo("shutting down")
    serving.stop()


def demo_judge_cmd(
    out_dir: Path = typer.Argument(
        None, help="Where to write it (default: ~/.cache/mlit/demo/judge)."
    ),
    steps: int = typer.Option(None, help="Override the fine-tuning steps."),
) -> None:
    """Fine-tune the demo base model into a pairwise judge (cached) and report its accuracy."""
    from mlit import demo_judge

    cfg = demo_judge.DemoJudgeConfig()
    if steps is not None:
        cfg = replace(cfg, steps=steps)
    path = demo_judge.build_demo_judge(out_dir, cfg=cfg)
    meta = json.loads((path / demo_judge.MARKER).read_text())
    held = meta["held_out"]
    typer.echo(
        f"demo judge: held-out pair accuracy {held['accuracy']:.1%} (chance 50%), order "
        f"consistency {held['order_consistency']:.1%} on {held['pairs']} eval-split pairs: {path}"
    )
