"""Issue 54's acceptance: the demo run with a contributor's bug injected at run time, outside
mlit's files (`protocol_injection/sitecustomize.py`: a linear schedule forced onto the Trainer,
temperature and top-p swapped in the bodies the generation client sends). Its run.json must
report neither "constant" nor "p=0.9, T=0.7".

    python benchmarks/protocol_injected.py   # ~8 min; writes results/protocol_injected.json

The demo runs in a fresh store (so that it trains), with the cached demo base model and judge.
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

ROOT = Path(__file__).resolve().parent.parent
OUT = Path(__file__).parent / "results" / "protocol_injected.json"


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="mlit-injected-"))
    hook = str(Path(__file__).parent / "protocol_injection")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(p for p in (hook, os.environ.get("PYTHONPATH")) if p),
        "MLIT_STORE": str(work / "store"),
    }
    start = time.time()
    done = subprocess.run(
        [sys.executable, str(ROOT / "sweeps" / "language_count.py"), "--output", str(work / "run")],
        env=env,
        cwd=work,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise SystemExit(f"the demo failed:\n{done.stderr[-3000:]}")
    run = json.loads((work / "run" / "run.json").read_text())
    items = {i["name"]: i for i in run["protocol"]}
    keep = ("learning rate", "sampling", "judge decoding", "order swap", "averages")
    found = {
        name: {k: items[name][k] for k in ("ours", "paper", "matches", "note")} for name in keep
    }
    text = json.dumps([items[n]["ours"] for n in ("learning rate", "sampling")])
    result = {
        "machine": host.describe(),
        "command": "python sweeps/language_count.py (demo preset, a fresh store), with "
        "benchmarks/protocol_injection on PYTHONPATH",
        "seconds": round(time.time() - start, 1),
        "items": found,
        "says constant": "constant" in items["learning rate"]["ours"],
        "says p=0.9, T=0.7": "p=0.9, T=0.7" in text,
        "printed at the end": [line for line in done.stdout.splitlines() if "DIFFERS" in line],
    }
    OUT.write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n")
    print(json.dumps(result, indent=1, ensure_ascii=False))
    if result["says constant"] or result["says p=0.9, T=0.7"]:
        raise SystemExit("the report did not see the injected changes")


if __name__ == "__main__":
    main()
