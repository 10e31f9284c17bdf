"""The demo with its store on object storage: a real S3 server (moto) behind a proxy that adds
15 ms to every request, against the same demo with a local store.

    python benchmarks/demo_s3.py        # writes benchmarks/results/demo_s3.json (~12 min)

1. `python sweeps/language_count.py` with a fresh local store: trains the demo's models, then
   generates and judges (the local reference for both phases).
2. The trained models are published to a fresh bucket (so the S3 run's phases to compare are the
   same work), then the same command with `--store s3://...`: generates and judges everything
   again, every record going to the bucket through the proxy.
3. The same command again on the bucket: the rerun, which must find everything there.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import host
import loopback

ROOT = Path(__file__).parent.parent
OUT = Path(__file__).parent / "results" / "demo_s3.json"


def sweep(env: dict, store: str, out: Path, log: Path) -> dict:
    start = time.time()
    with log.open("w") as fh:
        cmd = [sys.executable, str(ROOT / "sweeps/language_count.py"), "--store", store]
        cmd += ["--output", str(out)]
        subprocess.run(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT, check=True)
    phases = json.loads((out / "run.json").read_text())["phases"]
    seconds = {k: v["seconds"] if isinstance(v, dict) else v for k, v in phases.items()}
    return {"wall_s": round(time.time() - start, 1), "phases_s": seconds}


def main() -> None:
    from mlit.store.artifacts import Store

    work = Path(tempfile.mkdtemp(prefix="mlit-demo-s3-"))
    moto, moto_port = loopback.start_moto("demo")
    proxy, port = loopback.start("proxy", str(moto_port), "--ms", "15")
    try:
        local = sweep(dict(os.environ), str(work / "store"), work / "local", work / "local.log")
        loopback.use_s3(port)
        env = {**os.environ, **loopback.s3_env(port)}
        bucket, disk = Store("s3://demo/store"), Store(str(work / "store"))
        for key in disk.model_keys():  # the same trained models, so only serving phases differ
            info = disk.model_info(key) or {}
            bucket.publish_model(disk.local_model_dir(key), key, info)
        s3 = sweep(env, "s3://demo/store", work / "s3", work / "s3.log")
        rerun = sweep(env, "s3://demo/store", work / "s3", work / "rerun.log")
    finally:
        proxy.terminate()
        moto.terminate()
    ratio = {
        p: round(s3["phases_s"][p] / local["phases_s"][p], 2)
        for p in ("generate", "judge")
        if local["phases_s"].get(p)
    }
    result = {
        "machine": host.describe(),
        "when": time.strftime("%Y-%m-%d %H:%M"),
        "latency_ms_added_per_s3_request": 15,
        "local_store": local,
        "s3_store": s3,
        "s3_over_local": ratio,
        "s3_rerun": rerun,
        "goals": {"s3_over_local_max": 1.5, "s3_rerun_max_s": 20},
    }
    OUT.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
