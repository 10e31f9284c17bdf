"""A finished demo rerun with its store on S3 (issue 48): what it downloads and how long it takes.

A demo run's store (a local folder: its 22 models and every record) is copied to a real S3 server
(moto) behind a proxy that adds 15 ms to every request; then `python sweeps/language_count.py
--store s3://...` runs again from a machine whose download cache is empty. Everything is stored,
so the run trains, generates and judges nothing: the seconds it takes, and the model weight files
it fetched (moto's request log), are what a rerun costs.

    python sweeps/language_count.py        # once: the demo's store in ~/.cache/mlit/store
    python benchmarks/demo_rerun_s3.py     # writes benchmarks/results/demo_rerun_s3.json
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import host
import loopback

ROOT = Path(__file__).parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", default=str(Path.home() / ".cache" / "mlit" / "store"))
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/demo_rerun_s3.json")
    args = parser.parse_args()
    from pyarrow import fs

    from mlit.store.artifacts import Store
    from mlit.store.filesystems import filesystem

    work = Path(tempfile.mkdtemp(prefix="mlit-demo-rerun-"))
    log = work / "moto.log"
    moto, moto_port = loopback.start_moto("mlit-demo", log)
    proxy, port = loopback.start("proxy", str(moto_port), "--ms", "15")
    env = {**os.environ, **loopback.s3_env(port)}
    os.environ.update(loopback.s3_env(port))
    try:
        local, remote = Store(args.store), Store("s3://mlit-demo/store")
        keys = local.model_keys()
        for key in keys:  # published as a sweep publishes: ETags recorded
            info = {k: v for k, v in local.model_info(key).items() if k != "files"}
            remote.publish_model(Path(local.model_uri(key)), key, info)
        s3, base = filesystem("s3://mlit-demo/store/segments")
        fs.copy_files(
            str(Path(args.store) / "segments"),
            base,
            source_filesystem=fs.LocalFileSystem(),
            destination_filesystem=s3,
        )
        since = len(log.read_text(errors="replace").splitlines())
        env["HOME"] = str(work / "home")  # an empty download cache...
        env["MLIT_CACHE"] = str(Path.home() / ".cache" / "mlit")  # ...the demo models as built
        start = time.perf_counter()
        cmd = [sys.executable, str(ROOT / "sweeps/language_count.py")]
        cmd += ["--store", "s3://mlit-demo/store", "--output", str(work / "run")]
        done = subprocess.run(cmd, env=env, capture_output=True, text=True)
        took = time.perf_counter() - start
        assert done.returncode == 0, done.stderr[-3000:]
        lines = log.read_text(errors="replace").splitlines()[since:]
        weights = {m.group(1) for x in lines if (m := re.search(r'"GET ([^ "?]*\.safetensors)', x))}
        summary = [x for x in done.stdout.splitlines() if x.startswith("done in")]
        result = {
            "machine": host.describe(),
            "when": time.strftime("%Y-%m-%d %H:%M"),
            "latency_ms_added_per_s3_request": 15,
            "models_stored": len(keys),
            "rerun_wall_s": round(took, 1),
            "requests_to_s3": len(lines),
            "weight_files_fetched": len(weights),
            "run_summary": summary[0] if summary else None,
        }
        print(json.dumps(result, indent=1))
        args.out.write_text(json.dumps(result, indent=1) + "\n")
    finally:
        proxy.terminate()
        moto.terminate()


if __name__ == "__main__":
    main()
