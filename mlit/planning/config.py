"""The sweep config: one frozen dataclass, the only thing a sweep script writes.

It is light on purpose (no Ray, no torch, no orchestrator), so a script, the flags and the run folder
can import it without pulling in the pipeline. Each field's ``metadata["help"]`` is the help of its
generated flag (`mlit.cli.flags`), so a new field gets a flag without anyone listing it twice.

The config is checked once, here, for what needs no I/O (names, ranges); `mlit.planning.plan` turns it into
the typed parts each phase takes.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path

from mlit.generation.answer_client import SamplingParams
from mlit.method import experiments, languages

PRESETS = ("demo", "paper")
# What every output of a demo run (console, figures, results page) says about itself.
DEMO_NOTE = (
    "DEMO RUN: tiny models trained on the bundled sample; the numbers show the pipeline at work, "
    "not the paper's findings."
)


def _opt(default, help: str, **extra):
    return field(default=default, metadata={"help": help, **extra})


@dataclass(frozen=True)
class SweepConfig:
    experiment: str = field(metadata={"help": "Experiment of the paper to run."})
    preset: str = _opt("demo", "'demo' (embedded default: CPU, sample, tiny models) or 'paper'.")
    base_model: str | None = _opt(None, "HF hub name or local model directory (default: demo).")
    judge: str | None = _opt(None, "litellm model string (default: the demo judge on Ray Serve).")
    judge_api_base: str | None = _opt(None, "Judge endpoint (self-hosted judges).")
    judge_api_key_env: str | None = _opt(None, "Environment variable holding the judge API key.")
    judge_prompt: str | None = _opt(
        None, "Judge template: paper, rubric, compact or a file (default: paper; demo: compact)."
    )
    judge_model_dir: str | None = _opt(None, "HF judge model directory to self-host on Serve.")
    judge_concurrency: int | None = _opt(
        None,
        "Judge requests in flight (default: 128 for a self-hosted judge, twice the batch its "
        "server runs; 32 for an API judge).",
    )
    judge_mode: str = _opt(
        "online",
        "online, or batch: the judge calls through the provider's Batch API (half price, "
        "resumable by batch id; OpenAI-compatible judges).",
    )
    max_cost: float | None = _opt(
        None,
        "Dollars the judge may cost: a plan expected to cost more stops before any work; a run "
        "stops before it would pass it (resumable).",
    )
    judge_input_price: float | None = _opt(
        None, "Judge $ per million input tokens (default: litellm's price of --judge)."
    )
    judge_output_price: float | None = _opt(
        None, "Judge $ per million output tokens (default: litellm's price of --judge)."
    )
    judge_rpm: float | None = _opt(None, "Judge requests per minute the provider allows.")
    judge_tpm: float | None = _opt(None, "Judge tokens per minute the provider allows.")
    judge_batch_size: int = _opt(50_000, "Judge calls per batch (batch mode; OpenAI's limit).")
    judge_batch_poll: float = _opt(
        10.0, "Seconds before a batch is first polled; later polls back off to 5 minutes."
    )
    data: str = _opt("sample", "'sample', a JSONL/Parquet path or 'hf:NAME'.")
    languages: tuple[str, ...] | None = _opt(None, "Restrict to these languages, e.g. 'fi,en,ru'.")
    pairs: tuple[str, ...] | None = _opt(
        None, "Bilingual pairs, e.g. 'es-en,ar-it' (default: es+en, the rest at random by seed)."
    )
    output: str | None = _opt(None, "Run folder (default: results/<experiment>).")
    store: str | None = _opt(None, "Store folder or URI (default: ~/.cache/mlit/store).")
    workers: int | None = _opt(None, "Ray Train workers per trial (default: demo 1, paper 2).")
    gpus_per_worker: float = _opt(0.0, "GPUs per training worker (0: CPU).")
    zero_stage: int = _opt(2, "DeepSpeed ZeRO stage 0-3.")
    lora_rank: int = _opt(0, "LoRA rank (0: full fine-tuning).")
    seed: int = _opt(0, "Seed of mixtures, training and sampling.")
    budget: int | None = _opt(None, "Examples per mixture (default: every training example).")
    max_steps: int | None = _opt(None, "Training steps (default: the preset's).")
    eval_every: int | None = _opt(
        None,
        "Steps between dev ROUGE-L evaluations, each a point of the curve and a candidate "
        "checkpoint (default: the preset's: 20 demo, 250 paper; the last step always counts).",
    )
    dropout_scope: str = _opt(
        "all",
        "Where the dropout goes: all (the base model's dropout settings, plus dropout on every "
        "attention and MLP output when the model has only attention dropout, as Llama and Qwen "
        "do) or config (the model's own settings only).",
    )
    dev_max_tokens: int | None = _opt(
        None,
        "Longest greedy dev answer scored for checkpoint selection (default: the target limit, "
        "512 in the paper preset; demo 32).",
    )
    prompt_tokens: int | None = _opt(
        None,
        "Cut evaluation instructions to this many tokens before generation, as training cuts "
        "its inputs (default: the training input limit, 1,024 in the paper; 0: no cut).",
    )
    checkpoint_every: int | None = _opt(
        None,
        "Steps between checkpoints inside a trial, written into the store; a retried trial goes "
        "on from the latest (default: every dev evaluation; 0: none).",
    )
    max_failures: int = _opt(
        3, "Retries of a failed trial (a lost node, a killed worker), each from its checkpoint."
    )
    keep_checkpoints: bool = _opt(
        False, "Keep a model's checkpoints in the store once the model is stored."
    )
    # 64, the server's batch: answers go one model after another, and with 128 in flight the
    # batches at each model boundary split in two (demo generation 70 s at 64; 77-93 s at 128).
    generation_concurrency: int = _opt(64, "Generation requests in flight.")
    sampling: SamplingParams | None = _opt(
        None, "Sampling, e.g. 'temperature=0.7,top_p=0.9,max_tokens=32' (default: the preset's)."
    )
    serve_port: int | None = _opt(None, "Port of the Serve app (default: a free one).", flag="port")
    engine: str = _opt(
        "hf", "Serving engine: hf (ours), vllm (needs `make vllm-env`), or auto (vllm on GPUs)."
    )
    download_cache_gb: float | None = _opt(
        None,
        "Gigabytes this node and each serving replica keep of models downloaded from object "
        "storage; the least recently used go first (default: $MLIT_DOWNLOAD_CACHE_GB or 200).",
    )
    pretraining_shares: str | None = _opt(None, "JSON file {lang: share} for §4.2.")
    judge_check: str | None = _opt(
        None,
        "A `mlit judge check --out` table: each evaluation language's judge agreement with "
        "humans shown beside its scores, scores where it is within noise of chance marked.",
    )
    judge_check_data: str | None = _opt(
        None,
        "Human preference pairs (MM-Eval's shape: a .parquet/.jsonl file or a hub dataset) to "
        "check the run's judge on, in its evaluation languages, before its scores are read "
        "(the demo checks its judge on the bundled sample).",
    )
    tracking_uri: str | None = _opt(
        None,
        "MLflow tracking server, e.g. http://127.0.0.1:5000 (default: $MLFLOW_TRACKING_URI; "
        "off when neither): a run per sweep, a child run per model trained, logged live.",
    )
    n_boot: int = _opt(1000, "Bootstrap replicates for the confidence intervals.")
    max_error_rate: float = _opt(
        0.05, "Largest share of failed answers or judged pairs a run may have and still succeed."
    )
    dry_run: bool = _opt(False, "Print the plan; run nothing.")
    verbose: bool = _opt(
        False,
        "Show library output (Ray, Tune, Serve, DeepSpeed, transformers) on the console "
        "instead of RUN_DIR/logs/mlit.log.",
    )

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise ValueError(f"--preset must be 'demo' or 'paper', got {self.preset!r}")
        exp = experiments.get(self.experiment, self.seed, self.pairs)  # unknown names, bad pairs
        if self.preset == "paper" and not self.dry_run:
            _paper_requirements(self, exp.table_kind)
        if self.languages is not None:
            object.__setattr__(self, "languages", languages.parse(self.languages))
        _check_ranges(self)

    @property
    def is_demo(self) -> bool:
        return self.preset == "demo"

    def run_dir(self) -> Path:
        return Path(self.output or Path("results") / self.experiment)

    def sampling_params(self) -> SamplingParams:
        if self.sampling is not None:
            return self.sampling
        if self.is_demo:
            # 32 new tokens: the demo judge learnt on answers of at most 16 tokens, so longer
            # answers only lengthen its prompts (and generation); 48 cost a third more time.
            return SamplingParams(temperature=0.7, top_p=0.9, max_tokens=32, seed=self.seed)
        return SamplingParams(seed=self.seed)  # the paper's: p=0.9, T=0.7, 512 tokens

    def to_dict(self) -> dict:
        """JSON-ready (run.json); `from_dict` reads it back."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["languages"] = list(self.languages) if self.languages else None
        out["pairs"] = list(self.pairs) if self.pairs else None
        out["sampling"] = vars(self.sampling).copy() if self.sampling else None
        return out

    @classmethod
    def from_dict(cls, raw: dict) -> SweepConfig:
        """A config written by `to_dict` (or by an older mlit: unknown keys are dropped)."""
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in raw.items() if k in known}
        for name in ("languages", "pairs"):
            if values.get(name):
                values[name] = tuple(values[name])
        if values.get("sampling"):
            values["sampling"] = SamplingParams(**values["sampling"])
        return cls(**values)


