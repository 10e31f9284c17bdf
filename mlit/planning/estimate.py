"""What a sweep will cost, before launch: training and generation GPU-hours, judge calls and dollars.

    mlit estimate paper --params 1.5e9 --gpu h100 --gpus 8
    mlit estimate language_count --params 7e9 --gpu a100 --gpus 16 --judge-input-price 2.5

Every number comes from stated assumptions, printed with the result:

- training FLOPs = 6 x parameters x tokens (full fine-tuning; forward + backward), where tokens =
  steps x batch x (input + target tokens per example); dev-set generation adds 2 x parameters x
  (prompt + new tokens) per dev answer, every ``eval_every`` steps;
- generation FLOPs = 2 x parameters x (prompt + new tokens) per answer;
- GPU-hours = FLOPs / (peak FLOP/s x MFU) / 3600, at separate MFUs for training and decoding
  (decoding is memory-bound, so its MFU is much lower); wall time = GPU-hours / GPUs;
- where `benchmarks/gpu.py` has recorded a result for the GPU type (``benchmarks/results/gpu-*.json``,
  or ``--results DIR``), the training MFU is the measured one and generation takes the measured
  tokens/s per GPU (the best batch, of vLLM where it ran, scaled by the parameter ratio from the
  nearest measured shape) instead of an MFU; the output says which numbers were measured;
- judge calls = 2 per judged pair (both orders); tokens = template + instruction + two answers in,
  one digit out; dollars at the given price per million tokens;
- the store's saving = models that would be trained once per experiment minus distinct models.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

from mlit.data import dataset
from mlit.method import mixtures
from mlit.method.hyperparameters import TrainConfig
from mlit.providers.pricing import BATCH_DISCOUNT

PAPER = TrainConfig.paper()

# Dense bf16 peak FLOP/s per GPU (vendor figures, no sparsity).
GPU_PEAK = {"h100": 989e12, "h200": 989e12, "a100": 312e12, "l40s": 362e12, "a10g": 125e12}


@dataclass(frozen=True)
class Assumptions:
    params: float = 1.5e9
    gpu: str = "h100"
    gpus: int = 8
    train_mfu: float = 0.40
    generation_mfu: float = 0.05
    steps: int = PAPER.max_steps
    batch: int = PAPER.batch_size
    input_tokens: int = 180  # average instruction length (truncated at 1,024)
    target_tokens: int = 320  # average response length (truncated at 512)
    dev_size: int = mixtures.PAPER_DEV_SIZE
    eval_every: int = PAPER.eval_every
    new_tokens: int = 400  # average generated answer (up to 512)
    eval_instructions: int = dataset.PAPER_EVAL_SIZE
    judge_template_tokens: int = 120
    judge_input_price: float = 2.50  # dollars per million input tokens
    judge_output_price: float = 10.00  # dollars per million output tokens
    # Measured generation throughput per GPU (new tokens/s); None: from generation_mfu.
    generation_tokens_per_s: float | None = None
    measured_from: str | None = None  # the benchmark result the measured numbers come from

    def __post_init__(self) -> None:
        if self.gpu not in GPU_PEAK:
            raise ValueError(f"unknown GPU {self.gpu!r}; known: {', '.join(GPU_PEAK)}")
        if not 0 < self.train_mfu <= 1 or not 0 < self.generation_mfu <= 1:
            raise ValueError("MFU must be in (0, 1]")


@dataclass(frozen=True)
class Estimate:
    experiments: tuple[str, ...]
    model_slots: int  # models the experiments need, counted per experiment
    distinct_models: int  # after sharing through the store
    train_tokens: float
    train_gpu_hours: float
    generations: int
    generation_tokens: float
    generation_gpu_hours: float
    judge_calls: int
    judge_input_tokens: float
    judge_dollars: float
    wall_hours: float
    store_saves_models: int
    store_saves_gpu_hours: float


ESTIMATE_BASE = "estimate/base-model"  # a name, not a directory: planning builds nothing


def plan_for(name: str, preset: str = "paper"):
    """The sweep's own plan of one experiment (`mlit.planning.plan`): at the paper's scale with placeholder
    ids, or at the demo's on the bundled sample. The estimate counts nothing by itself."""
    from mlit.planning.config import SweepConfig
    from mlit.planning.plan import prepare

    return prepare(
        SweepConfig(experiment=name, preset=preset, dry_run=True, base_model=ESTIMATE_BASE)
    )


def _counts(names: list[str], preset: str = "paper") -> tuple[int, int, int, int]:
    """(model slots, distinct models, generations, judge calls) per evaluation instruction."""
    slots, keys, gens, calls = 0, set(), 0, 0
    for name in names:
        plan = plan_for(name, preset)
        c = plan.counts()
        slots += c.model_slots
        keys |= {plan.key_of[m.name] for m in plan.mixtures}
        gens += c.generation_units
        calls += 2 * (c.comparison_units - c.self_comparisons)
    return slots, len(keys), gens, calls


