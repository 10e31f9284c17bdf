"""Checkpoints inside a training run (no Ray): a killed run resumes to the same weights, a damaged
latest checkpoint falls back to the one before, and failures that a retry cannot fix are named."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import helpers
import pytest

from mlit.method.hyperparameters import TrainError
from mlit.training import checkpoints, worker

RUN = Path(__file__).parents[1] / "checkpoint_run.py"
KEY = "model-under-test"


def _train(base, store, out, *extra) -> tuple[dict, str]:
    proc = subprocess.run(
        [sys.executable, str(RUN), str(base), str(store), str(out), *extra],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if extra:  # --kill-at: the process kills itself
        assert proc.returncode == -9, proc.stderr[-2000:]
        return {}, proc.stderr
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1]), proc.stderr


def _weights(folder):
    from safetensors.torch import load_file

    return load_file(str(Path(folder) / "model.safetensors"))


def _max_difference(a, b) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max()) for k in a)


@pytest.fixture(scope="module")
def runs(tiny_base, tmp_path_factory):
    """An uninterrupted run, and a run killed after its checkpoints at steps 5 and 10."""
    root = tmp_path_factory.mktemp("checkpoints")
    whole, _ = _train(tiny_base, root / "store-whole", root / "whole")
    _train(tiny_base, root / "store-killed", root / "unused", "--kill-at", "15")
    return root, whole


def test_a_killed_run_resumes_from_its_checkpoint_to_the_same_model(runs, tiny_base, tmp_path):
    root, whole = runs
    store = tmp_path / "store"
    shutil.copytree(root / "store-killed", store)
    ck = checkpoints.Checkpointing(str(store), KEY, every=5)
    assert [a["resumed_from_step"] for a in checkpoints.attempts(ck)] == [0]
    resumed, _ = _train(tiny_base, store, tmp_path / "resumed")
    assert resumed["resumed_from_step"] == 10 and resumed["attempt"] == 2
    # The dev-selection bookkeeping came back with the checkpoint: same curve, same best step.
    assert resumed["curve"] == whole["curve"] and resumed["best_step"] == whole["best_step"]
    assert _max_difference(_weights(root / "whole"), _weights(tmp_path / "resumed")) <= 1e-6
    assert [a["resumed_from_step"] for a in checkpoints.attempts(ck)] == [0, 10]
    # Only the latest two checkpoints are kept, and the best weights they name.
    names = sorted(p.name for p in (store / "checkpoints" / KEY).iterdir())
    assert names == ["attempts", "best-000005", "best-000015", "step-000010", "step-000015"]


def test_a_damaged_latest_checkpoint_falls_back_to_the_one_before(runs, tiny_base, tmp_path):
    root, whole = runs
    store = tmp_path / "store"
    shutil.copytree(root / "store-killed", store)
    latest = store / "checkpoints" / KEY / "step-000010"
    shard = next(latest.rglob("*optim_states.pt"))
    shard.write_bytes(shard.read_bytes()[:-10] + b"0123456789")  # same size, other bytes
    resumed, stderr = _train(tiny_base, store, tmp_path / "resumed")
    assert resumed["resumed_from_step"] == 5
    reports = [line for line in stderr.splitlines() if "[train] checkpoint" in line]
    assert len(reports) == 1, stderr[-2000:]
    assert str(latest) in reports[0] and "sha256" in reports[0] and "from step 5" in reports[0]
    assert resumed["curve"] == whole["curve"]
    assert _max_difference(_weights(root / "whole"), _weights(tmp_path / "resumed")) <= 1e-6


def test_an_upload_cut_off_before_its_manifest_is_not_a_checkpoint(runs, tiny_base, tmp_path):
    root, _ = runs
    store = tmp_path / "store"
    shutil.copytree(root / "store-killed", store)
    (store / "checkpoints" / KEY / "step-000010" / checkpoints.MANIFEST).unlink()
    resumed, stderr = _train(tiny_base, store, tmp_path / "resumed")
    assert resumed["resumed_from_step"] == 5 and "[train] checkpoint" not in stderr


def test_failures_a_retry_cannot_change_are_not_retried(tmp_path):
    ck = checkpoints.Checkpointing(str(tmp_path), "k", every=10)
    assert worker.not_retried(TrainError("no training examples"), ck) == (
        "bad input: no training examples"
    )
    assert worker.not_retried(ConnectionError("node lost"), ck) is None
    oom = RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
    first = checkpoints.begin(ck, 0)
    checkpoints.ended(ck, first, failed_at_step=130)
    assert worker.not_retried(oom, ck) is None  # once: maybe a neighbour's memory; retried
    second = checkpoints.begin(ck, 100)
    checkpoints.ended(ck, second, failed_at_step=120)
    assert worker.not_retried(oom, ck) is None  # another step: retried
    third = checkpoints.begin(ck, 100)
    checkpoints.ended(ck, third, failed_at_step=120)
    assert "out of memory at step 120 twice" in worker.not_retried(oom, ck)
    checkpoints.stop(ck, "bad input")
    assert checkpoints.stopped(ck) == "bad input"
    checkpoints.begin(ck, 100)  # a later run tries again
    assert checkpoints.stopped(ck) is None
    checkpoints.delete(ck)
    assert checkpoints.attempts(ck) == []


def test_checkpoints_on_object_storage_resume_the_same_way(runs, tiny_base, tmp_path):
    """The store on a real S3 server (moto on loopback): the checkpoints of a killed run are in
    the bucket, and the rerun takes them from there to the same model."""
    with helpers.s3_server("mlit-ck"):
        root, whole = runs
        store = "s3://mlit-ck/store"
        _train(tiny_base, store, tmp_path / "unused", "--kill-at", "15")
        ck = checkpoints.Checkpointing(store, KEY, every=5)
        assert checkpoints.uri(ck, "x").startswith("s3://mlit-ck/store/checkpoints/")
        assert [a["resumed_from_step"] for a in checkpoints.attempts(ck)] == [0]
        resumed, _ = _train(tiny_base, store, tmp_path / "resumed")
        assert resumed["resumed_from_step"] == 10 and resumed["curve"] == whole["curve"]
        assert _max_difference(_weights(root / "whole"), _weights(tmp_path / "resumed")) <= 1e-6
        checkpoints.delete(ck)
        assert checkpoints.attempts(ck) == []