def _paper_requirements(cfg: SweepConfig, table_kind: str) -> None:
    """What a real run of the paper preset needs (a dry run plans the paper without them)."""
    if not (cfg.base_model and cfg.judge):
        raise ValueError("--preset paper needs --base-model and --judge")
    if table_kind == "pretraining" and not cfg.pretraining_shares:
        raise ValueError(
            "--preset paper correlates with the base model's pretraining data (§4.2): pass "
            '--pretraining-shares FILE, a JSON object of document shares, e.g. {"ar": 0.011, '
            "\"cs\": 0.006, ...}; the demo's character-share proxy is not the paper's statistic"
        )


# Numeric fields and their lowest allowed value. Zero is an error, never "the default": a user who
# types --workers 0 gets told, not a silent 1 (the default is what leaving the flag out gives).
_MINIMUM = {
    "judge_concurrency": 1,
    "max_cost": 0,
    "judge_input_price": 0,
    "judge_output_price": 0,
    "judge_rpm": 0.001,
    "judge_tpm": 1,
    "judge_batch_size": 1,
    "judge_batch_poll": 0.01,
    "workers": 1,
    "gpus_per_worker": 0,
    "lora_rank": 0,
    "budget": 1,
    "max_steps": 1,
    "eval_every": 1,
    "checkpoint_every": 0,
    "dev_max_tokens": 1,
    "prompt_tokens": 0,
    "max_failures": 0,
    "generation_concurrency": 1,
    "n_boot": 1,
    "download_cache_gb": 0.001,
}


