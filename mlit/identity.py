"""Model identity: what a trained model is, without Ray or torch.

A model is determined by its base model's identity (`mlit.model_refs.identity`), its mixture's
assignment, its training config and seed: `model_key` hashes exactly these, and the store files a
model under it. `plan_jobs` turns the mixtures of a plan into one `ModelJob` per distinct model.
The planner and the Tune phase take identity from here; the self-hosted judge's verdict keys name
its weights by `mlit.model_refs.identity` too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from mlit import mixtures, model_refs
from mlit.hyperparameters import TrainConfig
from mlit.store import content_key


@dataclass(frozen=True)
class ModelJob:
    """One model to train: a mixture on a base model with a training config."""

    name: str
    key: str
    base_model: str
    manifest: dict
    train: tuple[tuple[str, str], ...] = field(repr=False)
    dev: tuple[tuple[str, str], ...] = field(repr=False)
    config: TrainConfig


def model_key(base_id: str, mixture: mixtures.Mixture, config: TrainConfig) -> str:
    return content_key("model", base_id, mixture.hash, config.key_dict(), mixture.seed)


def plan_jobs(
    base_model: str,
    built: Sequence[mixtures.Mixture],
    frame,
    config: TrainConfig,
    base_id: str | None = None,
) -> list[ModelJob]:
    """One job per distinct model (mixtures with the same hash collapse into one)."""
    base_id = base_id or model_refs.identity(base_model)  # hashing a local base reads it
    jobs: dict[str, ModelJob] = {}
    for m in built:
        key = model_key(base_id, m, config)
        if key in jobs:
            continue
        train, dev = mixtures.materialize(m, frame)
        jobs[key] = ModelJob(
            m.name, key, base_model, m.manifest(), tuple(train), tuple(dev), config
        )
    return list(jobs.values())
