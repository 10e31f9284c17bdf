"""The serving layer under sustained load: 64 closed-loop clients, some streaming, held against
the engine alone.

    python benchmarks/serve_load.py            # writes benchmarks/results/serve_load.json (~10 min)
    python benchmarks/serve_load.py --seconds 10 --clients 16 --out /tmp/load.json   # a quick look

One run measures the same app (`mlit.serving`, one replica on every core, as `mlit serve` starts it)
on the demo base model three times: under one name; under three names, so that the traffic mixes
models (each name is its own model in the replica's LRU); and under three names with
``--max-batch-size 1``; and under one name on models of the demo's shape at ~28M and ~87M
parameters (`LARGER`, random weights), whose decode step outweighs the HTTP path's fixed cost per
request as a real model's does. Then the engine alone (`engine_alone`: the hf engine driven from
this process, no HTTP, no Ray) runs the same requests on each model with as many in flight as its
one-model server's mean batch.
Each client sends a request, waits for the answer, and sends the next, for a fixed time. Every answer is 64 new tokens
(``ignore_eos``) sampled with the paper's nucleus settings; one client in four streams.

Reported per setting: requests/s, generated tokens/s, p50/p99 latency, time to first token of the
streamed answers (p50, and as a share of their p50 total), mean rows per decode step (the batch
size), model loads after warm-up, errors. Goals: the one-model server's tokens/s >= 80% of the engine
alone's (issue 30); mean batch >= 8, throughput >= 3x the batch-1 server, 0 errors, streamed time
to first token p50 <= 25% of the p50 total (issue 11).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import socket
import statistics
import tempfile
import time
from pathlib import Path

import httpx

from mlit import demo
from mlit.serving import app as serving
from mlit.serving import front

OUT = Path(__file__).parent / "results" / "serve_load.json"
MODELS = ("demo-a", "demo-b", "demo-c")
NEW_TOKENS = 64


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _body(client: int, n: int, stream: bool, models=MODELS) -> dict:
    return {
        "model": models[client % len(models)],
        "messages": [{"role": "user", "content": f"Client {client} asks question {n}."}],
        "max_tokens": NEW_TOKENS,
        "temperature": 0.7,
        "top_p": 0.9,
        "seed": client * 100_000 + n,
        "ignore_eos": True,
        "stream": stream,
    }


async def _one(http: httpx.AsyncClient, url: str, body: dict) -> dict:
    start = time.perf_counter()
    first = None
    if not body["stream"]:
        r = await http.post(f"{url}/v1/chat/completions", json=body)
        if r.status_code != 200:
            return {"error": r.status_code}
        tokens = r.json()["usage"]["completion_tokens"]
    else:
        tokens = 0
        async with http.stream("POST", f"{url}/v1/chat/completions", json=body) as r:
            if r.status_code != 200:
                return {"error": r.status_code}
            async for line in r.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                event = json.loads(line[6:])
                if "error" in event:
                    return {"error": "stream"}
                if first is None and event["choices"][0]["delta"].get("content"):
                    first = time.perf_counter() - start
                tokens = event.get("usage", {}).get("completion_tokens", tokens)
    return {
        "latency": time.perf_counter() - start,
        "ttft": first,
        "tokens": tokens,
        "stream": body["stream"],
    }


async def _load(url: str, clients: int, seconds: float, models=MODELS) -> list[dict]:
    done: list[dict] = []
    deadline = time.perf_counter() + seconds

    async def client(c: int, http: httpx.AsyncClient) -> None:
        n = 0
        while time.perf_counter() < deadline:
            done.append(await _one(http, url, _body(c, n, c % 4 == 0, models)))
            n += 1

    limits = httpx.Limits(max_connections=clients + 4)
    async with httpx.AsyncClient(timeout=600, limits=limits) as http:
        await asyncio.gather(*(client(c, http) for c in range(clients)))
    return done


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return round(values[min(len(values) - 1, int(q * len(values)))], 3)


def measure(
    model_dir: Path, max_batch: int, clients: int, seconds: float, port: int, models=MODELS
) -> dict:
    cfg = serving.ServeConfig(
        models={name: str(model_dir) for name in models}, port=port, max_batch_size=max_batch
    )
    url = serving.start(cfg)
    asyncio.run(_load(url, len(models), 2, models))  # warm-up: every model loaded once
    before = httpx.get(f"{url}/v1/stats").json()
    start = time.perf_counter()
    results = asyncio.run(_load(url, clients, seconds, models))
    wall = time.perf_counter() - start
    after = httpx.get(f"{url}/v1/stats").json()
    serving.stop()
    ok = [r for r in results if "error" not in r]
    streamed = [r for r in ok if r["stream"] and r["ttft"] is not None]
    steps = after["batch_sizes"]
    loads_after = sum(after["loads"].values()) - sum(before["loads"].values())
    stream_total = _pct([r["latency"] for r in streamed], 0.5)
    stream_ttft = _pct([r["ttft"] for r in streamed], 0.5)
    return {
        "max_batch_size": max_batch,
        "wall_s": round(wall, 1),
        "requests": len(ok),
        "errors": len(results) - len(ok),
        "requests_per_s": round(len(ok) / wall, 2),
        "tokens_per_s": round(sum(r["tokens"] for r in ok) / wall, 1),
        "latency_p50_s": _pct([r["latency"] for r in ok], 0.5),
        "latency_p99_s": _pct([r["latency"] for r in ok], 0.99),
        "streamed": len(streamed),
        "stream_ttft_p50_s": stream_ttft,
        "stream_total_p50_s": stream_total,
        "ttft_share_of_total": round(stream_ttft / stream_total, 3) if streamed else None,
        "mean_batch": round(statistics.mean(steps), 1) if steps else None,
        "reloads": loads_after,
    }


# Models of the demo's shape family at real models' cost per token (random weights, the demo
# tokenizer): name, hidden size, layers, MLP width. Their decode step outweighs the HTTP path's
# fixed cost per request as a real model's does; the served share is measured for each.
LARGER = (("~28M", 512, 8, 1408), ("~87M", 768, 12, 2048))


def larger_model(
    base: Path, out: Path, hidden: int = 512, layers: int = 8, mlp: int = 1408
) -> Path:
    """The demo model's shape family at ``hidden`` x ``layers`` (64-wide heads), random weights,
    the demo tokenizer."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    if (out / "config.json").exists():
        return out
    cfg = AutoConfig.from_pretrained(base)
    cfg.update(
        {
            "hidden_size": hidden,
            "intermediate_size": mlp,
            "num_hidden_layers": layers,
            "num_attention_heads": hidden // 64,
            "num_key_value_heads": hidden // 64,
            "head_dim": 64,
        }
    )
    import torch

    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(cfg).save_pretrained(out)
    AutoTokenizer.from_pretrained(base).save_pretrained(out)
    return out


