"""What runs on every Ray Train worker of a trial: one model after another, each through the
plain training step (`mlit.training.trainer`), with its checkpoints in the store; rank 0 publishes
each model as soon as it is done (a retried trial skips what finished) and, with a tracker, logs
the model's training to its own MLflow run live (`mlit.results.tracking`).
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path

from mlit.planning.compute import Compute
from mlit.planning.model_keys import ModelJob
from mlit.results import tracking
from mlit.results.tracking import Tracker
from mlit.store.artifacts import Store
from mlit.training import checkpoints


def checkpointing(job: ModelJob, store_root: str, compute: Compute) -> checkpoints.Checkpointing:
    """Where and how often a model's training run checkpoints (default: every dev evaluation)."""
    every = compute.checkpoint_every
    every = job.config.eval_every if every is None else every
    return checkpoints.Checkpointing(store_root, job.key, every, compute.keep_checkpoints)


def loop(config: dict) -> None:
    """Runs on every Ray Train worker: the plain training step per model, rank 0 publishes each
    model as soon as it is done (so a retried trial skips what finished)."""
    store = Store(config["store_root"])
    for job in config["jobs"]:
        if not store.valid_model(job.key):
            ck = checkpointing(job, store.root, config["compute"])
            _train_one(job, store, ck, config.get("tracker"))


def not_retried(err: BaseException, ck: checkpoints.Checkpointing) -> str | None:
    """Why a failure would only repeat on retry (bad input; out of memory at the step where an
    earlier attempt ran out too), or None: a lost node, a killed process, anything else is
    retried, from the latest checkpoint."""
    from mlit.method.hyperparameters import TrainError

    if isinstance(err, TrainError):
        return f"bad input: {err}"
    text = f"{type(err).__name__}: {err}"
    if "OutOfMemoryError" in text or "out of memory" in text.lower():
        tried = checkpoints.attempts(ck)
        step = tried[-1].get("failed_at_step") if tried else None
        if any(a.get("failed_at_step") == step for a in tried[:-1] if a.get("out_of_memory")):
            return f"out of memory at step {step} twice ({text.splitlines()[0][:200]})"
        if tried:
            checkpoints.ended(ck, checkpoints.Attempt(tried[-1]["attempt"], 0), out_of_memory=True)
    return None


def model_metadata(folder: Path) -> dict:
    """What training wrote beside an exported model (`trainer.METADATA`)."""
    import json

    from mlit.training import trainer

    return json.loads((folder / trainer.METADATA).read_text())


def _train_one(
    job: ModelJob, store: Store, ck: checkpoints.Checkpointing, tracker: Tracker | None
) -> None:
    import ray.train

    from mlit.training import trainer

    rank = ray.train.get_context().get_world_rank()
    out = Path(tempfile.gettempdir()) / "mlit-train" / f"{job.key}-{rank}"
    # Rank 0 alone logs (every rank sees the same loss after DeepSpeed's reduction).
    run_id = tracking.child(tracker, job.name, job.key, _params(job)) if rank == 0 else None
    try:
        result = trainer.train_model(
            job.base_model,
            list(job.train),
            list(job.dev),
            job.config,
            out,
            metadata={"mixture": job.manifest, "model_key": job.key, "mixture_name": job.name},
            report=lambda metrics: ray.train.report({**metrics, "mixture": job.name}),
            checkpointing=ck,
            log=(lambda step, m: tracking.log(tracker, run_id, m, step)) if run_id else None,
        )
    except Exception as err:
        tracking.end(tracker, run_id, "FAILED")
        reason = not_retried(err, ck)
        if reason is None:
            raise  # Tune retries the trial; the retry resumes from the latest checkpoint
        checkpoints.stop(ck, reason)  # every rank fails alike on bad input: all move on
        return
    if rank == 0:
        info = {
            "model_key": job.key,
            "mixture": job.name,
            "mixture_hash": job.manifest["hash"],
            "best_dev_rouge_l": result.best_dev_rouge_l,
            "best_step": result.best_step,
            "wall_time_s": result.wall_time_s,
            "base_model": job.base_model,
            "effective_batch": result.effective_batch,
            "dropout_settings": model_metadata(out).get("dropout_settings", []),
            "resumed_from_step": result.resumed_from_step,
            "attempts": result.attempt,
            "as_run": result.as_run,  # what the protocol report reads (`trainer_arguments.as_run`)
            "loss_curve": [list(p) for p in result.losses],
            "dev_curve": [list(p) for p in result.curve],
            "mlflow_run_id": run_id,  # a later sweep that reuses the model links to this run
        }
        store.publish_model(out, job.key, info)
        shutil.rmtree(out, ignore_errors=True)
        if not ck.keep:
            checkpoints.delete(ck)  # the model is stored: its checkpoints have done their job
        if tracker is not None:
            best = {"best_step": result.best_step, "best_dev_rouge_l": result.best_dev_rouge_l}
            tracking.log(tracker, run_id, best, result.steps)
            tracking.end(tracker, run_id)


def _params(job: ModelJob) -> dict:
    """A model's child run params: its mixture, languages, key and training config."""
    return {
        "mixture": job.name,
        "languages": ",".join(job.manifest["recipe"]["languages"]),
        "counts": job.manifest["counts"],
        "model_key": job.key,
        "base_model": job.base_model,
        **{f"train.{k}": v for k, v in asdict(job.config).items()},
    }
