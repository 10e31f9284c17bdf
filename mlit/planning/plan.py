"""The plan: a `SweepConfig` read once into the typed parts each phase takes.

Everything that can be decided before compute is decided here, in one place, for the dry run, the
estimate, `mlit train` and the real run alike: the mixtures, the model keys, the training jobs, the
generation tasks and the judge pairs. Which model answers which language and what is compared with
what are the experiment's rules (`mlit.method.experiments.Experiment`); the plan only applies them.

Planning reads the dataset and does nothing else: it builds no model, starts nothing, and imports
no trainer, Tune, engine or demo builder. The base model comes in ready (`mlit.sweep.pipeline`'s
preparation stage builds the demo's).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

import polars as pl

from mlit.data import dataset
from mlit.generation.answer_client import SamplingParams, Task
from mlit.judging import host
from mlit.judging.judge import Judge, Pair
from mlit.method import experiments, mixtures
from mlit.method.experiments import Experiment
from mlit.method.hyperparameters import TrainConfig
from mlit.planning import engine_choice
from mlit.planning.compute import Compute
from mlit.planning.config import SweepConfig
from mlit.planning.model_keys import ModelJob, plan_models
from mlit.store import model_refs

PLACEHOLDER_BASE = "mlit-demo-base"  # planning only: a dry run does not build the demo model


@dataclass(frozen=True)
class JudgeSpec:
    """Who judges: a litellm model (``model``), or the demo judge self-hosted on our Serve app."""

    model: str | None
    api_base: str | None
    api_key_env: str | None
    prompt: str | None  # a template file; None: the judge's default
    model_dir: str | None  # a self-hosted HF judge; None with no ``model``: the demo judge
    concurrency: int
    mode: str = "online"
    max_cost: float | None = None
    input_price: float | None = None
    output_price: float | None = None
    rpm: float | None = None
    tpm: float | None = None
    batch_size: int = 50_000
    batch_poll_s: float = 10.0

    @property
    def batch(self) -> bool:
        return self.mode == "batch"

    def prices(self):
        """`pricing.Prices` of the judge (given, or litellm's), or None (self-hosted, unpriced)."""
        from mlit.providers import pricing

        if self.self_hosted and self.input_price is None and self.output_price is None:
            return None
        return pricing.prices_for(self.model, self.input_price, self.output_price)

    def batch_options(self):
        """`batch_api.BatchOptions` in batch mode, None online."""
        if not self.batch:
            return None
        from mlit.providers import batch_api

        return batch_api.BatchOptions(max_requests=self.batch_size, poll_s=self.batch_poll_s)

    @property
    def self_hosted(self) -> bool:
        return self.model is None

    def build(self, judge_dir: str | None = None) -> Judge:
        """The `Judge` (template read and checked). A self-hosted judge is served by our own app
        on a port chosen per run, so its verdict keys name the judge's weights instead of the
        port: a rerun finds them whatever the port."""
        if not self.self_hosted:
            return Judge(
                self.model,
                api_base=self.api_base,
                api_key_env=self.api_key_env,
                template=self.prompt,
                concurrency=self.concurrency,
                rpm=self.rpm,
                tpm=self.tpm,
            )
        weights = judge_dir or host.weights(self.model_dir)
        return Judge(
            f"openai/{host.JUDGE_NAME}",
            template=self.prompt or host.DEMO_JUDGE_TEMPLATE,
            concurrency=self.concurrency,
            endpoint_id=f"mlit-serve:{model_refs.identity(weights)}",
        )


@dataclass(frozen=True)
class ServingSpec:
    port: int | None  # None: a free port
    # Rows per decode step: the sweep keeps 64 generation requests (128 judge requests) in flight.
    max_batch_size: int = 64
    max_models_per_replica: int = 32
    engine: str = "hf"
    # A sweep that trains on GPUs serves on them too: one GPU per model-server replica, and one
    # model-server shard per GPU of the cluster (`mlit.serving.app.shards_for`).
    gpus_per_replica: float = 0.0

    @property
    def models_at_once(self) -> int:
        """Models loaded per replica. A vLLM engine holds its KV cache and worker processes, so
        generation (one model after another) keeps two: the one answering and the next."""
        return 2 if self.engine == "vllm" else self.max_models_per_replica


@dataclass(frozen=True)
class Counts:
    """What a plan costs, in units both the dry run and `mlit estimate` print."""

    model_slots: int  # mixtures the experiment needs, baselines included
    distinct_models: int  # after mixtures with the same model key collapse
    generation_units: int  # (model, eval language) pairs to answer
    comparison_units: int  # (candidate, baseline, eval language) comparisons
    self_comparisons: int  # comparisons of a model with itself: 50 by definition, no judge call
    eval_instructions: int

    @property
    def generations(self) -> int:
        return self.generation_units * self.eval_instructions

    @property
    def judge_calls(self) -> int:
        return 2 * (self.comparison_units - self.self_comparisons) * self.eval_instructions


@dataclass(frozen=True)
class Plan:
    config: SweepConfig
    experiment: Experiment
    frame: pl.DataFrame | None  # None: planning without data (paper scale, dry run)
    mixtures: tuple[mixtures.Mixture, ...]
    key_of: Mapping[str, str]  # served name -> model key (the base model by its id)
    base_model: str
    eval_ids: tuple[str, ...]
    train: TrainConfig
    compute: Compute
    sampling: SamplingParams
    judge: JudgeSpec
    serving: ServingSpec
    jobs: tuple[ModelJob, ...]  # one per distinct model; empty without data

    def model_dirs(self, local_dir) -> dict[str, dict]:
        """Served name -> {path, model_key, mixture, mixture_hash}: what models.json records."""
        models = {
            m.name: {
                "path": str(local_dir(self.key_of[m.name])),
                "model_key": self.key_of[m.name],
                "mixture": m.name,
                "mixture_hash": m.hash,
            }
            for m in self.mixtures
        }
        if self.experiment.scores_against_base:
            models[experiments.BASE] = {
                "path": self.base_model,
                "mixture": None,
                "model_key": self.key_of[experiments.BASE],
            }
        return models

    def on_base(self, base_model: str) -> Plan:
        """The same plan on another base model: its keys and jobs follow the base's identity."""
        key_of, jobs = _models(self.experiment, self.mixtures, self.frame, base_model, self.train)
        return replace(self, key_of=key_of, base_model=base_model, jobs=jobs)

    def evals(self) -> pl.DataFrame:
        return self.frame.filter(pl.col("split") == "eval")

    @property
    def prompt_limit(self) -> int | None:
        """Evaluation instructions are cut to this many tokens before generation, as training
        cuts its inputs (App. C: 1,024); None: no cut (``--prompt-tokens 0``)."""
        limit = self.config.prompt_tokens
        return (self.train.max_input_tokens if limit is None else limit) or None

    def generation_tasks(self, cut: Callable[[str], str] | None = None) -> list[Task]:
        """Every answer the sweep needs: each model in each evaluation language it answers.
        ``cut`` shortens each instruction as training did (`chat.instruction_cutter`)."""
        need = self.experiment.answering()
        rows = self.evals().select("example_id", "lang", "instruction").rows()
        if cut is not None:
            rows = [(ex, lang, cut(instruction)) for ex, lang, instruction in rows]
        return [
            Task(name, self.key_of[name], ex, lang, instruction)
            for name, langs in sorted(need.items())
            for ex, lang, instruction in rows
            if lang in langs
        ]

    def judge_pairs(
        self, answers: Mapping[tuple[str, str, str], str], cut: Callable[[str], str] | None = None
    ) -> list[Pair]:
        """Every comparison per instruction; ``answers`` maps (model, lang, example) -> text;
        ``cut`` gives the judge each instruction as the models were given it."""
        by_lang = self.evals().partition_by("lang", as_dict=True)
        pairs = []
        for cand, base, lang in self.experiment.comparisons():
            rows = by_lang.get((lang,), pl.DataFrame(schema=dataset.SCHEMA))
            for ex, instruction in rows.select("example_id", "instruction").rows():
                instruction = cut(instruction) if cut is not None else instruction
                pairs.append(
                    Pair(
                        cand,
                        base,
                        lang,
                        ex,
                        instruction,
                        answers.get((cand, lang, ex)),
                        answers.get((base, lang, ex)),
                        self.key_of[cand],
                        self.key_of[base],
                    )
                )
        return pairs

    def counts(self) -> Counts:
        comparisons = self.experiment.comparisons()
        return Counts(
            model_slots=len(self.mixtures),
            distinct_models=len({self.key_of[m.name] for m in self.mixtures}),
            generation_units=sum(map(len, self.experiment.answering().values())),
            comparison_units=len(comparisons),
            self_comparisons=sum(self.key_of[c] == self.key_of[b] for c, b, _ in comparisons),
            eval_instructions=len(self.eval_ids),
        )


def train_config(cfg: SweepConfig) -> TrainConfig:
    make = TrainConfig.demo if cfg.is_demo else TrainConfig.paper
    overrides: dict = {"zero_stage": cfg.zero_stage, "lora_rank": cfg.lora_rank, "seed": cfg.seed}
    if cfg.max_steps is not None:
        overrides["max_steps"] = cfg.max_steps
    if cfg.eval_every is not None:
        overrides["eval_every"] = cfg.eval_every
    if cfg.dev_max_tokens is not None:
        overrides["dev_max_new_tokens"] = cfg.dev_max_tokens
    return make(dropout_scope=cfg.dropout_scope, **overrides)


def compute(cfg: SweepConfig) -> Compute:
    return Compute(
        workers=cfg.workers or (1 if cfg.is_demo else 2),
        gpus_per_worker=cfg.gpus_per_worker,
        storage_path=str((cfg.run_dir() / "ray").resolve()),
        max_failures=cfg.max_failures,
        checkpoint_every=cfg.checkpoint_every,
        keep_checkpoints=cfg.keep_checkpoints,
        # The demo's models train in seconds; its trials each take a share of them so the
        # start-up of a trial is paid a few times, not 22 times (see `Compute.models_per_trial`).
        models_per_trial=None if cfg.is_demo else 1,
    )


def experiment(cfg: SweepConfig) -> Experiment:
    exp = experiments.get(cfg.experiment, cfg.seed, cfg.pairs)
    return exp.restricted(cfg.languages) if cfg.languages else exp


def _load_frame(cfg: SweepConfig, exp: Experiment) -> pl.DataFrame | None:
    if cfg.dry_run and cfg.preset == "paper" and cfg.data == "sample":
        return None  # plan at the paper's scale with placeholder ids
    frame = dataset.open_source(cfg.data)
    frame = frame.filter(pl.col("lang").is_in(sorted(exp.all_languages())))
    report = dataset.validate(frame, sorted(exp.all_languages()))
    if not report.ok:
        raise dataset.DataError(
            f"dataset {cfg.data!r} cannot be used for {exp.name}:\n{report.summary()}\n"
            "(translate missing languages with `mlit translate`)"
        )
    return frame


def prepare(cfg: SweepConfig, base_model: str | None = None) -> Plan:
    """Everything that can be decided before any compute: mixtures, jobs, model keys.
    ``base_model``: the model ready to train on (default: ``--base-model``, else a placeholder
    that names the demo base model before it is built)."""
    exp = experiment(cfg)
    frame = _load_frame(cfg, exp)
    if frame is None:
        ids = mixtures.placeholder_ids(cfg.budget or mixtures.PAPER_BUDGET)
        eval_ids = tuple(f"eval-{i:04d}" for i in range(dataset.PAPER_EVAL_SIZE))
    else:
        ids, eval_ids = dataset.train_ids(frame), tuple(dataset.eval_ids(frame))
    built = tuple(experiments.build_all(exp, ids, cfg.budget, cfg.seed, None, True))
    base = base_model or cfg.base_model or PLACEHOLDER_BASE
    tc = train_config(cfg)
    comp = compute(cfg)
    tc.batch_plan(comp.workers)  # the exact batch on this worker count, or an error naming counts
    key_of, jobs = _models(exp, built, frame, base, tc)
    judge = JudgeSpec(
        cfg.judge,
        cfg.judge_api_base,
        cfg.judge_api_key_env,
        cfg.judge_prompt,
        cfg.judge_model_dir,
        # A self-hosted judge is our own server: twice its batch keeps one batch waiting while
        # one runs (measured: 64 in flight, 77 s for the demo's 3,072 calls). An API judge gets
        # fewer at once, for its rate limits.
        cfg.judge_concurrency or (32 if cfg.judge else 128),
        cfg.judge_mode,
        cfg.max_cost,
        cfg.judge_input_price,
        cfg.judge_output_price,
        cfg.judge_rpm,
        cfg.judge_tpm,
        cfg.judge_batch_size,
        cfg.judge_batch_poll,
    )
    return Plan(
        cfg,
        exp,
        frame,
        built,
        key_of,
        base,
        eval_ids,
        tc,
        comp,
        cfg.sampling_params(),
        judge,
        ServingSpec(
            cfg.serve_port,
            engine=_engine(cfg),
            gpus_per_replica=1.0 if cfg.gpus_per_worker > 0 else 0.0,
        ),
        jobs,
    )


def _models(exp: Experiment, built, frame, base: str, tc: TrainConfig):
    """(served name -> model key, one job per distinct model) on a base model."""
    base_id = model_refs.identity(base)
    key_of, jobs = plan_models(base, built, frame, tc, base_id)
    if exp.scores_against_base:
        key_of[experiments.BASE] = base_id
    return key_of, tuple(jobs)


def _engine(cfg) -> str:
    """The serving engine, resolved before anything runs (a missing vLLM is an error now, not
    after training). ``auto`` takes vLLM where it is installed and training uses GPUs."""
    return engine_choice.resolve(cfg.engine, cfg.gpus_per_worker)
