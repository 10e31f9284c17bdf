"""Ray's per-trial overhead: the same tiny training job standalone and as a Tune + Train trial.

    python benchmarks/train_overhead.py            # writes benchmarks/results/train_overhead.json
    python benchmarks/train_overhead.py --checkpoints   # writes .../train_checkpoints.json

The job: a tiny Llama-style model (built locally, as in the demo) fine-tuned with DeepSpeed ZeRO-2
for a fixed number of steps on one mixture of the bundled sample. It runs

- standalone: `mlit.training.trainer.train_model` in a fresh Python process (imports, model load, DeepSpeed
  init, steps, export: everything a Ray worker also does), timed from spawn to exit;
- on Ray: `mlit.training.trials.train_phase` with one trial of one worker on a local Ray instance, timed
  around the call, with `ray.init` timed separately.

It does both at two step counts, so the overhead (Ray trial minus standalone) can be seen not to
grow with the number of steps. Goal: under 15 s per trial on a 2-core CPU machine.

``--checkpoints`` measures what in-run checkpoints cost: one demo model (the demo base model and
`TrainConfig.demo()`, 40 steps, a checkpoint at the default interval, the dev evaluation's: step
20) trained standalone with and without checkpoints into a local store, alternately, three times
each; the report gives the median of each, the difference and the size of a checkpoint.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mlit.data import dataset
from mlit.demo import base_model
from mlit.method import mixtures
from mlit.planning import model_keys
from mlit.store.artifacts import Store
from mlit.training import trials
from mlit.training.trainer import TrainConfig

import host

STEPS = (20, 80)
TINY = base_model.DemoModelConfig(
    vocab_size=1024,
    hidden_size=64,
    intermediate_size=128,
    num_layers=2,
    num_heads=2,
    context=256,
    pretrain_steps=40,
    batch_size=8,
    seq_len=64,
)
OUT = Path(__file__).parent / "results" / "train_overhead.json"

STANDALONE = """
import sys, time
t0 = time.time()
from mlit.data import dataset
from mlit.method import mixtures
from mlit.training import trainer
from mlit.training.trainer import TrainConfig
sample = dataset.sample()
m = mixtures.build(mixtures.monolingual("en"), dataset.train_ids(sample), seed=int(sys.argv[3]))
tr, dev = mixtures.materialize(m, sample)
cfg = TrainConfig.demo(max_steps=int(sys.argv[2]), eval_every=int(sys.argv[2]))
r = trainer.train_model(sys.argv[1], tr, dev, cfg, sys.argv[4])
print("TRAIN_WALL", r.wall_time_s)
"""

CHECKPOINTED = """
import sys
from mlit.data import dataset
from mlit.method import mixtures
from mlit.training import checkpoints, trainer
from mlit.training.trainer import TrainConfig
sample = dataset.sample()
m = mixtures.build(mixtures.monolingual("en"), dataset.train_ids(sample), seed=0)
tr, dev = mixtures.materialize(m, sample)
cfg = TrainConfig.demo()
ck = checkpoints.Checkpointing(sys.argv[3], "bench", cfg.eval_every) if sys.argv[3] else None
r = trainer.train_model(sys.argv[1], tr, dev, cfg, sys.argv[2], checkpointing=ck)
print("TRAIN_WALL", r.wall_time_s)
"""


def checkpoint_cost(work: Path) -> dict:
    """Median train_model time of a demo model with and without checkpoints (3 runs each)."""
    import shutil
    import statistics

    base = base_model.build_demo_model(base_model.default_dir())
    times: dict[str, list[float]] = {"without": [], "with": []}
    size = 0
    for i in range(3):
        for mode in ("without", "with"):
            store = work / f"ck-{mode}-{i}"
            where = [str(work / f"m-{mode}-{i}"), str(store) if mode == "with" else ""]
            out = subprocess.run(
                [sys.executable, "-c", CHECKPOINTED, str(base), *where],
                capture_output=True,
                text=True,
                check=True,
            )
            times[mode].append(float(out.stdout.split("TRAIN_WALL")[-1].split()[0]))
            if mode == "with":
                size = sum(f.stat().st_size for f in store.rglob("step-*/**/*") if f.is_file())
                shutil.rmtree(store)
    without, with_ = statistics.median(times["without"]), statistics.median(times["with"])
    return {
        "model": "the demo base model, TrainConfig.demo(): 40 steps, dev evaluation at 20 and 40",
        "checkpoints_per_model": 1,
        "train_model_s": times,
        "median_without_s": without,
        "median_with_s": with_,
        "cost_s": round(with_ - without, 2),
        "cost_share": round((with_ - without) / without, 3),
        "checkpoint_bytes": size,
    }


def standalone(base: Path, steps: int, work: Path) -> dict:
    start = time.time()
    out = subprocess.run(
        [sys.executable, "-c", STANDALONE, str(base), str(steps), "100", str(work / f"s{steps}")],
        capture_output=True,
        text=True,
        check=True,
    )
    total = time.time() - start
    train_wall = float(out.stdout.split("TRAIN_WALL")[-1].split()[0])
    return {"total_s": round(total, 2), "train_model_s": train_wall}


def on_ray(base: Path, steps: int, work: Path, seed: int) -> dict:
    sample = dataset.sample()
    m = mixtures.build(mixtures.monolingual("en"), dataset.train_ids(sample), seed=seed)
    cfg = TrainConfig.demo(max_steps=steps, eval_every=steps)
    jobs = model_keys.plan_models(str(base), [m], sample, cfg)[1]
    store = Store(str(work / "store"))
    start = time.time()
    result = trials.train_phase(
        jobs, store, trials.Compute(workers=1, storage_path=str(work / "ray")), "bench"
    )
    total = time.time() - start
    assert result.launched and not result.failed
    info = store.model_info(jobs[0].key)
    return {"total_s": round(total, 2), "train_model_s": info["wall_time_s"]}


def main() -> None:
    import ray

    work = Path(tempfile.mkdtemp(prefix="mlit-bench-"))
    if "--checkpoints" in sys.argv:
        report = {"machine": host.describe(), **checkpoint_cost(work)}
        path = OUT.with_name("train_checkpoints.json")
        path.write_text(json.dumps(report, indent=1))
        print(json.dumps(report, indent=1))
        return
    base = base_model.build_demo_model(work / "base", TINY, progress=False)
    standalone(base, 2, work)  # warm the DeepSpeed op cache and the file cache once
    rows = {}
    t = time.time()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    ray_start = round(time.time() - t, 2)
    for i, steps in enumerate(STEPS):
        alone = standalone(base, steps, work)
        trial = on_ray(base, steps, work, seed=200 + i)
        steps_s = alone["train_model_s"]
        rows[str(steps)] = {
            "standalone": alone,
            "ray_trial": trial,
            "overhead_s": round(trial["total_s"] - alone["total_s"], 2),
            "ratio": round(trial["total_s"] / alone["total_s"], 2),
            "breakdown": {
                "steps_and_setup_inside_worker_s": trial["train_model_s"],
                "worker_and_trial_start_s": round(trial["total_s"] - trial["train_model_s"], 2),
                "standalone_process_start_s": round(alone["total_s"] - steps_s, 2),
            },
        }
    ray.shutdown()
    overheads = [r["overhead_s"] for r in rows.values()]
    report = {
        "machine": host.describe(),
        "ray_start_s": ray_start,
        "by_steps": rows,
        "max_overhead_s": max(overheads),
        "overhead_growth_s": round(overheads[-1] - overheads[0], 2),
        "goal": "overhead < 15 s per trial, not growing with steps",
        "goal_met": max(overheads) < 15 and overheads[-1] - overheads[0] < 5,
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
