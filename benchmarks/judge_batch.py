"""Batch judging as it grows: 10k, 100k and 1M judge calls through the Batch API path.

    python benchmarks/judge_batch.py                 # writes benchmarks/results/judge_batch.json
    python benchmarks/judge_batch.py --sizes 10000   # a quick look

Each size judges N/2 synthetic pairs (both orders: N calls) with `mlit.judging.judge.judge_pairs` in
batch mode against the loopback Batch API of tests/judge_server.py, run in its own process so
that its work is not counted as mlit's: JSONL lines written and split at OpenAI's 50,000
requests, intents and batch ids filed in a local store, results read back through the online
parser and stored as verdicts, then the judgments table built. Reported per size: wall time,
mlit's CPU seconds, mlit's peak memory (RSS), the batches, and a rerun (nothing asked: every
verdict from the store).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import host

ROOT = Path(__file__).resolve().parent.parent
OUT = Path(__file__).parent / "results" / "judge_batch.json"
SERVER = f"""
import sys, time
sys.path.insert(0, {str(ROOT / "tests")!r})
from judge_server import Script, start
script = Script()
script.batch_delay_s = 0.0
server, url = start(script)
print(url, flush=True)
time.sleep(86400)
"""


def _pairs(n: int):
    from mlit.judging.judge import Pair

    return [
        Pair(
            f"model-{i % 50}",
            "mono-en",
            "en",
            f"e{i}",
            f"Question {i}: how would you explain topic {i % 617} to a student?",
            f"good answer {i} " + "with some detail " * 8,
            f"other answer {i} " + "with other detail " * 8,
            f"c{i}",
            f"b{i}",
        )
        for i in range(n)
    ]


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measure(calls: int, url: str) -> dict:
    from mlit.judging import judge
    from mlit.judging.judge import Judge
    from mlit.providers import batch_api
    from mlit.store.artifacts import Store

    pairs = _pairs(calls // 2)
    with tempfile.TemporaryDirectory() as root:
        store = Store(root)
        j = Judge("openai/good", api_base=url)
        opts = batch_api.BatchOptions(poll_s=0.2, max_poll_s=1.0)
        report = batch_api.Report()
        start, cpu = time.perf_counter(), _cpu()
        frame = judge.judge_pairs(pairs, j, store, progress=False, batch=opts, report=report)
        wall, used = time.perf_counter() - start, _cpu() - cpu
        assert (frame["verdict"] != "error").all() and frame.height == calls // 2
        start = time.perf_counter()
        again = judge.judge_pairs(pairs, j, store, progress=False, batch=opts)
        rerun = time.perf_counter() - start
        assert again["cached_1"].all()
    return {
        "calls": calls,
        "wall_s": round(wall, 1),
        "mlit_cpu_s": round(used, 1),
        "us_per_call_cpu": round(used / calls * 1e6, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "batches": report.submitted,
        "rerun_s": round(rerun, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    server = subprocess.Popen(
        [sys.executable, "-c", SERVER], stdout=subprocess.PIPE, text=True, cwd=ROOT
    )
    try:
        url = server.stdout.readline().strip()
        rows = []
        for n in (int(s) for s in args.sizes.split(",")):
            row = measure(n, url)
            print(json.dumps(row), flush=True)
            rows.append(row)
    finally:
        server.kill()
    result = {
        "machine": host.describe(),
        "note": "mlit's side of batch judging; the loopback Batch API runs in its own process",
        "sizes": rows,
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
