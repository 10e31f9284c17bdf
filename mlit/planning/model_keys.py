"""Model identity: what a trained model is, without Ray or torch.

A model is determined by its base model's identity (`mlit.store.model_refs.identity`: a hub id at its
revision, or the sha256 of a local folder's files, tokenizer and chat template included), its
mixture's assignment, the *text* of its training and dev rows, its training config and seed.
`model_key` hashes exactly these, so "stored" means "built from exactly these inputs": the same
example ids with a changed response are a new model. `plan_models` turns the mixtures of a plan
into served name -> key and one `ModelJob` per distinct model. The planner and the Tune phase
take identity from here; the self-hosted judge's verdict keys name its weights by
`mlit.store.model_refs.identity` too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from mlit.method import mixtures
from mlit.method.hyperparameters import TrainConfig
from mlit.store import model_refs
from mlit.store.artifacts import content_key

NO_DATA = "no-data"  # planning without a dataset (paper-scale estimates): keys are placeholders


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


def rows_hash(train: Sequence[tuple[str, str]], dev: Sequence[tuple[str, str]]) -> str:
    """The hash of a mixture's training and dev texts (instruction, response), in order."""
    return content_key("rows", [list(r) for r in train], [list(r) for r in dev])


def model_key(
    base_id: str, mixture: mixtures.Mixture, config: TrainConfig, rows: str = NO_DATA
) -> str:
    return content_key("model", base_id, mixture.hash, config.key_dict(), mixture.seed, rows)


def plan_models(
    base_model: str,
    built: Sequence[mixtures.Mixture],
    frame,
    config: TrainConfig,
    base_id: str | None = None,
) -> tuple[dict[str, str], list[ModelJob]]:
    """(mixture name -> model key, one job per distinct model). Each mixture's rows are read
    from the dataset once, for its key and its job; without a dataset there are no jobs and the
    keys cover no text."""
    base_id = base_id or model_refs.identity(base_model)  # hashing a local base reads it
    key_of: dict[str, str] = {}
    jobs: dict[str, ModelJob] = {}
    for m in built:
        if frame is None:
            key_of[m.name] = model_key(base_id, m, config)
            continue
        train, dev = mixtures.materialize(m, frame)
        key = key_of[m.name] = model_key(base_id, m, config, rows_hash(train, dev))
        if key not in jobs:  # mixtures with the same key collapse into one job
            jobs[key] = ModelJob(
                m.name, key, base_model, m.manifest(), tuple(train), tuple(dev), config
            )
    return key_of, list(jobs.values())