def _parameters(model_dir: Path) -> int:
    from safetensors import safe_open

    total = 0
    for path in model_dir.glob("*.safetensors"):
        with safe_open(str(path), "pt") as f:
            names = f.keys()
            total += sum(math.prod(f.get_slice(k).get_shape()) for k in names)
    return total


def engine_alone(model_dir: Path, rows: int, seconds: float) -> dict:
    """The hf engine in this process, no HTTP and no Ray: ``rows`` closed-loop requests in flight
    (the served run's mean batch), the same prompts and sampling as the served requests, torch on
    every core. What the served path is held against."""
    import torch

    from mlit.serving import preparation
    from mlit.serving.engines.hf import HFEngine
    from mlit.serving.protocol import ChatCompletionRequest

    engine = HFEngine(max(rows, 1), os.cpu_count() or 1)
    loaded = engine.load("demo", str(model_dir))
    done: list[int] = []

    def job(client: int, n: int) -> preparation.Job:
        req = ChatCompletionRequest(**_body(client, n, False))
        messages = [m.plain() for m in req.messages]
        item = {
            "kind": "chat",
            "messages": messages,
            "sampling": req.sampling(NEW_TOKENS, req.seed),
        }
        return preparation.prepare(loaded.tokenizer, item, loaded.vocab, loaded.context)

    async def client(c: int, deadline: float) -> None:
        n = 0
        while time.perf_counter() < deadline:
            async for kind, value in engine.events(loaded, job(c, n), False):
                if kind == "done":
                    done.append(value.completion_tokens)
            n += 1

    async def run(clients: int, for_s: float) -> None:
        deadline = time.perf_counter() + for_s
        await asyncio.gather(*(client(c, deadline) for c in range(clients)))

    asyncio.run(run(rows, 2))  # warm-up
    done.clear()
    start = time.perf_counter()
    asyncio.run(run(rows, seconds))
    wall = time.perf_counter() - start
    steps = engine.stats()["batch_sizes"]
    return {
        "rows_in_flight": rows,
        "threads": torch.get_num_threads(),
        "wall_s": round(wall, 1),
        "tokens_per_s": round(sum(done) / wall, 1),
        "mean_batch": round(statistics.mean(steps), 1) if steps else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=40)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()

    import ray
    from ray import serve

    model_dir = demo.build_demo_model()
    front.install()
    ray.init(include_dashboard=False, log_to_driver=False)
    port = _port()
    batch = serving.ServeConfig.max_batch_size
    scratch = Path(tempfile.mkdtemp(prefix="mlit-larger-"))
    larger = [larger_model(model_dir, scratch / name, h, n, m) for name, h, n, m in LARGER]
    one = measure(model_dir, batch, args.clients, args.seconds, port, MODELS[:1])
    bigs = [measure(d, batch, args.clients, args.seconds, port, MODELS[:1]) for d in larger]
    normal = measure(model_dir, batch, args.clients, args.seconds, port)
    single = measure(model_dir, 1, args.clients, args.seconds, port)
    serve.shutdown()
    ray.shutdown()
    # The engine alone, after Ray is gone: nothing else runs beside it.
    alone = engine_alone(model_dir, round(one["mean_batch"] or 1), args.seconds)
    share = one["tokens_per_s"] / alone["tokens_per_s"]
    sizes = []
    for (name, hidden, layers, _), folder, big in zip(LARGER, larger, bigs, strict=True):
        big_alone = engine_alone(folder, round(big["mean_batch"] or 1), args.seconds)
        sizes.append(
            {
                "model": f"the demo's shape at {name} parameters (hidden {hidden}, {layers} "
                "layers), random weights",
                "parameters": _parameters(folder),
                "served": big,
                "engine_alone": big_alone,
                "served_share_of_engine": round(big["tokens_per_s"] / big_alone["tokens_per_s"], 3),
            }
        )
    ratio = normal["tokens_per_s"] / single["tokens_per_s"]
    report = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, no GPU",
        "model": "demo base model (Llama-style, ~0.4M parameters), one replica on every core",
        "clients": args.clients,
        "seconds": args.seconds,
        "new_tokens": NEW_TOKENS,
        "one_model": one,
        "engine_alone": alone,
        "served_share_of_engine": round(share, 3),
        "larger_models": sizes,
        "normal": normal,
        "batch_1": single,
        "throughput_ratio": round(ratio, 2),
        "goals": {
            "served >= 80% of the engine alone (one model)": share >= 0.8,
            **{
                f"served >= 80% of the engine alone ({name} model)": size["served_share_of_engine"]
                >= 0.8
                for (name, *_), size in zip(LARGER, sizes, strict=True)
            },
            "mean_batch >= 8": (normal["mean_batch"] or 0) >= 8,
            "throughput >= 3x batch 1": ratio >= 3,
            "0 errors": all(m["errors"] == 0 for m in (normal, single, one, *bigs)),
            "stream ttft p50 <= 25% of total p50": (normal["ttft_share_of_total"] or 1) <= 0.25,
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
