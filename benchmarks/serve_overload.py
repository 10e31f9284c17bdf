"""The serving layer past its capacity and across more models than fit (issue 28).

    python benchmarks/serve_overload.py       # writes benchmarks/results/serve_overload.json (~5 min)
    python benchmarks/serve_overload.py --wide-burst   # 500 requests over 22 names (~2 min)

One run, one CPU replica of the demo base model served under 12 names, 4 per replica:

- **bursts:** 200 chat requests at once over 4 names, then over all 12, three times in turn;
  model loads and wall time of each (goal: at most 24 loads over 12 models, wall within 2x of the
  4-model burst, in every pair). Each request has a connection of its own with as little client
  work as can be, so that the burst reaches the server as fast as it can take it in;
- **overload:** 1,000 concurrent chat requests while ``/healthz`` and ``/v1/models`` are each
  polled every 0.1 s: the slowest answers (goal: under 1 s), how many were refused (429) and
  how fast, how many served, and no other status;
- **slow uploads:** 600 connections with a valid key that send a 100,000-byte body one byte a
  second, while one client asks 16-token questions in turn: its p50 latency against the same
  client alone, ``/healthz`` and ``/v1/models``, and what the uploads got (408 once the body
  timeout passes).
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import multiprocessing
import os
import socket
import statistics
import time
from pathlib import Path

import httpx

from mlit.demo import base_model
from mlit.plumbing import ingress
from mlit.serving import app as serving
from mlit.serving import front

import host

OUT = Path(__file__).parent / "results" / "serve_overload.json"
NAMES = [f"demo-{i:02d}" for i in range(12)]
WIDE = [f"demo-{i:02d}" for i in range(22)]  # a paper sweep's serving phase: 22 models
PAIRS = 3  # 4-model and 12-model bursts, in turn
KEY = "bench-key"
AUTH = {"Authorization": f"Bearer {KEY}"}


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _body(model: str, i: int, tokens: int = 16) -> dict:
    return {
        "model": model,
        "messages": [{"role": "user", "content": f"Question {i}: name a fruit."}],
        "max_tokens": tokens,
        "seed": i,
        "ignore_eos": True,
    }


async def _stats(http: httpx.AsyncClient, url: str) -> dict:
    return (await http.get(f"{url}/v1/stats", headers=AUTH)).json()


async def _burst(http, url: str, port: int, models: list[str], n: int = 200) -> dict:
    """``n`` requests at once over ``models``, each on a connection of its own (`_raw_post`): an
    HTTP client library's connection pool costs this 2-core machine more than the server's work
    (httpx reusing 100 kept-alive connections took 3.7 s of CPU for 200 requests, and the same
    4-model burst 5.5 s instead of 1.8 s)."""
    before = sum((await _stats(http, url))["loads"].values())
    start = time.perf_counter()
    replies = await asyncio.gather(
        *(_raw_post(port, _body(models[i % len(models)], i)) for i in range(n))
    )
    wall = time.perf_counter() - start
    loads = sum((await _stats(http, url))["loads"].values()) - before
    statuses = [status for status, _, _ in replies]
    return {
        "models": len(models),
        "requests": n,
        "ok": statuses.count(200),
        "loads": loads,
        "wall_s": round(wall, 2),
    }


def _poll(url: str, path: str, ready, stop, out) -> None:
    """In a process of its own, as a liveness probe is: the load generator's event loop adds
    nothing. Each probe is a new connection, as a probe's is."""
    host, port = url.rsplit("/", 1)[-1].split(":")
    auth = {"Authorization": f"Bearer {KEY}"}
    waits = []
    ready.set()
    while not stop.is_set():
        start = time.perf_counter()
        try:
            conn = http.client.HTTPConnection(host, int(port), timeout=30)
            conn.request("GET", path, headers=auth)
            ok = conn.getresponse().status == 200
            conn.close()
        except OSError:
            ok = False
        waits.append(time.perf_counter() - start if ok else 30.0)
        time.sleep(0.1)
    out.put(waits)


class _Poller:
    """``GET path`` every 0.1 s until `result`: the liveness probe, or a client listing models."""

    def __init__(self, url: str, path: str = "/healthz"):
        ctx = multiprocessing.get_context("spawn")
        self.stop, self.out, ready = ctx.Event(), ctx.Queue(), ctx.Event()
        self.proc = ctx.Process(target=_poll, args=(url, path, ready, self.stop, self.out))
        self.proc.start()
        # Started and imported: a process still starting would take the CPU the measured burst
        # needs on this 2-core machine.
        ready.wait(60)

    def result(self) -> list[float]:
        self.stop.set()
        waits = self.out.get(timeout=60)
        self.proc.join()
        return waits


