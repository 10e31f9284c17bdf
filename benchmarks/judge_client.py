"""The judge client's own speed (issue 49): online judge calls per second against an instant
OpenAI-compatible endpoint on loopback, litellm's path against the direct one, beside a plain
aiohttp client on the same endpoint, in one run.

    python benchmarks/judge_client.py          # writes benchmarks/results/judge_client.json
    python benchmarks/judge_client.py --pairs 512
    python benchmarks/judge_client.py --memory 500000   # 1M calls online: peak memory (~8 min)

The endpoint is tests/judge_server.py in a process of its own (its work is not the client's).
Each path judges the same pairs (both orders: the demo's 3,072 calls by default) with
`mlit.judging.judge.judge_pairs` into a fresh store, at concurrency 32; reported: calls/s, the
client's CPU ms per call, and the share of the plain client's rate.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import host

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
OUT = Path(__file__).parent / "results" / "judge_client.json"
SERVER = f"""
import sys, time
sys.path.insert(0, {str(ROOT / "tests")!r})
from judge_server import Script, start
server, url = start(Script())
print(url, flush=True)
time.sleep(86400)
"""
BODY = {
    "model": "good",
    "messages": [{"role": "user", "content": "Answer 1: good"}],
    "max_tokens": 2,
}


async def _plain(url: str, calls: int, concurrency: int = 32) -> float:
    import aiohttp

    async with aiohttp.ClientSession() as session:
        gate = asyncio.Semaphore(concurrency)

        async def one() -> None:
            async with gate, session.post(f"{url}/chat/completions", json=BODY) as resp:
                await resp.json()

        start = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(calls)))
        return calls / (time.perf_counter() - start)


def _judge(url: str, pairs: int, direct: bool) -> dict:
    from helpers import judge_pairs

    from mlit.judging import judge
    from mlit.providers import llm
    from mlit.store.artifacts import Store

    llm.DIRECT = direct
    work = judge_pairs(pairs)
    j = judge.Judge("openai/good", api_base=url, concurrency=32)
    cpu = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    frame = judge.judge_pairs(work, j, Store(tempfile.mkdtemp()), progress=False)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_SELF)
    used = after.ru_utime + after.ru_stime - cpu.ru_utime - cpu.ru_stime
    calls = 2 * pairs
    assert (frame["verdict"] != "error").all()
    return {
        "calls": calls,
        "calls_per_s": round(calls / wall, 1),
        "cpu_ms_per_call": round(1000 * used / calls, 2),
    }


def _memory(url: str, pairs: int) -> dict:
    """One online judge phase of ``2 * pairs`` calls through the direct path: its peak resident
    memory (the pairs, their answers and every verdict included) and its rate."""
    from mlit.judging import judge
    from mlit.providers import llm
    from mlit.store.artifacts import Store

    llm.library()
    work = [
        judge.Pair(
            f"model-{i % 50}", "mono-en", "en", f"e{i}",
            f"Question {i}: how would you explain topic {i % 617} to a student?",
            f"good answer {i} " + "with some detail " * 8,
            f"other answer {i} " + "with other detail " * 8, f"c{i}", f"b{i}",
        )
        for i in range(pairs)
    ]  # fmt: skip
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    start = time.perf_counter()
    frame = judge.judge_pairs(
        work,
        judge.Judge("openai/good", api_base=url, concurrency=32),
        Store(tempfile.mkdtemp(prefix="mlit-judge-client-")),
        progress=False,
    )
    wall = time.perf_counter() - start
    return {
        "calls": 2 * pairs,
        "seconds": round(wall, 1),
        "calls_per_s": round(2 * pairs / wall, 1),
        "peak_rss_mb_before_judging": before,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024,
        "errors": int((frame["verdict"] == "error").sum()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", type=int, default=1536, help="pairs (calls: twice this)")
    parser.add_argument(
        "--memory",
        type=int,
        metavar="PAIRS",
        help="only one online phase of 2 x PAIRS calls, its peak memory (500000: 1M calls, "
        "~8 min); writes judge_client_memory.json",
    )
    args = parser.parse_args()
    server = subprocess.Popen([sys.executable, "-c", SERVER], stdout=subprocess.PIPE, text=True)
    url = server.stdout.readline().strip()
    if args.memory:
        try:
            found = _memory(url, args.memory)
        finally:
            server.kill()
        report = {"machine": host.describe(), "mode": "online, direct path", **found}
        report["goal: < 2 GB resident"] = found["peak_rss_mb"] < 2048
        OUT.with_name("judge_client_memory.json").write_text(json.dumps(report, indent=1) + "\n")
        print(json.dumps(report, indent=1))
        return
    try:
        from mlit.providers import llm

        llm.library()  # imported before any timing
        _judge(url, 16, True)  # warm: the session, the store, the event loop's first use
        plain = asyncio.run(_plain(url, 2 * args.pairs))
        litellm_path = _judge(url, args.pairs, direct=False)
        direct = _judge(url, args.pairs, direct=True)
        plain_after = asyncio.run(_plain(url, 2 * args.pairs))
    finally:
        server.kill()
    reference = (plain + plain_after) / 2
    report = {
        "machine": host.describe(),
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "endpoint": "tests/judge_server.py on loopback (ThreadingHTTPServer, its own process)",
        "plain_aiohttp_calls_per_s": [round(plain, 1), round(plain_after, 1)],
        "litellm_path": {
            **litellm_path,
            "share_of_plain": round(litellm_path["calls_per_s"] / reference, 3),
        },
        "direct_path": {**direct, "share_of_plain": round(direct["calls_per_s"] / reference, 3)},
        "goals": {
            "direct: >= 500 calls/s": direct["calls_per_s"] >= 500,
            "direct: >= 25% of plain aiohttp": direct["calls_per_s"] >= 0.25 * reference,
        },
    }
    OUT.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