def estimate(names: list[str], a: Assumptions, preset: str = "paper") -> Estimate:
    slots, distinct, gen_units, call_units = _counts(names, preset)
    peak = GPU_PEAK[a.gpu]
    per_model_train = a.steps * a.batch * (a.input_tokens + a.target_tokens)
    dev_answers = (a.steps // a.eval_every) * a.dev_size
    per_model_flops = 6 * a.params * per_model_train + 2 * a.params * dev_answers * (
        a.input_tokens + a.new_tokens
    )
    per_model_gpu_h = per_model_flops / (peak * a.train_mfu) / 3600
    generations = gen_units * a.eval_instructions
    gen_tokens = generations * (a.input_tokens + a.new_tokens)
    if a.generation_tokens_per_s:  # decoding at the measured speed (prefill is small beside it)
        gen_gpu_h = generations * a.new_tokens / a.generation_tokens_per_s / 3600
    else:
        gen_gpu_h = 2 * a.params * gen_tokens / (peak * a.generation_mfu) / 3600
    calls = call_units * a.eval_instructions
    judge_in = calls * judge_call_tokens(a)
    dollars = judge_in / 1e6 * a.judge_input_price + calls / 1e6 * a.judge_output_price
    train_gpu_h = distinct * per_model_gpu_h
    return Estimate(
        experiments=tuple(names),
        model_slots=slots,
        distinct_models=distinct,
        train_tokens=distinct * per_model_train,
        train_gpu_hours=train_gpu_h,
        generations=generations,
        generation_tokens=gen_tokens,
        generation_gpu_hours=gen_gpu_h,
        judge_calls=calls,
        judge_input_tokens=judge_in,
        judge_dollars=dollars,
        wall_hours=(train_gpu_h + gen_gpu_h) / a.gpus,
        store_saves_models=slots - distinct,
        store_saves_gpu_hours=(slots - distinct) * per_model_gpu_h,
    )


def judge_call_tokens(a: Assumptions = Assumptions(), answer_cap: int | None = None) -> int:
    """Input tokens of one judge call: template, instruction and two answers (of the average
    length, or at most ``answer_cap`` tokens); the reply is one token."""
    answer = a.new_tokens if answer_cap is None else min(a.new_tokens, answer_cap)
    return a.judge_template_tokens + a.input_tokens + 2 * answer


def render(e: Estimate, a: Assumptions) -> str:
    lines = [
        f"estimate for {', '.join(e.experiments)} on {a.gpus} x {a.gpu.upper()}, "
        f"{a.params / 1e9:g}B parameters",
        f"  training:   {e.distinct_models} models ({e.model_slots} slots; the store saves "
        f"{e.store_saves_models} models = {e.store_saves_gpu_hours:,.1f} GPU-h), "
        f"{e.train_tokens:,.0f} tokens, {e.train_gpu_hours:,.1f} GPU-h at {a.train_mfu:.0%} MFU",
        f"  generation: {e.generations:,} answers, {e.generation_tokens:,.0f} tokens, "
        f"{e.generation_gpu_hours:,.1f} GPU-h at "
        + (
            f"{a.generation_tokens_per_s:,.0f} new tokens/s per GPU (measured)"
            if a.generation_tokens_per_s
            else f"{a.generation_mfu:.0%} MFU"
        ),
        f"  judge:      {e.judge_calls:,} calls, {e.judge_input_tokens:,.0f} input tokens, "
        f"${e.judge_dollars:,.0f} online at ${a.judge_input_price}/M in, "
        f"${a.judge_output_price}/M out; ${e.judge_dollars * BATCH_DISCOUNT:,.0f} through a "
        "Batch API (--judge-mode batch)",
        f"  wall time:  {e.wall_hours:,.1f} h (GPU-hours / GPUs, phases back to back)",
        "assumptions: " + ", ".join(f"{k}={v}" for k, v in asdict(a).items()),
        f"measured: training MFU and generation speed from {a.measured_from}"
        if a.measured_from
        else "measured: nothing for this GPU (run benchmarks/gpu.py on one to replace the "
        "assumed MFUs)",
    ]
    return "\n".join(lines)


RESULTS = Path(__file__).resolve().parent.parent / "benchmarks" / "results"


def measured(gpu: str, params: float, results: Path = RESULTS) -> dict | None:
    """Training MFU and generation tokens/s per GPU from the newest `benchmarks/gpu.py` result
    for this GPU type, scaled from the measured shape nearest in size; None when there is none."""
    files = sorted(Path(results).glob("gpu-*.json"), key=lambda f: f.stat().st_mtime, reverse=True)
    for path in files:
        result = json.loads(path.read_text())
        if result.get("smoke") or result.get("device") != "cuda":
            continue
        if gpu not in result.get("card", "").lower():
            continue
        rows = list(result["models"].values())
        row = min(rows, key=lambda r: abs(math.log(r["train"]["parameters"] / params)))
        engine = "vllm" if isinstance(row.get("generate_vllm"), list) else "hf"
        best = max(g["tokens_per_s"] for g in row[f"generate_{engine}"])
        return {
            "train_mfu": row["train"]["mfu"],
            # Decoding is bound by reading the weights: speed goes as 1 / parameters.
            "generation_tokens_per_s": best * row["train"]["parameters"] / params,
            "measured_from": f"{path.name} ({result['card']}, {engine} engine)",
        }
    return None
