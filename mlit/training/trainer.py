"""The training step for one mixture: HF `Trainer` with DeepSpeed ZeRO, best checkpoint by dev ROUGE-L.

Runs the same way standalone (one process, ``torchrun`` on a GPU box) and inside Ray Train workers;
it imports no Ray. Ray's worker loop (`mlit.training.trials`) calls `train_model` with a ``report`` function.

    mlit train monolingual --base-model Qwen/Qwen2.5-1.5B --preset paper   # through Ray Tune
    torchrun --nproc-per-node 8 my_script.py    # where my_script.py calls train_model(...)

What it does, in order:

1. loads the base model and tokenizer (a hub name or a local directory) and sets dropout;
2. formats each instruction with the tokenizer's chat template (or `mlit.generation.chat.PLAIN_TEMPLATE`),
   truncating the instruction to ``max_input_tokens`` and the response to ``max_target_tokens``;
   the loss covers response tokens only (instruction tokens get label -100);
3. trains with a DeepSpeed config built from `TrainConfig` (ZeRO stage 0-3, optional offload,
   bf16 on GPU; ``DS_ACCELERATOR=cpu`` where there is no CUDA);
4. every ``eval_every`` steps and at the end, generates greedy answers for the dev set, scores them
   with multi-script ROUGE-L and keeps the weights when they are the best so far
   (`mlit.training.selection`);
5. with ``checkpointing``, writes a checkpoint into the store every K steps and first resumes from
   the latest one that verifies (`mlit.training.checkpoints`): a retried run ends with the same model;
6. exports the best checkpoint in HF format (LoRA adapters merged, and also kept in ``adapter/``
   for vLLM's multi-LoRA serving) with ``mlit_model.json``.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from mlit.generation import chat, decoding
from mlit.method.hyperparameters import (
    TrainConfig,
    TrainError,
    TrainResult,
    dropout_reach,
    dropout_settings,
)
from mlit.plumbing.atomic import atomic_dir
from mlit.plumbing.ports import free_port
from mlit.store import model_refs
from mlit.training import checkpoints, selection, trainer_arguments
from mlit.training.selection import Report, dev_rouge_l

__all__ = ["TrainConfig", "TrainError", "dev_rouge_l", "train_model"]

Example = tuple[str, str]  # (instruction, response)
METADATA = "mlit_model.json"


def encode_example(tokenizer, instruction: str, response: str, cfg: TrainConfig) -> dict:
    """Token ids with the loss mask: instruction tokens carry label -100, response tokens do not."""
    instruction = chat.truncate_text(tokenizer, instruction, cfg.max_input_tokens)
    prompt_ids = decoding.encode_prompt(tokenizer, chat.format_prompt(tokenizer, instruction))
    response_ids = tokenizer(response, add_special_tokens=False)["input_ids"]
    response_ids = [*response_ids[: cfg.max_target_tokens - 1], tokenizer.eos_token_id]
    return {
        "input_ids": prompt_ids + response_ids,
        "attention_mask": [1] * (len(prompt_ids) + len(response_ids)),
        "labels": [-100] * len(prompt_ids) + response_ids,
    }


# --------------------------------------------------------------------------------------------
# Model


def load_model_and_tokenizer(base_model: str, cfg: TrainConfig):
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    try:
        source = model_refs.source(base_model)
    except ValueError as err:
        raise TrainError(str(err)) from err
    try:
        config = AutoConfig.from_pretrained(source)
        tokenizer = AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError) as err:
        raise TrainError(
            f"cannot load base model {base_model!r}: not a local model directory and not "
            f"loadable from the hub ({str(err).splitlines()[0]})"
        ) from err
    for name in dropout_settings(config):
        setattr(config, name, cfg.dropout)
    model = AutoModelForCausalLM.from_pretrained(source, config=config)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if tokenizer.eos_token_id is None:
        raise TrainError(f"base model {base_model!r}: its tokenizer has no EOS token")
    return model, tokenizer


def residual_dropout(model, cfg: TrainConfig) -> list[str]:
    """Dropout on every attention and MLP output, where the base model has only attention
    dropout (Llama, Qwen, Mistral, Gemma): the paper's 0.05 then reaches the residual stream as
    it does in models with hidden dropout. Forward hooks, so nothing changes in the saved
    weights or config. Returns where dropout goes (`hyperparameters.dropout_reach`)."""
    import torch.nn.functional as F

    settings = dropout_settings(model.config)
    reach = dropout_reach(settings, cfg.dropout_scope)
    if len(reach) == len(settings) or cfg.dropout == 0:
        return settings

    def hook(module, args, output):
        if not module.training:
            return output
        if isinstance(output, tuple):  # attention: (output, weights, ...)
            return (F.dropout(output[0], cfg.dropout, True), *output[1:])
        return F.dropout(output, cfg.dropout, True)

    hooked = 0
    for name, module in model.named_modules():
        if name.rsplit(".", 1)[-1] in ("self_attn", "mlp"):
            module.register_forward_hook(hook)
            hooked += 1
    return reach if hooked else settings


def _prepare_distributed_env() -> None:
    """Standalone runs have no launcher: give DeepSpeed a one-process group to join."""
    import torch
    import torch.distributed as dist

    if not torch.cuda.is_available():
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    if dist.is_available() and dist.is_initialized():
        # Launched by Ray Train (or another launcher that set up the group itself): make the
        # group visible to HF/DeepSpeed, which read these variables.
        rank, world = dist.get_rank(), dist.get_world_size()
        os.environ.setdefault("RANK", str(rank))
        os.environ.setdefault("WORLD_SIZE", str(world))
        os.environ.setdefault("LOCAL_RANK", str(rank % max(1, torch.cuda.device_count() or world)))
    elif "WORLD_SIZE" not in os.environ:
        port = free_port()
        os.environ.update(
            RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)
        )
    if not torch.cuda.is_available() and os.environ.get("WORLD_SIZE") == "1":
        _skip_shared_memory_allreduce()


def _skip_shared_memory_allreduce() -> None:
    """On CPU, DeepSpeed JIT-compiles a shared-memory allreduce kernel (g++, about 70 s on two
    cores) when its process group starts, and rebuilt it on every sweep here: in the demo that
    was most of the first model of each trial (117 s against 20 s for the next). A single
    worker reduces nothing, so it is skipped; with several workers DeepSpeed falls back to
    torch.distributed (gloo) whenever the kernel is absent, so only speed is at stake there."""
    import importlib

    # By module name: `import deepspeed.comm.torch` would bind the `torch` that deepspeed.comm's
    # namespace re-exports (PyTorch itself), not DeepSpeed's backend module.
    backend = importlib.import_module("deepspeed.comm.torch")
    backend.build_shm_op = lambda: None


# --------------------------------------------------------------------------------------------
# Training


def training_arguments(cfg: TrainConfig, work: Path, world: int, on_gpu: bool):
    """The HF ``TrainingArguments`` of a training run (also what `benchmarks/gpu.py` times, so
    its figures are this step's)."""
    from transformers import TrainingArguments

    return TrainingArguments(**trainer_arguments.keywords(cfg, work, world, on_gpu))


def train_model(
    base_model: str,
    train: Sequence[Example],
    dev: Sequence[Example],
    cfg: TrainConfig,
    output_dir: str | Path,
    metadata: dict | None = None,
    report: Report | None = None,
    checkpointing: checkpoints.Checkpointing | None = None,
    log: selection.Log | None = None,
) -> TrainResult:
    """Fine-tune ``base_model`` on ``train`` and export the best checkpoint by dev ROUGE-L;
    with ``checkpointing``, resume from the model's latest checkpoint and write new ones;
    ``log(step, metrics)`` sees loss and learning rate at each logged step and dev ROUGE-L at
    each evaluation, as they happen (an experiment tracker)."""
    if not train:
        raise TrainError("no training examples")
    if not dev:
        raise TrainError("no dev examples: checkpoint selection needs a dev set")
    _prepare_distributed_env()
    import torch
    from transformers import DataCollatorForSeq2Seq, PrinterCallback, Trainer

    start = time.time()
    output_dir = Path(output_dir)
    work = output_dir.with_name(f".{output_dir.name}.work")
    shutil.rmtree(work, ignore_errors=True)  # an earlier attempt's leftovers are not this run's
    model, tokenizer = load_model_and_tokenizer(base_model, cfg)
    # Where the paper's dropout reached (recorded with the model; an empty list means the
    # architecture has no dropout setting and none is applied).
    metadata = {**(metadata or {}), "dropout_settings": residual_dropout(model, cfg)}
    if cfg.lora_rank:
        model = _with_lora(model, cfg)
    on_gpu = torch.cuda.is_available()
    world = int(os.environ.get("WORLD_SIZE", "1"))
    encoded = [encode_example(tokenizer, i, r, cfg) for i, r in train]
    args = training_arguments(cfg, work, world, on_gpu)
    best_dir = work / "best"
    restored = checkpoints.restore(checkpointing, work) if checkpointing else None
    state = selection.Selection.from_dict(restored.state) if restored else selection.Selection()
    if restored:
        checkpoints.report(restored)
    resumed = restored.step if restored else 0
    attempt = (
        checkpoints.begin(checkpointing, resumed, restored.damaged if restored else ())
        if checkpointing
        else None
    )
    context = {"report_extra": {"resumed_from_step": resumed}, "log": log}
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=encoded,
        data_collator=DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100),
        processing_class=tokenizer,
        callbacks=[
            selection.callback(state, cfg, tokenizer, dev, best_dir, report, checkpointing, context)
        ],
    )
    context["trainer"] = trainer
    trainer.remove_callback(PrinterCallback)  # progress goes through `report`, not stdout dicts
    try:
        trainer.train(resume_from_checkpoint=str(restored.path) if restored else None)
    except BaseException as err:
        if attempt is not None and int(os.environ.get("RANK", "0")) == 0:
            checkpoints.ended(
                checkpointing,
                attempt,
                failed_at_step=context.get("step", resumed),
                error=f"{type(err).__name__}: {str(err).strip()[-300:]}",
            )
        raise
    if not trainer.is_deepspeed_enabled:  # a silent fallback would make ZeRO settings a lie
        raise TrainError("the HF Trainer did not start DeepSpeed; check the deepspeed install")

    result = TrainResult(
        output_dir=str(output_dir),
        best_step=state.best_step,
        best_dev_rouge_l=state.best,
        curve=tuple(map(tuple, state.curve)),
        losses=tuple(map(tuple, state.losses)),
        steps=cfg.max_steps,
        wall_time_s=round(time.time() - start, 2),
        effective_batch=world * cfg.batch_plan(world)[0] * cfg.accumulation(world),
        resumed_from_step=resumed,
        attempt=attempt.number if attempt else 1,
        as_run=trainer_arguments.as_run(
            trainer.args, world, trainer.state, train, dev, encoded, context
        ),
    )
    if int(os.environ.get("RANK", "0")) == 0:
        _export(base_model, best_dir, output_dir, tokenizer, cfg, result, metadata)
        shutil.rmtree(work, ignore_errors=True)
    _barrier()
    return result


