"""A lost training worker costs minutes, not a model: the same sweep undisturbed and with a worker
SIGKILLed half way, compared.

    python benchmarks/resume.py          # writes benchmarks/results/resume.json (~15 min, 2 cores)

Both runs are ``sweeps/monolingual.py --languages en,es --max-steps 600 --checkpoint-every 100``
on fresh stores. In the second, the training worker of the first model to reach step 300 (its
checkpoint in the store) is SIGKILLed; Tune retries the trial, which goes on from that checkpoint.
The report: each run's return code and phase times, ``resumed_from_step`` and attempts from
``train.parquet``, the largest weight difference between the two runs' models, whether the
scores are equal, and the time the loss cost.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import host

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "benchmarks" / "results" / "resume.json"
FLAGS = ["--languages", "en,es", "--max-steps", "600", "--checkpoint-every", "100"]
KILL_AT = 300


def sweep(work: Path, name: str, kill: bool) -> dict:
    store, run = work / f"store-{name}", work / f"run-{name}"
    killed: dict = {}
    done = threading.Event()

    def kill_half_way() -> None:
        start = time.time()
        while not done.is_set():
            for manifest in store.glob(f"checkpoints/*/step-{KILL_AT:06d}/_CHECKPOINT.json"):
                key = manifest.parent.parent.name
                first = json.loads((manifest.parent.parent / "attempts" / "001.json").read_text())
                os.kill(first["pid"], signal.SIGKILL)
                killed.update(model_key=key, pid=first["pid"], at_s=round(time.time() - start, 1))
                return
            time.sleep(0.1)

    watcher = threading.Thread(target=kill_half_way, daemon=True)
    if kill:
        watcher.start()
    where = ["--store", str(store), "--output", str(run)]
    start = time.time()
    proc = subprocess.run(
        [sys.executable, str(ROOT / "sweeps" / "monolingual.py"), *FLAGS, *where],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    wall = time.time() - start
    done.set()
    meta = json.loads((run / "run.json").read_text()) if (run / "run.json").exists() else {}
    return {
        "rc": proc.returncode,
        "wall_s": round(wall, 1),
        "phases_s": {
            k: v.get("seconds") if isinstance(v, dict) else v
            for k, v in meta.get("phases", {}).items()
        },
        "train_phase": meta.get("phases", {}).get("train"),
        "killed": killed or None,
        "console": [line for line in proc.stdout.splitlines() if "[train]" in line],
        "stderr_tail": proc.stderr[-1500:] if proc.returncode else "",
        "store": str(store),
        "run": str(run),
    }


def compare(a: dict, b: dict) -> dict:
    import polars as pl
    from safetensors.torch import load_file

    from mlit.store.artifacts import Store

    train_a = pl.read_parquet(Path(a["run"]) / "train.parquet")
    train_b = pl.read_parquet(Path(b["run"]) / "train.parquet")
    diffs = {}
    for key in train_a["model_key"]:
        wa = load_file(str(Store(a["store"]).local_model_dir(key) / "model.safetensors"))
        wb = load_file(str(Store(b["store"]).local_model_dir(key) / "model.safetensors"))
        diffs[key] = max(float((wa[k] - wb[k]).abs().max()) for k in wa)
    scores_a = pl.read_parquet(Path(a["run"]) / "scores.parquet")
    scores_b = pl.read_parquet(Path(b["run"]) / "scores.parquet")
    return {
        "train_parquet_killed_run": train_b.select(
            "mixture", "model_key", "status", "resumed_from_step", "attempts", "wall_time_s"
        ).to_dicts(),
        "max_weight_difference": diffs,
        "scores_equal": scores_a.equals(scores_b),
    }


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="mlit-resume-"))
    undisturbed = sweep(work, "undisturbed", kill=False)
    killed = sweep(work, "killed", kill=True)
    report = {
        "machine": host.describe(),
        "command": "python sweeps/monolingual.py " + " ".join(FLAGS),
        "kill": f"SIGKILL of the training worker once its step-{KILL_AT} checkpoint is stored",
        "undisturbed": undisturbed,
        "killed": killed,
    }
    if undisturbed["rc"] == 0 and killed["rc"] == 0:
        report.update(compare(undisturbed, killed))
        report["time_lost_s"] = round(killed["wall_s"] - undisturbed["wall_s"], 1)
        report["train_time_lost_s"] = round(
            killed["phases_s"].get("train", 0) - undisturbed["phases_s"].get("train", 0), 1
        )
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
