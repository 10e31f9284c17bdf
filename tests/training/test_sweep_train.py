"""The training phase through Ray Tune + Train V2 + DeepSpeed on 2 CPU workers, and the store."""

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from mlit.data import dataset
from mlit.method import mixtures
from mlit.planning import model_keys
from mlit.store.artifacts import Store
from mlit.training import checkpoints, trials
from mlit.training.trainer import TrainConfig

CFG = TrainConfig.demo(
    max_steps=4, eval_every=2, dev_max_new_tokens=6, batch_size=8, per_device_batch_size=4
)


def _jobs(base, sample, recipes, cfg=CFG):
    ids = dataset.train_ids(sample)
    built = [mixtures.build(r, ids, seed=0) for r in recipes]
    return model_keys.plan_models(str(base), built, sample, cfg)[1]


def _loads_and_generates(path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from mlit.generation import chat, decoding

    model = AutoModelForCausalLM.from_pretrained(path)
    tok = AutoTokenizer.from_pretrained(path)
    [out] = decoding.generate(
        model, tok, [chat.format_prompt(tok, "Name a fruit.")], decoding.Sampling(max_new_tokens=4)
    )
    return out.completion_tokens


def test_deepspeed_trials_through_tune_and_the_store(ray_session, tiny_base, sample, tmp_path):
    store = Store(str(tmp_path / "store"))
    compute = trials.Compute(workers=2, storage_path=str(tmp_path / "ray"))
    zero2 = _jobs(tiny_base, sample, [mixtures.monolingual("en"), mixtures.monolingual("fi")])
    result = trials.train_phase(zero2, store, compute, "zero2")
    assert len(result.launched) == 2 and not result.failed
    zero3 = _jobs(
        tiny_base,
        sample,
        [mixtures.monolingual("sw")],
        TrainConfig(**{**CFG.__dict__, "zero_stage": 3}),
    )
    assert len(trials.train_phase(zero3, store, compute, "zero3").launched) == 1
    table = trials.train_phase(zero2 + zero3, store, compute, "again").table()
    assert table["status"].to_list() == ["stored"] * 3  # the second run launches nothing
    for key in table["model_key"]:
        path = store.local_model_dir(key)
        assert _loads_and_generates(path) >= 1
        info = store.model_info(key)
        assert info["best_dev_rouge_l"] is not None and info["best_step"] in (2, 4)
    assert set(table.columns) >= {
        "mixture",
        "model_key",
        "store_path",
        "best_dev_rouge_l",
        "wall_time_s",
    }

    # Two experiments sharing monolingual English train it once.
    other = _jobs(
        tiny_base, sample, [mixtures.monolingual("en"), mixtures.uniform(["fi", "en"], "fi-en")]
    )
    shared = trials.train_phase(other, store, trials.Compute(workers=1), "shared")
    assert shared.launched == (other[1].key,)
    assert shared.table()["status"].to_list() == ["stored", "trained"]


KILL_SCRIPT = """
import sys, ray
from mlit.data import dataset
from mlit.method import mixtures
from mlit.planning import model_keys
from mlit.training import trials
from mlit.store.artifacts import Store
from mlit.training.trainer import TrainConfig
ray.init(address=sys.argv[1])
sample = dataset.sample()
ids = dataset.train_ids(sample)
built = [mixtures.build(mixtures.monolingual(l), ids, seed=1) for l in ("it", "es")]
cfg = TrainConfig.demo(max_steps=int(sys.argv[4]), eval_every=2, dev_max_new_tokens=6,
                       batch_size=8, per_device_batch_size=4)
jobs = model_keys.plan_models(sys.argv[2], built, sample, cfg)[1]
# One trial at a time: the test kills the sweep after the first model, while the second trains
# (two trials side by side can finish within one poll of each other).
trials.train_phase(jobs, Store(sys.argv[3]), trials.Compute(workers=1, max_concurrent=1), "kill")
"""


# 100 s: with the slow tests (`make test-all`), keeping `make test` under 15 minutes; a trial's
# resume from its checkpoint stays in the default suite (tests/training/test_checkpoints.py) and
# in `make test-cluster` (a node lost under a sweep).
@pytest.mark.slow
def test_a_killed_sweep_resumes_without_retraining(ray_session, tiny_base, sample, tmp_path):
    root = str(tmp_path / "store")
    address = ray_session.get_runtime_context().gcs_address
    script = tmp_path / "run.py"
    script.write_text(KILL_SCRIPT)
    proc = subprocess.Popen(
        [sys.executable, str(script), address, str(tiny_base), root, "30"],
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    store = Store(root)
    deadline = time.time() + 300

    def second_checkpointed(done: list[str]) -> bool:
        # The model still in training has a checkpoint in the store. The finished model's own
        # checkpoints stay for a moment after it is stored (they are deleted next): not those.
        found = Path(root, "checkpoints").glob(f"*/step-*/{checkpoints.MANIFEST}")
        return any(m.parent.parent.name not in done for m in found)

    try:
        while time.time() < deadline:
            done = store.model_keys()
            if done and second_checkpointed(done):
                break
            assert proc.poll() is None, "the sweep ended before the test could kill it"
            time.sleep(0.2)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the whole sweep, Ray driver included
        proc.wait()
    finished = store.model_keys()
    assert len(finished) == 1, "expected exactly one model done when the sweep was killed"
    ids = dataset.train_ids(sample)
    built = [mixtures.build(mixtures.monolingual(lang), ids, seed=1) for lang in ("it", "es")]
    cfg = TrainConfig.demo(
        max_steps=30, eval_every=2, dev_max_new_tokens=6, batch_size=8, per_device_batch_size=4
    )
    jobs = model_keys.plan_models(str(tiny_base), built, sample, cfg)[1]
    rerun = trials.train_phase(jobs, store, trials.Compute(workers=1), "resume")
    assert len(rerun.launched) == 1 and rerun.launched[0] not in finished
    assert len(store.model_keys()) == 2
    # The model killed in training went on from its checkpoint, in the rerun of the command.
    [row] = rerun.table().filter(status="trained").rows(named=True)
    assert row["resumed_from_step"] > 0 and row["attempts"] == 2
    assert not any(Path(root, "checkpoints").iterdir())  # deleted once the models are stored


def test_a_lost_training_worker_is_retried_from_its_checkpoint(
    ray_session, tiny_base, sample, tmp_path
):
    """Two DeepSpeed workers; one is SIGKILLed after the first checkpoint. Tune retries the
    trial, every rank takes its own files back, and the model equals an undisturbed run's."""
    from safetensors.torch import load_file

    cfg = TrainConfig.demo(
        max_steps=24, eval_every=4, dev_max_new_tokens=6, batch_size=8, per_device_batch_size=4
    )
    [job] = _jobs(tiny_base, sample, [mixtures.monolingual("cs")], cfg)
    compute = trials.Compute(workers=2, storage_path=str(tmp_path / "ray"))
    undisturbed = Store(str(tmp_path / "undisturbed"))
    trials.train_phase([job], undisturbed, compute, "undisturbed")
    store = Store(str(tmp_path / "store"))
    ck = trials.checkpointing(job, store.root, compute)
    first = Path(checkpoints.uri(ck, "step-000004", checkpoints.MANIFEST))
    killed = []

    def kill_a_worker() -> None:
        deadline = time.time() + 300
        while time.time() < deadline and not killed:
            tried = checkpoints.attempts(ck)
            if tried and first.exists():
                os.kill(tried[0]["pid"], signal.SIGKILL)  # rank 0's worker process
                killed.append(tried[0]["pid"])
            time.sleep(0.05)

    thread = threading.Thread(target=kill_a_worker, daemon=True)
    thread.start()
    result = trials.train_phase([job], store, compute, "lost")
    thread.join()
    assert killed, "the test never saw the first checkpoint"
    [row] = result.table().rows(named=True)
    assert row["status"] == "trained" and row["attempts"] == 2
    assert row["resumed_from_step"] >= 4
    want = load_file(str(undisturbed.local_model_dir(job.key) / "model.safetensors"))
    got = load_file(str(store.local_model_dir(job.key) / "model.safetensors"))
    assert max(float((want[k] - got[k]).abs().max()) for k in want) <= 1e-6
    assert store.model_info(job.key)["best_step"] == undisturbed.model_info(job.key)["best_step"]


def test_impossible_gpu_requests_fail_before_any_trial(ray_session, tiny_base, sample, tmp_path):
    jobs = _jobs(tiny_base, sample, [mixtures.monolingual("et")])
    store = Store(str(tmp_path / "store"))
    start = time.time()
    with pytest.raises(trials.ResourceError, match=r"needs 4 GPU.*largest node has 2"):
        trials.train_phase(jobs, store, trials.Compute(workers=1, gpus_per_worker=4), "gpu")
    with pytest.raises(trials.ResourceError, match="room for 2 workers"):
        trials.train_phase(jobs, store, trials.Compute(workers=3), "too-many")
    assert time.time() - start < 10 and store.model_keys() == []


INTERRUPT = """
import sys
from mlit.planning.config import SweepConfig
from mlit.cli.flags import run_script
CONFIG = SweepConfig(experiment="language_count", languages=("fi", "en", "cs"), workers=1,
                     max_steps=100000, base_model=sys.argv.pop(1))
run_script(CONFIG)
"""


# SIGTERM takes the path of SIGINT (`mlit.plumbing.interrupts` makes them one interrupt): it runs
# with the slow tests (`make test-all`), keeping `make test` under 15 minutes.
@pytest.mark.parametrize(
    "signum", [signal.SIGINT, pytest.param(signal.SIGTERM, marks=pytest.mark.slow)]
)
def test_an_interrupt_during_training_is_an_interrupt(tiny_base, tmp_path, signum):
    """Ctrl-C (SIGINT) or SIGTERM while trials train: rc 130, "interrupted", Ray down, no model
    marked failed."""
    script = tmp_path / "sweep.py"
    script.write_text(INTERRUPT)
    run = tmp_path / "run"
    proc = subprocess.Popen(
        [
            sys.executable,
            str(script),
            str(tiny_base),
            "--output",
            str(run),
            "--store",
            str(tmp_path / "store"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    deadline = time.time() + 300
    while not any((run / "ray").glob("*/*")):
        assert proc.poll() is None, proc.communicate()
        assert time.time() < deadline, "training never started"
        time.sleep(0.5)
    time.sleep(8)  # the trial is running
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 130, err[-2000:]
    assert "interrupted" in err and "failed to train" not in err + out
    assert not (run / "train.parquet").exists()