def _with_lora(model, cfg: TrainConfig):
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(
        r=cfg.lora_rank,
        lora_alpha=2 * cfg.lora_rank,
        lora_dropout=cfg.dropout,
        target_modules="all-linear",
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, lora)


def _export(base_model, best_dir: Path, out: Path, tokenizer, cfg, result, metadata) -> None:
    from mlit.results.run_folder import (
        versions,  # Polars: not needed to train (a bare GPU box has none)
    )

    """Write the best checkpoint as a plain HF model directory, atomically."""
    meta = {
        **metadata,
        "base_model": base_model,
        "train_config": asdict(cfg),
        "best_step": result.best_step,
        "best_dev_rouge_l": result.best_dev_rouge_l,
        "dev_rouge_l_curve": [list(p) for p in result.curve],
        "loss_curve": [list(p) for p in result.losses],
        "steps": result.steps,
        "resumed_from_step": result.resumed_from_step,
        "effective_batch": result.effective_batch,
        "wall_time_s": result.wall_time_s,
        "as_run": result.as_run,
        "versions": versions(),
    }

    def write(tmp: Path) -> None:
        if cfg.lora_rank:
            from peft import PeftModel

            base, _ = load_model_and_tokenizer(base_model, cfg)
            merged = PeftModel.from_pretrained(base, str(best_dir)).merge_and_unload()
            merged.save_pretrained(tmp)
            _export_adapter(best_dir, tmp / "adapter", base_model)
        else:
            shutil.copytree(best_dir, tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / METADATA).write_text(json.dumps(meta, indent=1, ensure_ascii=False))

    atomic_dir(write, out)


def _export_adapter(best_dir: Path, out: Path, base_model: str) -> None:
    """The LoRA adapter beside the merged weights: vLLM serves every LoRA model of a sweep as an
    adapter on one engine of their base (`mlit.serving.engines.vllm.lora_targets`), not an engine each."""
    out.mkdir()
    shutil.copy2(best_dir / "adapter_model.safetensors", out)
    config = json.loads((best_dir / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = base_model  # the base as the sweep named it
    (out / "adapter_config.json").write_text(json.dumps(config, indent=1))


def _barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()
