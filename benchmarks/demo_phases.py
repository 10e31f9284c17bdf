"""The demo's generation and judge phases, served, with the models already trained: this code
against an earlier commit, in one run.

    python benchmarks/demo_phases.py --before dba543b   # writes benchmarks/results/demo_phases.json

A cold demo run (`python sweeps/language_count.py`) first trains the 22 models into a store; then
each version of the code runs the demo again on a copy of that store's models only, so it trains
nothing and generates 1,632 answers and asks 3,072 judge calls through its own serving stack. The
versions run in turn, twice each (before, after, before, after), on the same cache (the demo base
model and judge are built once).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import host

ROOT = Path(__file__).parent.parent
OUT = Path(__file__).parent / "results" / "demo_phases.json"


def demo(code: Path, work: Path, cache: Path, store: Path, name: str) -> dict:
    env = {
        **os.environ,
        "PYTHONPATH": str(code),  # ahead of the installed checkout, in Ray's workers too
        "MLIT_CACHE": str(cache),
        "MLIT_STORE": str(store),
    }
    run = work / f"run-{name}"
    with (work / f"{name}.log").open("w") as log:
        subprocess.run(
            [sys.executable, str(code / "sweeps" / "language_count.py"), "--output", str(run)],
            env=env,
            cwd=code,
            stdout=log,
            stderr=subprocess.STDOUT,
            check=True,
        )
    phases = json.loads((run / "run.json").read_text())["phases"]
    return {k: v["seconds"] for k, v in phases.items() if isinstance(v, dict) and "seconds" in v}


def trained_only(models: Path, work: Path, name: str) -> Path:
    store = work / f"store-{name}"
    shutil.copytree(models, store / "models")
    return store


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--before", required=True, help="the commit to compare with")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--trained", type=Path, help="a store with the demo's models trained (skips the cold run)"
    )
    parser.add_argument("--cache", type=Path, help="MLIT_CACHE with the demo models built")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="mlit-demo-phases-"))
    before = work / "before"
    subprocess.run(
        ["git", "worktree", "add", "-q", "--detach", str(before), args.before], check=True
    )
    cache, trained = args.cache or work / "cache", args.trained or work / "store"
    try:
        if not args.trained:
            print("cold run: building the demo models and training the 22 models", flush=True)
            demo(ROOT, work, cache, trained, "cold")
        runs: dict[str, list[dict]] = {"before": [], "after": []}
        for i in range(args.rounds):
            for label, code in (("before", before), ("after", ROOT)):
                store = trained_only(trained / "models", work, f"{label}{i}")
                runs[label].append(demo(code, work, cache, store, f"{label}{i}"))
                print(label, runs[label][-1], flush=True)
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(before)], check=False)

    def best(label: str, phase: str) -> float:
        return min(r[phase] for r in runs[label])

    report = {
        "machine": host.describe(),
        "before": args.before,
        "after": subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT
        ).stdout.strip(),
        "what": "demo preset, models trained: generate (1,632 answers, Serve's start included) "
        "and judge (3,072 calls); each version twice, in turn",
        "runs": runs,
        "best_s": {
            label: {p: best(label, p) for p in ("generate", "judge", "serve_start")}
            for label in runs
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
