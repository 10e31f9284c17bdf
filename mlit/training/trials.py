"""The training phase on Ray: Tune fans mixtures out as trials, each a Ray Train `TorchTrainer`.

Every model is looked up in the store first; only missing ones become trials. A trial is a Tune
function trainable that builds and fits a `TorchTrainer` (Train V2), whose workers run
`mlit.training.trainer.train_model` with DeepSpeed and report dev ROUGE-L back through `TuneReportCallback`.
Rank 0 publishes the exported model to the store, so a sweep killed mid-way and rerun retrains
nothing that finished.

A model in training writes a checkpoint into the store every ``checkpoint_every`` steps
(`mlit.training.checkpoints`). A trial that fails (a lost node, a killed worker) is retried by Tune up to
``max_failures`` times, and a retry, a rerun of the command or another sweep on the same store
goes on from the latest checkpoint that verifies. A failure that a retry cannot change (bad input,
out of memory at the same step twice) is not retried: the worker records why and moves on.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from mlit.planning.compute import Compute, ResourceError
from mlit.planning.model_keys import ModelJob
from mlit.plumbing import console
from mlit.results.tracking import Tracker
from mlit.store import leases
from mlit.store.artifacts import Store
from mlit.store.filesystems import filesystem
from mlit.training import checkpoints, worker
from mlit.training.worker import checkpointing

__all__ = ["Compute", "ResourceError", "train_phase"]


# --------------------------------------------------------------------------------------------
# Resources


def check_resources(compute: Compute) -> int:
    """Fail before any trial starts when a trial can never be placed; return max concurrency."""
    import ray

    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    need = compute.worker_resources()

    def fits(node: dict) -> int:
        return min(int(node.get(r, 0) // amount) for r, amount in need.items() if amount)

    per_node = [fits(n) for n in nodes]
    biggest_gpu = max((n.get("GPU", 0) for n in nodes), default=0)
    if compute.gpus_per_worker and max(per_node, default=0) == 0:
        raise ResourceError(
            f"each training worker needs {compute.gpus_per_worker:g} GPU(s) but the largest node "
            f"has {biggest_gpu:g}; lower --gpus-per-worker or add GPU nodes"
        )
    slots = sum(per_node)
    if slots < compute.workers:
        total = {r: sum(n.get(r, 0) for n in nodes) for r in need}
        raise ResourceError(
            f"a trial needs {compute.workers} workers x {need} but the cluster has {total} "
            f"(room for {slots} workers); lower --workers or grow the cluster"
        )
    concurrent = max(1, slots // compute.workers)
    return min(concurrent, compute.max_concurrent or concurrent)


def wait_for_resources(compute: Compute, timeout_s: float = 60.0, poll_s: float = 0.5) -> None:
    """Wait (boundedly) until one trial's workers can be placed now; otherwise say who holds what.

    Training runs after Serve is taken down, so this only waits on other work of the cluster. A
    request that could never fit is caught earlier by `check_resources`.
    """
    import ray

    need = {r: a * compute.workers for r, a in compute.worker_resources().items()}
    deadline = time.monotonic() + timeout_s
    while True:
        free = ray.available_resources()
        if all(free.get(r, 0) + 1e-9 >= amount for r, amount in need.items()):
            return
        if time.monotonic() >= deadline:
            total = ray.cluster_resources()
            held = {r: round(total.get(r, 0) - free.get(r, 0), 2) for r in need}
            raise ResourceError(
                f"a trial needs {need} free, but after {timeout_s:.0f} s only "
                f"{ {r: round(free.get(r, 0), 2) for r in need} } are free ({held} held by other "
                "work: a Serve app, another sweep?). Stop it (`serve shutdown`) or lower --workers"
            )
        time.sleep(poll_s)


# --------------------------------------------------------------------------------------------
# Trials


@dataclass(frozen=True)
class PhaseResult:
    rows: tuple[dict, ...]  # mixture, model_key, store_path, best_dev_rouge_l, wall_time_s, status
    launched: tuple[str, ...]  # model keys trained in this call
    failed: tuple[str, ...] = ()
    first_error: str | None = None  # the last line of the first failed trial's error

    def table(self):
        import polars as pl

        return pl.DataFrame(list(self.rows))


def train_phase(
    jobs: Sequence[ModelJob],
    store: Store,
    compute: Compute,
    experiment_name: str = "mlit",
    tracker: Tracker | None = None,
) -> PhaseResult:
    """Train every job whose model is not in the store, as Tune trials; return the result table.

    Stored models are verified first (sha256 of every file, once per run, concurrently): a
    damaged one is reported with its path and trained again. Each model is trained under its
    key's lease (`mlit.store.leases`): a model another sweep on this store is training is waited for
    and then reused, not trained twice."""
    damaged = store.check_models([j.key for j in jobs])

    def ready(key: str) -> bool:
        """Stored and whole (a model found damaged counts once it was published again)."""
        if key in damaged and store.has_model(key) and store.model_problem(key, full=True):
            return False
        return store.has_model(key)

    launched: set[str] = set()
    failed: list[str] = []
    first_error = None
    with leases.Leases(store) as held:
        pending = [j for j in jobs if not ready(j.key)]
        while pending:
            mine = [j for j in pending if held.acquire(j.key)]
            for j in mine:
                if j.key in damaged and store.has_model(j.key):
                    store.delete_model(j.key)  # under its lease: nobody else publishes it now
            build = [j for j in mine if not store.has_model(j.key)]
            if build:
                missing, errors = _run_tune(build, store, compute, experiment_name, tracker)
                failed += missing
                first_error = first_error or next(iter(errors), None)
                launched |= {j.key for j in build}
            for j in mine:
                held.release(j.key)
            ours = {j.key for j in mine}
            pending = [j for j in pending if j.key not in ours and not ready(j.key)]
            if pending:
                console.say(
                    f"[train] waiting for {len(pending)} model(s) another sweep on this store "
                    f"is training ({', '.join(j.name for j in pending[:4])}); they are reused"
                )
                held.wait_for([j.key for j in pending], ready)
                pending = [j for j in pending if not ready(j.key)]
    rows = []
    for job in jobs:
        info = store.model_info(job.key) or {}
        rows.append(
            {
                "mixture": job.name,
                "model_key": job.key,
                "store_path": store.model_uri(job.key) if info else None,
                "best_dev_rouge_l": info.get("best_dev_rouge_l"),
                "wall_time_s": info.get("wall_time_s"),
                "effective_batch": info.get("effective_batch"),
                "dropout_settings": ",".join(info.get("dropout_settings") or []) or None,
                "resumed_from_step": info.get("resumed_from_step", 0),
                "attempts": info.get("attempts", 1),
                # What training did as it ran (None: a model stored before mlit recorded it).
                "as_run": json.dumps(info["as_run"]) if info.get("as_run") else None,
                # The curves the results page draws ([step, value] pairs, as JSON).
                "best_step": info.get("best_step"),
                "loss_curve": json.dumps(info["loss_curve"]) if "loss_curve" in info else None,
                "dev_curve": json.dumps(info["dev_curve"]) if "dev_curve" in info else None,
                "mlflow_run_id": info.get("mlflow_run_id"),
                "status": (
                    "failed"
                    if job.key in failed
                    else "trained"
                    if job.key in launched
                    else "stored"
                ),
            }
        )
    trained = tuple(j.key for j in jobs if j.key in launched)
    return PhaseResult(tuple(rows), trained, tuple(failed), first_error)


def _run_tune(
    todo: list[ModelJob], store: Store, compute: Compute, name: str, tracker: Tracker | None
) -> tuple[list[str], list[str]]:
    """(keys of the models that are still missing, the last line of each failed trial's error)."""
    import ray
    from ray import tune

    from mlit.plumbing import ingress, interrupts

    if not ray.is_initialized():
        ingress.install()  # the sweep serves its models on this Ray later (`mlit.plumbing.ingress`)
        ray.init()
    interrupts.install()  # Ray installs its own handlers: SIGTERM must stay an interrupt
    concurrent = check_resources(compute)
    wait_for_resources(compute)
    storage = compute.storage_path or str(Path(tempfile.gettempdir()) / "mlit-ray")
    storage_fs, storage_path = filesystem(storage)
    per_trial = compute.models_per_trial or -(-len(todo) // concurrent)
    groups = {
        f"g{i:03d}": todo[i * per_trial : (i + 1) * per_trial]
        for i in range(-(-len(todo) // per_trial))
    }
    names = {
        g: jobs[0].name if len(jobs) == 1 else f"{jobs[0].name}+{len(jobs) - 1}"
        for g, jobs in groups.items()
    }
    trainable = tune.with_parameters(
        _trial,
        groups=groups,
        store_root=store.root,
        compute=asdict(compute),
        storage=storage,
        tracker=tracker,
    )
    # The trial only drives a TorchTrainer; its workers hold the CPUs and GPUs. Tune needs the
    # trial to reserve something, and a CPU would starve the workers on a small machine, so it
    # reserves one MiB of Ray's memory resource instead.
    trainable = tune.with_resources(trainable, {"cpu": 0, "memory": 2**20})
    tuner = tune.Tuner(
        trainable,
        param_space={"group": tune.grid_search(sorted(groups))},
        tune_config=tune.TuneConfig(
            max_concurrent_trials=concurrent,
            trial_name_creator=lambda t: names[t.config["group"]],
            trial_dirname_creator=lambda t: f"{names[t.config['group']]}-{t.config['group']}",
        ),
        run_config=tune.RunConfig(
            # Unique even for two sweeps started in the same second on one storage path.
            name=f"{name}-train-{int(time.time())}-{os.getpid()}",
            storage_path=storage_path,
            storage_filesystem=storage_fs,
            failure_config=tune.FailureConfig(max_failures=compute.max_failures),
            verbose=0,
        ),
    )
    # Ctrl-C must reach us as KeyboardInterrupt (an interrupt, rc 130), not be taken by Tune's own
    # handler, which ends the experiment quietly and leaves us to call every unfinished model
    # "failed".
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
    grid = tuner.fit()
    missing = [j for j in todo if not store.has_model(j.key)]
    errors = []
    for job in missing:  # a model not retried says why (the trial itself ended well)
        reason = checkpoints.stopped(checkpointing(job, store.root, compute))
        if reason:
            console.say(f"[train] {job.name}: not retried: {reason}")
            errors.append(reason)
    errors += [str(e).strip().splitlines()[-1] for e in grid.errors if str(e).strip()]
    return [j.key for j in missing], errors


def _trial(
    config: dict, groups: dict, store_root: str, compute: dict, storage: str, tracker=None
) -> None:
    """Tune function trainable: build and fit one TorchTrainer for its model(s)."""
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    jobs: list[ModelJob] = groups[config["group"]]
    job = jobs[0]
    comp = Compute(**compute)
    use_gpu = comp.gpus_per_worker > 0
    storage_fs, storage_path = filesystem(storage)
    trainer = TorchTrainer(
        train_loop_per_worker=worker.loop,
        train_loop_config={
            "jobs": jobs,
            "store_root": store_root,
            "compute": comp,
            "tracker": tracker,
        },
        scaling_config=ScalingConfig(
            num_workers=comp.workers,
            use_gpu=use_gpu,
            resources_per_worker=comp.worker_resources(),
        ),
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        run_config=RunConfig(
            name=f"{job.name}-{job.key[:8]}-{int(time.time())}",
            storage_path=storage_path,
            storage_filesystem=storage_fs,
            callbacks=[TuneReportCallback()],
            failure_config=FailureConfig(max_failures=0),
        ),
    )
    trainer.fit()
