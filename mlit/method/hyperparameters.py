"""Training hyperparameters: the paper's (§2) and the demo's, and what a training run returns.

Light on purpose (no torch): the plan, the estimate and the run folder read these without loading
the training stack (`mlit.training.trainer`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace


def dropout_settings(config) -> list[str]:
    """Every dropout setting an HF model config has (``attention_dropout``, ``hidden_dropout_prob``,
    ``resid_pdrop``, ...): the paper's dropout applies to all of them, not to a fixed list."""
    names = config.to_dict() if hasattr(config, "to_dict") else vars(config)
    return sorted(
        n
        for n, v in names.items()
        if ("dropout" in n or n.endswith("pdrop")) and isinstance(v, float)
    )


def attention_only(settings: list[str]) -> bool:
    """True when a model's dropout settings all sit inside attention (Llama, Qwen, Mistral, Gemma
    have only ``attention_dropout``): a dropout set there alone leaves the residual stream, where
    most of dropout's effect is, untouched."""
    return all("attn" in n or "attention" in n for n in settings)


def dropout_reach(settings: list[str], scope: str) -> list[str]:
    """Where the run's dropout goes: the model's own settings, plus residual dropout on every
    attention and MLP output (added by mlit, `mlit.training.trainer.residual_dropout`) when the model has
    only attention dropout and ``scope`` is "all"."""
    extra = ["residual (added)"] if scope == "all" and attention_only(settings) else []
    return [*settings, *extra]


DROPOUT_SCOPES = ("all", "config")


class TrainError(ValueError):
    """A training request that cannot run as given."""


@dataclass(frozen=True)
class TrainConfig:
    max_steps: int = 2000
    learning_rate: float = 1e-5
    lr_scheduler: str = "constant"
    warmup_steps: int = 0
    batch_size: int = 128  # effective batch, reached through gradient accumulation
    per_device_batch_size: int = 4
    dropout: float = 0.05
    dropout_scope: str = "all"  # "config": only the base model's own dropout settings
    max_input_tokens: int = 1024
    max_target_tokens: int = 512
    weight_decay: float = 0.0
    zero_stage: int = 2
    offload_optimizer: bool = False
    offload_params: bool = False
    bf16: bool | None = None  # None: on where CUDA supports it
    lora_rank: int = 0  # 0: full fine-tuning
    eval_every: int = 250
    dev_max_new_tokens: int = 512  # dev answers as long as the references (the target limit)
    dev_batch_size: int = 16
    seed: int = 0

    # Fields that change speed or memory but not the trained weights: left out of the model key,
    # so the same model trained with ZeRO-2 on 8 GPUs or ZeRO-3 on 2 is found in the store.
    RUNTIME_ONLY = (
        "zero_stage",
        "offload_optimizer",
        "offload_params",
        "per_device_batch_size",
        "dev_batch_size",
    )

    def __post_init__(self) -> None:
        if self.zero_stage not in (0, 1, 2, 3):
            raise TrainError(f"ZeRO stage must be 0, 1, 2 or 3, got {self.zero_stage}")
        if self.offload_params and self.zero_stage != 3:
            raise TrainError("parameter offload needs ZeRO stage 3")
        for name in ("max_steps", "batch_size", "per_device_batch_size", "eval_every"):
            if getattr(self, name) < 1:
                raise TrainError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.max_input_tokens < 1 or self.max_target_tokens < 2:
            raise TrainError("max_input_tokens must be >= 1 and max_target_tokens >= 2")
        if not 0 <= self.dropout < 1:
            raise TrainError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.dropout_scope not in DROPOUT_SCOPES:
            raise TrainError(
                f"dropout scope must be one of {', '.join(DROPOUT_SCOPES)}, got {self.dropout_scope!r}"
            )
        if self.dev_max_new_tokens < 1:
            raise TrainError(
                f"dev_max_new_tokens must be at least 1, got {self.dev_max_new_tokens}"
            )
        if self.lora_rank < 0:
            raise TrainError(f"lora_rank must be 0 (off) or positive, got {self.lora_rank}")

    @classmethod
    def paper(cls, **overrides) -> TrainConfig:
        """§2 of the paper: 2,000 steps, constant LR 1e-5, batch 128, dropout 0.05, 1024/512."""
        return replace(cls(), **overrides)

    @classmethod
    def demo(cls, **overrides) -> TrainConfig:
        """Tiny settings that learn something on the bundled sample in about a minute of CPU."""
        base = cls(
            max_steps=40,
            learning_rate=2e-3,
            warmup_steps=0,
            batch_size=16,
            per_device_batch_size=8,
            max_input_tokens=64,
            max_target_tokens=64,
            eval_every=20,
            dev_max_new_tokens=32,  # as long as the demo's answers (`SweepConfig.sampling_params`)
        )
        return replace(base, **overrides)

    def key_dict(self) -> dict:
        """What determines the trained weights (the part of the config hashed into the model key)."""
        return {
            f.name: getattr(self, f.name) for f in fields(self) if f.name not in self.RUNTIME_ONLY
        }

    def batch_plan(self, world_size: int) -> tuple[int, int]:
        """(per-device batch, accumulation steps) whose product with the worker count is exactly
        ``batch_size``: the paper's 128 on any worker count that divides it, never 132 or 144.
        The per-device batch is lowered when needed (it is a runtime setting, not in the key)."""
        if world_size < 1 or self.batch_size % world_size:
            fits = [w for w in range(1, min(self.batch_size, 256) + 1) if self.batch_size % w == 0]
            raise TrainError(
                f"a batch of exactly {self.batch_size} cannot be split over {world_size} "
                f"workers; worker counts that work: {', '.join(map(str, fits))}"
            )
        per_worker = self.batch_size // world_size
        per_device = math.gcd(per_worker, self.per_device_batch_size)
        return per_device, per_worker // per_device

    def accumulation(self, world_size: int) -> int:
        return self.batch_plan(world_size)[1]


@dataclass(frozen=True)
class TrainResult:
    output_dir: str
    best_step: int
    best_dev_rouge_l: float
    curve: tuple[tuple[int, float], ...]  # (step, dev ROUGE-L)
    losses: tuple[tuple[int, float], ...] = field(default=())  # (step, training loss)
    steps: int = 0
    wall_time_s: float = 0.0
    effective_batch: int = 0
    resumed_from_step: int = 0  # the checkpoint this attempt went on from (0: from the start)
    attempt: int = 1
    # What ran, for the protocol report (`mlit.training.trainer_arguments.as_run`).
    as_run: dict = field(default_factory=dict)


# --------------------------------------------------------------------------------------------
# Data


def schedule_of(points) -> str:
    """A learning-rate schedule as the paper writes one ("1e-05 constant"), from the rate of
    each step that ran ([step, lr] pairs); one that changes is described by its shape."""
    if not points:
        return "not observed (no step logged)"
    rates = [lr for _, lr in points]
    peak = max(rates)
    if peak - min(rates) <= 1e-9 * max(peak, 1e-30):
        return f"{peak:g} constant"
    top = rates.index(peak)
    rise = f"rising to {peak:g} by step {points[top][0]}" if top else f"{peak:g} at first"
    if abs(rates[-1] - peak) <= 1e-9 * peak:
        return f"{rise}, then held (the rate changes)"
    return f"{rise}, then down to {rates[-1]:g} at step {points[-1][0]} (the rate changes)"
