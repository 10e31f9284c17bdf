"""How each training trial runs on the cluster: workers, GPUs, retries, models per trial.

A typed part of the plan (`mlit.planning.plan`), read by the Tune phase (`mlit.training.trials`); plain data, no Ray.
"""

from __future__ import annotations

from dataclasses import dataclass


class ResourceError(RuntimeError):
    """A trial that can never be placed on this cluster."""


@dataclass(frozen=True)
class Compute:
    """How each trial runs. Comes from `--workers`, `--gpus-per-worker`, `--max-failures`,
    `--checkpoint-every` and `--keep-checkpoints` (`mlit.planning.plan.compute`); the preset sets
    ``models_per_trial``."""

    workers: int = 2
    gpus_per_worker: float = 0.0
    cpus_per_worker: float = 1.0
    max_failures: int = 3  # Tune retries a failed trial this many times (--max-failures)
    max_concurrent: int | None = None  # default: as many as the cluster holds
    # Models trained one after another inside one trial. 1 (the default) is one trial per
    # mixture. None spreads the models over as many trials as can run at once, which pays the
    # start-up of a trial (worker processes, imports, DeepSpeed set-up) once per trial instead of
    # once per model: on a 2-core demo machine that start-up costs more than the training itself.
    models_per_trial: int | None = 1
    storage_path: str | None = None  # Tune/Train storage; must be shared on a multi-node cluster
    # Steps between in-run checkpoints, written into the store (`mlit.training.checkpoints`); None: the
    # dev-evaluation interval; 0: none (a retried trial then starts from step 0).
    checkpoint_every: int | None = None
    keep_checkpoints: bool = False  # keep them once the model is stored

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ResourceError(f"--workers must be at least 1, got {self.workers}")
        if self.max_failures < 0 or (self.checkpoint_every or 0) < 0:
            raise ResourceError("--max-failures and --checkpoint-every must be 0 or more")
        if self.gpus_per_worker < 0 or self.cpus_per_worker <= 0:
            raise ResourceError("GPUs per worker must be >= 0 and CPUs per worker > 0")

    def worker_resources(self) -> dict[str, float]:
        res = {"CPU": self.cpus_per_worker}
        if self.gpus_per_worker:
            res["GPU"] = self.gpus_per_worker
        return res
