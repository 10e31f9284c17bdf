"""The cold demo's console in a log file (issue 52): how many lines it prints, here and on a
machine many times slower.

    python benchmarks/demo_console.py     # writes benchmarks/results/demo_console.json (~8 min)

Runs `python sweeps/language_count.py` cold (fresh cache, store and run folder) with stdout and
stderr to a file, as `nohup` or a CI log would take them, and counts the lines. Then again cold
with the heartbeat's first gap at 5 s instead of 60 s: on this machine that prints what a machine
12 times slower prints (its phases 12 times longer, measured in heartbeat gaps), the case of a
demo under load (a base model build of 20 minutes instead of 90 s).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import host

ROOT = Path(__file__).parent.parent
OUT = Path(__file__).parent / "results" / "demo_console.json"
LIMIT = 40


def cold(heartbeat_s: float | None) -> dict:
    work = Path(tempfile.mkdtemp(prefix="mlit-demo-console-"))
    env = {**os.environ, "MLIT_CACHE": str(work / "cache"), "MLIT_STORE": str(work / "store")}
    if heartbeat_s is not None:
        env["MLIT_HEARTBEAT_S"] = str(heartbeat_s)
    log = work / "console.log"
    start = time.time()
    with log.open("w") as fh:
        subprocess.run(
            [sys.executable, str(ROOT / "sweeps" / "language_count.py"), "--output",
             str(work / "run")],
            env=env, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, check=True,
        )  # fmt: skip
    lines = log.read_text().splitlines()
    return {
        "heartbeat_first_gap_s": heartbeat_s or 60.0,
        "seconds": round(time.time() - start, 1),
        "lines": len(lines),
        "heartbeat_lines": sum("still running" in ln for ln in lines),
        "within_limit": len(lines) <= LIMIT,
        "console": lines,
    }


def main() -> None:
    runs = [cold(None), cold(5.0)]
    result = {
        "machine": host.describe(),
        "what": "the cold demo's console written to a file (not a terminal): lines printed",
        "limit": LIMIT,
        "runs": runs,
    }
    OUT.write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n")
    for r in runs:
        print(f"first gap {r['heartbeat_first_gap_s']:>4} s: {r['lines']} lines "
              f"({r['heartbeat_lines']} heartbeats) in {r['seconds']} s")  # fmt: skip
    if not all(r["within_limit"] for r in runs):
        sys.exit(f"over {LIMIT} lines")


if __name__ == "__main__":
    main()