async def _raw_post(port: int, body: dict) -> tuple[int, float, str | None]:
    """One chat request over a connection of its own, with as little client work as can be (an
    HTTP client library costs the 2-core machine more than the refusal it measures)."""
    start = time.perf_counter()
    payload = json.dumps(body).encode()
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n"
        "Connection: close\r\n\r\n"
    )
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=2**20)
    writer.write(head.encode() + payload)
    status_line = await reader.readline()
    elapsed = time.perf_counter() - start  # the status line: the answer's verdict
    headers = (await reader.readuntil(b"\r\n\r\n")).decode().lower().split("\r\n")
    retry = next((h.split(":", 1)[1].strip() for h in headers if h.startswith("retry-after")), None)
    await reader.read()
    writer.close()
    return int(status_line.split()[1]), elapsed, retry


async def _overload(url: str, port: int, n: int = 1000, names: list[str] = NAMES[:4]) -> dict:
    poll, listing = _Poller(url), _Poller(url, "/v1/models")
    await asyncio.sleep(1)
    start = time.perf_counter()
    replies = await asyncio.gather(
        *(_raw_post(port, _body(names[i % len(names)], i)) for i in range(n))
    )
    wall = time.perf_counter() - start
    health, models = poll.result(), listing.result()
    refused = [t for status, t, _ in replies if status == 429]
    served = [t for status, t, _ in replies if status == 200]
    return {
        "requests": n,
        "served": len(served),
        "refused_429": len(refused),
        "other_status": sorted({s for s, _, _ in replies} - {200, 429}),
        "refused_with_retry_after": sum(1 for s, _, h in replies if s == 429 and h),
        "refusal_p50_s": round(statistics.median(refused), 3) if refused else None,
        "refusal_p99_s": round(sorted(refused)[int(0.99 * len(refused))], 3) if refused else None,
        "refusal_max_s": round(max(refused), 3) if refused else None,
        "served_p50_s": round(statistics.median(served), 2) if served else None,
        "wall_s": round(wall, 1),
        "healthz_polls": len(health),
        "healthz_max_s": round(max(health), 3),
        "models_polls": len(models),
        "models_max_s": round(max(models), 3),
    }


async def _asker(http, url: str, seconds: float) -> list[float]:
    times, i, deadline = [], 0, time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        r = await http.post(f"{url}/v1/chat/completions", json=_body(NAMES[0], i), headers=AUTH)
        r.raise_for_status()
        times.append(time.perf_counter() - start)
        i += 1
    return times


async def _slow_upload(port: int, stop: asyncio.Event) -> str:
    """One connection that declares 100,000 bytes and sends one a second; returns its status."""
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError as err:
        return f"connect: {err.__class__.__name__}"
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n"
        "Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n{"
    )
    writer.write(head.encode())
    status = "open"
    try:
        while not stop.is_set():
            try:
                line = await asyncio.wait_for(reader.readline(), 1.0)
                if line:
                    status = line.decode().split(" ")[1]
                    break
                status = "closed"
                break
            except TimeoutError:
                writer.write(b" ")
                await writer.drain()
    except OSError:
        status = "reset"
    writer.close()
    return status


async def _slow_uploads(http, url: str, port: int, n: int = 600, seconds: float = 20) -> dict:
    alone = await _asker(http, url, 8)
    stop = asyncio.Event()
    uploads = [asyncio.create_task(_slow_upload(port, stop)) for _ in range(n)]
    await asyncio.sleep(2)  # every upload connected and trickling
    poll, listing = _Poller(url), _Poller(url, "/v1/models")
    beside = await _asker(http, url, seconds)
    health, models = poll.result(), listing.result()
    await asyncio.wait(uploads, timeout=front.BODY_TIMEOUT_S + 10)  # each answered 408
    stop.set()
    statuses = await asyncio.gather(*uploads)
    return {
        "uploads": n,
        "client_alone_p50_s": round(statistics.median(alone), 3),
        "client_beside_uploads_p50_s": round(statistics.median(beside), 3),
        "healthz_max_s": round(max(health), 3),
        "models_max_s": round(max(models), 3),
        "upload_statuses": {s: statuses.count(s) for s in sorted(set(statuses))},
    }


