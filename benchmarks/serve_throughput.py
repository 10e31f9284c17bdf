"""Dynamic batching on one CPU replica: 32 concurrent requests of 64 new tokens, batched vs not.

    python benchmarks/serve_throughput.py      # writes benchmarks/results/serve_throughput.json

The demo base model (built locally, cached) is served by the same Ray Serve app as `mlit serve`,
once with dynamic batching (max batch 32) and once with batching off (max batch 1). Each run
sends 32 concurrent chat requests for exactly 64 new tokens each (``ignore_eos``, as in vLLM, so both
runs generate the same number of tokens) with nucleus sampling and its own seed, and measures generated tokens per
second over the wall time of the whole burst. Goal: batched at least 4x faster on a 2-core CPU.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from pathlib import Path

import httpx

from mlit.demo import base_model
from mlit.serving import app as serving

import host

OUT = Path(__file__).parent / "results" / "serve_throughput.json"
CONCURRENCY, NEW_TOKENS = 32, 64


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _burst(url: str) -> tuple[float, int]:
    async with httpx.AsyncClient(timeout=600) as http:
        bodies = [
            {
                "model": "demo",
                "messages": [{"role": "user", "content": f"Tell me about topic number {i}."}],
                "max_tokens": NEW_TOKENS,
                "temperature": 0.7,  # the paper's nucleus sampling
                "top_p": 0.9,
                "seed": i,
                "ignore_eos": True,
            }
            for i in range(CONCURRENCY)
        ]
        start = time.perf_counter()
        rs = await asyncio.gather(
            *(http.post(f"{url}/v1/chat/completions", json=b) for b in bodies)
        )
        wall = time.perf_counter() - start
    tokens = sum(r.json()["usage"]["completion_tokens"] for r in rs)
    return wall, tokens


def measure(model_dir: Path, max_batch: int, port: int) -> dict:
    cfg = serving.ServeConfig(
        models={"demo": str(model_dir)},
        port=port,
        max_batch_size=max_batch,
        num_cpus=1,
    )
    url = serving.start(cfg)
    asyncio.run(_burst(url))  # warm-up: model load, first batches
    runs = sorted(asyncio.run(_burst(url)) for _ in range(3))
    wall, tokens = runs[1]  # the median of three bursts
    sizes = httpx.get(f"{url}/v1/stats").json()["batch_sizes"]
    serving.stop()
    return {
        "max_batch_size": max_batch,
        "wall_s": round(wall, 3),
        "tokens": tokens,
        "tokens_per_s": round(tokens / wall, 1),
        "largest_batches": sorted(sizes)[-4:],
    }


def main() -> None:
    import ray
    from ray import serve

    model_dir = base_model.build_demo_model()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    port = _port()
    batched = measure(model_dir, CONCURRENCY, port)
    unbatched = measure(model_dir, 1, port)
    serve.shutdown()
    ray.shutdown()
    ratio = batched["tokens_per_s"] / unbatched["tokens_per_s"]
    report = {
        "machine": host.describe(),
        "model": "demo base model (Llama-style, ~0.4M parameters), one replica, 1 CPU",
        "requests": CONCURRENCY,
        "max_new_tokens": NEW_TOKENS,
        "batched": batched,
        "unbatched": unbatched,
        "ratio": round(ratio, 2),
        "goal": ">= 4x",
        "goal_met": ratio >= 4,
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
