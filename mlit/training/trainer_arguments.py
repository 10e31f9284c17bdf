"""The trainer's arguments: every keyword of its HF ``TrainingArguments`` (DeepSpeed config
included) as `keywords` builds them, and what the Trainer did with them as it ran (`as_run`).

The trainer builds its arguments from `keywords` alone, and the dry run's protocol report reads
the same function (without importing torch); after training, `as_run` reads the arguments the
Trainer holds, the learning rate of each logged step, the steps and the rows, so the report of
a run says what ran even where something changed them after they were built.
"""

from __future__ import annotations

from pathlib import Path

from mlit.method import hyperparameters
from mlit.method.hyperparameters import TrainConfig


def deepspeed_config(cfg: TrainConfig, on_gpu: bool) -> dict:
    """DeepSpeed config; "auto" values are filled in by HF from the TrainingArguments."""
    zero: dict = {"stage": cfg.zero_stage}
    if cfg.zero_stage == 3:
        # Consolidate full weights on save so `save_pretrained` output loads anywhere.
        zero["stage3_gather_16bit_weights_on_model_save"] = True
    if cfg.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": on_gpu}
    if cfg.offload_params:
        zero["offload_param"] = {"device": "cpu", "pin_memory": on_gpu}
    return {
        "train_micro_batch_size_per_gpu": "auto",
        "gradient_accumulation_steps": "auto",
        "train_batch_size": "auto",
        "gradient_clipping": "auto",
        "bf16": {"enabled": "auto"},
        "zero_optimization": zero,
        # HF's own AdamW works with every stage on CPU; DeepSpeed's CPU Adam needs a C++ build.
        "zero_force_ds_cpu_optimizer": False,
    }


def keywords(cfg: TrainConfig, work: Path, world: int, on_gpu: bool) -> dict:
    """Every keyword of the run's HF ``TrainingArguments``, DeepSpeed config included: what the
    trainer builds its arguments from, and what the dry run's protocol report reads (without
    importing torch)."""
    if cfg.bf16 is not None:
        bf16 = cfg.bf16
    elif on_gpu:
        import torch

        bf16 = torch.cuda.is_bf16_supported()
    else:
        bf16 = False
    return {
        "output_dir": str(work / "trainer"),
        "max_steps": cfg.max_steps,
        "learning_rate": cfg.learning_rate,
        "lr_scheduler_type": cfg.lr_scheduler,
        "warmup_steps": cfg.warmup_steps,
        "weight_decay": cfg.weight_decay,
        "per_device_train_batch_size": cfg.batch_plan(world)[0],
        "gradient_accumulation_steps": cfg.accumulation(world),
        "bf16": bf16,
        # Without CUDA, accelerate only sees the gloo group that Ray (or we) set up when told to
        # run on CPU; DeepSpeed still drives the optimizer through DS_ACCELERATOR=cpu.
        "use_cpu": not on_gpu,
        "deepspeed": deepspeed_config(cfg, on_gpu),
        "save_strategy": "no",
        "eval_strategy": "no",
        # The learning rate of every logged step is what the protocol report reads as run.
        "logging_steps": max(1, min(10, cfg.max_steps // 10)),
        "report_to": [],
        "seed": cfg.seed,
        "data_seed": cfg.seed,
        "remove_unused_columns": False,
        "disable_tqdm": True,
        "dataloader_num_workers": 0,
    }


def as_run(args, world: int, trainer_state, train, dev, encoded, observed: dict) -> dict:
    """What the run did, read off the running objects (rank 0), for the protocol report: the
    arguments as the Trainer holds them, the learning rate of each logged step, the steps taken,
    the rows it trained on and the dev examples selection scored."""
    lrs = [
        [e["step"], float(e["learning_rate"])]
        for e in trainer_state.log_history
        if "learning_rate" in e
    ]
    return {
        "learning_rates": lrs,
        "schedule": hyperparameters.schedule_of(lrs),
        "lr_scheduler_type": str(getattr(args.lr_scheduler_type, "value", args.lr_scheduler_type)),
        "steps": int(trainer_state.global_step),
        "batch": int(args.per_device_train_batch_size * args.gradient_accumulation_steps * world),
        "train_rows": len(train),
        "trained_rows": len(encoded),
        "dev_rows": len(dev),
        "dev_scored": observed.get("dev_scored"),
        "longest_input_tokens": max(
            (sum(1 for x in e["labels"] if x == -100) for e in encoded), default=0
        ),
        "longest_target_tokens": max(
            (sum(1 for x in e["labels"] if x != -100) for e in encoded), default=0
        ),
    }