async def _wide(url: str, port: int) -> dict:
    """A sweep's serving phase past capacity: 500 requests at once over its 22 models."""
    limits = httpx.Limits(max_connections=2000, max_keepalive_connections=100)
    async with httpx.AsyncClient(timeout=600, limits=limits) as http:
        await _burst(http, url, port, WIDE[:4], 8)  # warm-up: the first four loaded
        return {"wide_burst": await _overload(url, port, 500, WIDE)}


async def _run(url: str, port: int) -> dict:
    limits = httpx.Limits(max_connections=2000, max_keepalive_connections=100)
    async with httpx.AsyncClient(timeout=600, limits=limits) as http:
        await _burst(http, url, port, NAMES[:4], 8)  # warm-up: the first four loaded
        pairs = []
        for _ in range(PAIRS):  # the machine is noisy: the ratio is taken pair by pair
            four = await _burst(http, url, port, NAMES[:4])
            pairs.append((four, await _burst(http, url, port, NAMES)))
        overload = await _overload(url, port)
        uploads = await _slow_uploads(http, url, port)
        stats = await _stats(http, url)
    ratios = [round(twelve["wall_s"] / four["wall_s"], 2) for four, twelve in pairs]
    return {
        "bursts": [{"4_models": four, "12_models": twelve} for four, twelve in pairs],
        "wall_ratio_12_over_4": ratios,
        "wall_ratio_median": statistics.median(ratios),
        "loads_12_models_max": max(twelve["loads"] for _, twelve in pairs),
        "overload": overload,
        "slow_uploads": uploads,
        "gateway_refused": stats["refused"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument(
        "--wide-burst",
        action="store_true",
        help="only a sweep's serving phase past capacity (issue 53): 500 requests at once over "
        "22 names, /healthz and /v1/models probed; writes serve_overload_wide.json",
    )
    args = parser.parse_args()
    names = WIDE if args.wide_burst else NAMES
    out = args.out or (OUT.with_name("serve_overload_wide.json") if args.wide_burst else OUT)

    import ray
    from ray import serve

    model_dir = base_model.build_demo_model()
    ingress.install()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    port = _port()
    cfg = serving.ServeConfig(
        models={name: str(model_dir) for name in names},
        port=port,
        api_key_sha256=serving.hash_key(KEY),
        max_models_per_replica=4,
        num_cpus=1,
    )
    url = serving.start(cfg)
    # The clients run below an interactive process: on a real deployment they are on other
    # machines, and here they share the server's two cores. Still above the server itself (Ray
    # starts HAProxy, the gateway and the replica at nice 15), as the probes started from here
    # inherit the level and would otherwise time their own wait for a core: at 19, refusals took
    # 0.85-1.02 s at most and /healthz 0.73-0.89 s, against 0.68-0.93 s and 0.56-0.83 s at 10.
    os.nice(10)
    report = asyncio.run(_wide(url, port) if args.wide_burst else _run(url, port))
    serving.stop()
    serve.shutdown()
    ray.shutdown()
    if args.wide_burst:
        wide = report["wide_burst"]
        report = {
            "machine": host.describe(),
            "model": "demo base model under 22 names, one replica (1 CPU), 4 models per replica",
            **report,
            "goals": {
                "/healthz always < 1 s": wide["healthz_max_s"] < 1,
                "/v1/models always < 1 s": wide["models_max_s"] < 1,
                "refusals (429) within 1 s": (wide["refusal_max_s"] or 0) < 1,
                "only 200 and 429": not wide["other_status"],
            },
        }
        _write(out, report)
        return
    overload, uploads = report["overload"], report["slow_uploads"]
    report = {
        "machine": host.describe(),
        "model": "demo base model under 12 names, one replica (1 CPU), 4 models per replica",
        **report,
        "goals": {
            "12-model burst: <= 24 loads": report["loads_12_models_max"] <= 24,
            "12-model burst: wall <= 2x the 4-model burst (every pair)": (
                max(report["wall_ratio_12_over_4"]) <= 2
            ),
            "overload: /healthz always < 1 s": overload["healthz_max_s"] < 1,
            "overload: /v1/models always < 1 s": overload["models_max_s"] < 1,
            "overload: refusals (429) within 1 s": (overload["refusal_max_s"] or 0) < 1,
            "overload: only 200 and 429": not overload["other_status"],
            "slow uploads: /healthz < 1 s": uploads["healthz_max_s"] < 1,
            "slow uploads: /v1/models < 1 s": uploads["models_max_s"] < 1,
            "slow uploads: another client not slowed 2x": uploads["client_beside_uploads_p50_s"]
            <= 2 * uploads["client_alone_p50_s"],
        },
    }
    _write(out, report)


def _write(out: Path, report: dict) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
