"""Nodes lost in the middle of a sweep, on a real multi-node Ray cluster on this machine.

A head (no CPUs: only Ray's and Serve's control processes) and two worker nodes, started with
`ray.cluster_utils.Cluster`. The same demo sweep runs twice: undisturbed, then with the worker
node that runs a training trial killed (its raylet SIGKILLed) after the trial's first checkpoint,
and the node that hosts the model server's Serve replica killed while answers are generated. As
a spot group's autoscaler would, a fresh node joins after each loss. The disturbed sweep must
finish by itself (rc 0), resume the lost trial from its checkpoint, and end with the scores of
the undisturbed run.

Marked `cluster` (and slow): it starts its own Ray, so it runs alone (`make test-cluster`, called
by .ci/run), never beside the test session's Ray.
"""

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import polars as pl
import psutil
import pytest

ROOT = Path(__file__).parents[2]
pytestmark = [pytest.mark.slow, pytest.mark.cluster]
FLAGS = ["--languages", "en,es", "--max-steps", "60", "--checkpoint-every", "20"]


def _sweep(address: str, store: Path, run: Path) -> subprocess.Popen:
    where = ["--store", str(store), "--output", str(run)]
    return subprocess.Popen(
        [sys.executable, str(ROOT / "sweeps" / "monolingual.py"), *FLAGS, *where],
        env={**os.environ, "RAY_ADDRESS": address},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=ROOT,
    )


def _node_of(pid: int, nodes) -> object | None:
    """The worker node whose raylet started process ``pid`` (Ray's workers are its children)."""
    raylets = {n.all_processes["raylet"][0].process.pid: n for n in nodes}
    proc = psutil.Process(pid)
    while proc is not None:
        if proc.pid in raylets:
            return raylets[proc.pid]
        proc = proc.parent()
    return None


def _replica_pid(deployment: str) -> int | None:
    for proc in psutil.process_iter(["cmdline"]):
        title = " ".join(proc.info["cmdline"] or [])
        if "ServeReplica" in title and deployment in title:
            return proc.pid
    return None


def test_a_sweep_survives_losing_a_training_node_and_a_serving_node(tmp_path):
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    nodes = [cluster.add_node(num_cpus=2) for _ in range(2)]
    cluster.wait_for_nodes()
    try:
        undisturbed = _sweep(cluster.address, tmp_path / "store-a", tmp_path / "run-a")
        out, _ = undisturbed.communicate(timeout=1200)
        assert undisturbed.returncode == 0, out[-3000:]

        store, run = tmp_path / "store-b", tmp_path / "run-b"
        sweep = _sweep(cluster.address, store, run)
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.extend(sweep.stdout), daemon=True)
        reader.start()
        lost = []

        def lose(node) -> None:
            node.kill_raylet()  # the node is gone: its workers and replicas die with it
            nodes.remove(node)
            nodes.append(cluster.add_node(num_cpus=2))  # the spot group's replacement
            lost.append(node)

        # 1. A training node, after the trial's first checkpoint.
        deadline = time.time() + 900
        while time.time() < deadline and not lost:
            for attempt in store.glob("checkpoints/*/attempts/001.json"):
                if any(attempt.parent.parent.glob("step-*/_CHECKPOINT.json")):
                    node = _node_of(json.loads(attempt.read_text())["pid"], nodes)
                    assert node is not None, "the trial's worker is on no worker node"
                    lose(node)
                    break
            assert sweep.poll() is None, "".join(lines)[-3000:]
            time.sleep(0.2)
        assert lost, "no checkpoint was written in time"

        # 2. The node of the model server's replica, once answers are being generated.
        while time.time() < deadline and len(lost) < 2:
            # One model server on CPU: it runs in the gateway's replica (`mlit.serving.shards`).
            pid = _replica_pid("ServeReplica:mlit:Gateway")
            if pid and any("[serve]" in line for line in lines):
                node = _node_of(pid, nodes)
                if node is not None:
                    time.sleep(1.0)  # answers in flight
                    lose(node)
            assert sweep.poll() is None or len(lost) == 2, "".join(lines)[-3000:]
            time.sleep(0.2)
        assert len(lost) == 2, "the model server never ran on a worker node"

        sweep.wait(timeout=1200)
        reader.join(timeout=10)
        log = "".join(lines)
        assert sweep.returncode == 0, log[-3000:]
        assert "resumed from step" in log, log[-3000:]
        trained = pl.read_parquet(run / "train.parquet")
        assert trained["resumed_from_step"].max() > 0 and trained["attempts"].max() >= 2
        generations = pl.read_parquet(run / "generations.parquet")
        assert generations["status"].to_list() == ["ok"] * generations.height
        for name in ("train", "scores"):  # the same models, the same scores
            a = pl.read_parquet(tmp_path / "run-a" / f"{name}.parquet")
            b = pl.read_parquet(run / f"{name}.parquet")
            if name == "train":
                a, b = a.select("mixture", "model_key"), b.select("mixture", "model_key")
            assert a.equals(b), f"{name}: {a} != {b}"
        from safetensors.torch import load_file

        for key in trained["model_key"]:  # the resumed model is the undisturbed one
            want = load_file(str(tmp_path / "store-a" / "models" / key / "model.safetensors"))
            got = load_file(str(store / "models" / key / "model.safetensors"))
            assert max(float((want[k] - got[k]).abs().max()) for k in want) <= 1e-6
    finally:
        cluster.shutdown()