def _check_ranges(cfg: SweepConfig) -> None:
    for name, low in _MINIMUM.items():
        value = getattr(cfg, name)
        if value is not None and value < low:
            flag = name.replace("_", "-")
            raise ValueError(f"--{flag} must be at least {low}, got {value}")
    if cfg.zero_stage not in (0, 1, 2, 3):
        raise ValueError(f"--zero-stage must be 0, 1, 2 or 3, got {cfg.zero_stage}")
    if not 0 <= cfg.max_error_rate <= 1:
        raise ValueError(f"--max-error-rate must be in [0, 1], got {cfg.max_error_rate}")
    if cfg.dropout_scope not in ("all", "config"):
        raise ValueError(f"--dropout-scope must be all or config, got {cfg.dropout_scope!r}")
    if cfg.judge_mode not in ("online", "batch"):
        raise ValueError(f"--judge-mode must be online or batch, got {cfg.judge_mode!r}")
    if cfg.judge_mode == "batch" and not cfg.judge:
        raise ValueError(
            "--judge-mode batch needs an API judge (--judge, e.g. openai/gpt-4o): the self-hosted "
            "judge answers online at no cost"
        )
    if cfg.engine not in ("hf", "vllm", "auto"):
        raise ValueError(f"--engine must be hf, vllm or auto, got {cfg.engine!r}")
    if cfg.serve_port is not None and not 1 <= cfg.serve_port <= 65535:
        raise ValueError(f"--port must be in 1-65535, got {cfg.serve_port}")
    if cfg.sampling is not None and cfg.sampling.max_tokens < 1:
        raise ValueError(f"sampling max_tokens must be at least 1, got {cfg.sampling.max_tokens}")
