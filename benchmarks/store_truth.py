"""What the store's truth costs (issue 29): hashing stored models before reuse, a base model's
identity (cold, and from the digest cache), planning with keys over the training text, and a
lease round trip on a local store and on a real S3 server (moto) on loopback.

    python benchmarks/store_truth.py            # writes benchmarks/results/store_truth.json

Ratios matter more than absolute times on this noisy 2-core machine; run it with nothing else.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mlit.planning import model_keys
from mlit.planning.config import SweepConfig
from mlit.planning.plan import prepare
from mlit.plumbing.ports import free_port
from mlit.store import leases, model_refs
from mlit.store.artifacts import Store

import host

OUT = Path(__file__).parent / "results" / "store_truth.json"


def _model(folder: Path, mb: int) -> Path:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(os.urandom(mb * 2**20))
    return folder


def verify_throughput(tmp: Path, models: int = 8, mb: int = 64) -> dict:
    store = Store(str(tmp / "store"))
    for i in range(models):
        store.publish_model(_model(tmp / f"m{i}", mb), f"k{i}", {})
    keys = [f"k{i}" for i in range(models)]
    start = time.perf_counter()
    assert store.check_models(keys) == {}
    seconds = time.perf_counter() - start
    return {
        "models": models,
        "mb_each": mb,
        "seconds": round(seconds, 3),
        "mb_per_s": round(models * mb / seconds, 1),
    }


def identity_cost(tmp: Path, mb: int = 256) -> dict:
    base = _model(tmp / "base", mb)
    os.environ["MLIT_DIGEST_CACHE"] = str(tmp / "digests.json")
    start = time.perf_counter()
    cold = model_refs.identity(str(base))
    cold_s = time.perf_counter() - start
    start = time.perf_counter()
    warm = model_refs.identity(str(base))
    warm_s = time.perf_counter() - start
    assert cold == warm
    return {
        "base_mb": mb,
        "cold_s": round(cold_s, 3),
        "cached_s": round(warm_s, 4),
        "ratio": round(cold_s / warm_s, 1),
    }


def planning(tmp: Path) -> dict:
    base = _model(tmp / "plan-base", 1)
    out = {}
    for experiment in ("language_count", "monolingual", "multilingual_fraction"):
        cfg = SweepConfig(experiment=experiment, base_model=str(base), store=str(tmp / "s"))
        start = time.perf_counter()
        plan = prepare(cfg)
        seconds = time.perf_counter() - start
        start = time.perf_counter()
        for job in plan.jobs:  # the part of planning the text keys added
            model_keys.rows_hash(job.train, job.dev)
        out[experiment] = {
            "mixtures": len(plan.mixtures),
            "jobs": len(plan.jobs),
            "plan_s": round(seconds, 3),
            "rows_hash_s": round(time.perf_counter() - start, 4),
        }
    return out


def lease_round_trips(tmp: Path, n: int = 50) -> dict:
    def trips(store: Store) -> float:
        with leases.Leases(store) as held:
            start = time.perf_counter()
            for i in range(n):
                assert held.acquire(f"k{i}")
                held.release(f"k{i}")
            return (time.perf_counter() - start) / n * 1000

    out = {"local_ms": round(trips(Store(str(tmp / "lease-store"))), 3)}
    port = free_port()
    moto = subprocess.Popen(
        [str(Path(sys.executable).parent / "moto_server"), "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        os.environ.update(
            AWS_ENDPOINT_URL=f"http://127.0.0.1:{port}",
            AWS_ACCESS_KEY_ID="x",
            AWS_SECRET_ACCESS_KEY="x",
            AWS_DEFAULT_REGION="us-east-1",
        )
        time.sleep(2)
        import boto3

        boto3.client("s3").create_bucket(Bucket="bench")
        out["s3_moto_ms"] = round(trips(Store("s3://bench/store")), 3)
    finally:
        moto.terminate()
    return out


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="mlit-bench-"))
    try:
        result = {
            "machine": host.describe(),
            "verify_before_reuse": verify_throughput(tmp),
            "base_identity": identity_cost(tmp),
            "planning_with_text_keys": planning(tmp),
            "lease_round_trip": lease_round_trips(tmp),
        }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
