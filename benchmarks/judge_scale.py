"""The judge phase as it grows, online and in batch, on two checkouts of mlit in one run.

    python benchmarks/judge_scale.py --tree before=/tmp/mlit-before --tree after=.
    python benchmarks/judge_scale.py --sizes 10000 --modes online     # a quick look

Each (checkout, mode, size) judges N/2 synthetic pairs (both orders: N calls) with
`mlit.judging.judge.judge_pairs` into a fresh store, in a process of its own (its peak memory is
its own), against one loopback provider (tests/judge_server.py, its own process too: its work is
not the client's) that answers at once, online or through its Batch API (polled every 0.2 s).
Reported: calls/s, the client's CPU ms per call, and its peak resident memory with what it held
before judging (the pairs, the libraries). ``--skip`` leaves out slow cells, e.g. the old
litellm path online at 100k calls (~8 min at its ~200 calls/s).

It replaces `judge_batch.py` (its `results/judge_batch.json` stays: 3,228 MB at 1M batch calls,
peak memory counted over a rerun in the same process).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import host

ROOT = Path(__file__).resolve().parent.parent
OUT = Path(__file__).parent / "results" / "judge_scale.json"
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
# One cell, run with the checkout first on sys.path; the API it calls is the same in both.
CELL = """
import json, resource, sys, tempfile, time
url, mode, calls = sys.argv[1], sys.argv[2], int(sys.argv[3])
import mlit
from mlit.judging import judge
from mlit.providers import batch_api
from mlit.store.artifacts import Store
import litellm  # imported before the clock starts, on both paths

pairs = [
    judge.Pair(
        f"model-{i % 50}", "mono-en", "en", f"e{i}",
        f"Question {i}: how would you explain topic {i % 617} to a student?",
        f"good answer {i} " + "with some detail " * 8,
        f"other answer {i} " + "with other detail " * 8, f"c{i}", f"b{i}",
    )
    for i in range(calls // 2)
]
def cpu():
    u = resource.getrusage(resource.RUSAGE_SELF)
    return u.ru_utime + u.ru_stime
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
opts = batch_api.BatchOptions(poll_s=0.2, max_poll_s=1.0) if mode == "batch" else None
j = judge.Judge("openai/good", api_base=url, concurrency=32)
store = Store(tempfile.mkdtemp(prefix="mlit-judge-scale-"))
start, used = time.perf_counter(), cpu()
frame = judge.judge_pairs(pairs, j, store, progress=False, batch=opts)
wall, used = time.perf_counter() - start, cpu() - used
print(json.dumps({
    "mlit": mlit.__file__,
    "seconds": round(wall, 1),
    "calls_per_s": round(calls / wall, 1),
    "cpu_ms_per_call": round(1000 * used / calls, 3),
    "peak_rss_mb_before_judging": before,
    "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024,
    "errors": int((frame["verdict"] == "error").sum()),
}))
"""


def cell(tree: Path, url: str, mode: str, calls: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree), "TQDM_DISABLE": "1"}
    done = subprocess.run(
        [sys.executable, "-c", CELL, url, mode, str(calls)],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise SystemExit(f"{tree} {mode} {calls}: failed\n{done.stderr[-3000:]}")
    found = json.loads(done.stdout.strip().splitlines()[-1])
    if not found.pop("mlit").startswith(str(tree.resolve())):
        raise SystemExit(f"{tree}: mlit was imported from elsewhere")
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tree", action="append", metavar="NAME=PATH", default=[])
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--modes", default="online,batch")
    parser.add_argument(
        "--skip", action="append", default=[], metavar="NAME:MODE:SIZE", help="a cell left out"
    )
    parser.add_argument(
        "--extra", action="append", default=[], metavar="NAME:MODE:SIZE", help="a cell added"
    )
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    trees = dict(t.split("=", 1) for t in args.tree) or {"current": str(ROOT)}
    cells = [
        (name, mode, int(size))
        for name in trees
        for mode in args.modes.split(",")
        for size in args.sizes.split(",")
        if f"{name}:{mode}:{size}" not in args.skip
    ] + [(n, m, int(s)) for n, m, s in (e.split(":") for e in args.extra)]
    server = subprocess.Popen([sys.executable, "-c", SERVER], stdout=subprocess.PIPE, text=True)
    rows = []
    try:
        url = server.stdout.readline().strip()
        for name, mode, calls in cells:
            row = {"tree": name, "mode": mode, "calls": calls}
            row.update(cell(Path(trees[name]).resolve(), url, mode, calls))
            print(json.dumps(row), flush=True)
            rows.append(row)
    finally:
        server.kill()
    result = {
        "machine": host.describe(),
        "trees": trees,
        "note": "the judge phase's client side; the loopback provider runs in its own process",
        "cells": rows,
        "left_out": args.skip,
    }
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
