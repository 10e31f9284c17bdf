"""What checking the stored models of a rerun costs on S3 (issue 48), as the store grows.

A rerun's training phase checks every stored model it would reuse (`Store.check_models`). On a
real S3 server (moto) behind a proxy that adds 15 ms to every request, from a machine with an
empty download cache, for N stored models of S MB each: the seconds the check takes and the
weight-file bytes it downloads (moto's request log). Run it with this checkout (checks where the
bytes are: one listing of ETags per model) and, for the comparison, with an earlier checkout on
PYTHONPATH (each model downloaded to the driver and hashed):

    python benchmarks/model_check.py --out benchmarks/results/model_check.json
    PYTHONPATH=/path/to/old python benchmarks/model_check.py --label before --out ...

The paper plan reuses 57 distinct models of ~14 GB (a 7B model in bf16); the result extrapolates
both ways to it from the measured per-model time and bytes.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import host
import loopback

PAPER_MODELS, PAPER_MODEL_GB = 57, 14.0


def _store_class():
    try:
        from mlit.store.artifacts import Store
    except ImportError:  # an earlier checkout: the store was one module
        from mlit.store import Store
    return Store


def _model(folder: Path, mb: int) -> Path:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"max_position_embeddings": 64}))
    (folder / "model.safetensors").write_bytes(os.urandom(mb << 20))
    return folder


def _weight_bytes(log: Path, since: int) -> tuple[int, int]:
    """(weight files read, lines) in moto's log since line ``since``: each file counted once,
    however many ranged GETs read it."""
    lines = log.read_text(errors="replace").splitlines()
    paths = {
        m.group(1)
        for x in lines[since:]
        if (m := re.search(r'"GET ([^ "?]*model\.safetensors)', x))
    }
    return len(paths), len(lines)


def run(sizes: list[tuple[int, int]], latency_ms: float) -> list[dict]:
    work = Path(tempfile.mkdtemp(prefix="mlit-model-check-"))
    log = work / "moto.log"
    moto, moto_port = loopback.start_moto("mlit-check", log)
    proxy, port = loopback.start("proxy", str(moto_port), "--ms", str(latency_ms))
    os.environ.update(loopback.s3_env(port))
    Store = _store_class()
    rows = []
    try:
        for count, mb in sizes:
            store = Store(f"s3://mlit-check/n{count}-{mb}mb")
            local = _model(work / f"src-{count}-{mb}", mb)
            start = time.perf_counter()
            with ThreadPoolExecutor(max_workers=4) as pool:
                names = [f"m{i}" for i in range(count)]
                list(pool.map(store.publish_model, [local] * count, names, [{}] * count))
            publish_s = time.perf_counter() - start
            os.environ["HOME"] = str(work / f"home-{count}-{mb}")  # an empty download cache
            _, since = _weight_bytes(log, 0)
            start = time.perf_counter()
            damaged = store.check_models([f"m{i}" for i in range(count)])
            check_s = time.perf_counter() - start
            gets, _ = _weight_bytes(log, since)
            assert damaged == {}, damaged
            rows.append(
                {
                    "models": count,
                    "model_mb": mb,
                    "publish_s": round(publish_s, 2),
                    "check_s": round(check_s, 3),
                    "weight_files_downloaded": gets,
                    "weight_mb_downloaded": gets * mb,
                    "check_s_per_model": round(check_s / count, 4),
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    finally:
        proxy.terminate()
        moto.terminate()
    return rows


def extrapolate(rows: list[dict]) -> dict:
    """The paper's 57 models of ~14 GB from the largest measured store: time per model (a
    download's time grows with the bytes, a listing's does not) and bytes downloaded."""
    last = max(rows, key=lambda r: (r["model_mb"], r["models"]))
    per_mb = last["check_s"] / max(1, last["weight_mb_downloaded"])
    downloads = last["weight_files_downloaded"] > 0
    gb = PAPER_MODELS * PAPER_MODEL_GB if downloads else 0.0
    seconds = per_mb * gb * 1000 if downloads else last["check_s_per_model"] * PAPER_MODELS
    return {
        "paper_models": PAPER_MODELS,
        "paper_model_gb": PAPER_MODEL_GB,
        "downloaded_gb": round(gb, 1),
        "check_s": round(seconds, 1),
        "basis": f"{last['models']} models of {last['model_mb']} MB measured",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10x8,57x8,57x32", help="COUNTxMB,... stores to check")
    parser.add_argument("--latency-ms", type=float, default=15.0)
    parser.add_argument("--label", default="this checkout")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    sizes = [tuple(int(x) for x in s.split("x")) for s in args.sizes.split(",")]
    rows = run(sizes, args.latency_ms)
    result = {
        "label": args.label,
        "host": host.describe(),
        "latency_ms": args.latency_ms,
        "rows": rows,
        "paper": extrapolate(rows),
    }
    print(json.dumps(result["paper"]))
    if args.out:
        previous = json.loads(args.out.read_text()) if args.out.exists() else {}
        previous[args.label] = result
        args.out.write_text(json.dumps(previous, indent=1) + "\n")


if __name__ == "__main__":
    main()
