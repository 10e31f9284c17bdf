"""Checkpoint selection by dev-set ROUGE-L (the paper's rule, §2), and the checkpoints it rides on.

Every ``eval_every`` steps and at the last step, greedy answers to the dev set are scored with
multi-script ROUGE-L (`mlit.method.rouge`); the best weights so far are kept. The bookkeeping (best
score, its step, the curve, the losses) is plain data, saved with every in-run checkpoint
(`mlit.training.checkpoints`), so a resumed run picks the same best checkpoint as an uninterrupted one.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from mlit.generation import chat, decoding
from mlit.method import rouge
from mlit.method.hyperparameters import TrainConfig
from mlit.training import checkpoints

Example = tuple[str, str]  # (instruction, response)
Report = Callable[[dict], None]
Log = Callable[[int, dict], None]  # (step, metrics): an experiment tracker's live feed
LOGGED = ("loss", "learning_rate", "grad_norm")  # of the Trainer's logs, what a tracker gets


def dev_sampling(cfg: TrainConfig) -> decoding.Sampling:
    """How dev answers are generated. The paper names the metric (ROUGE-L on 250 dev examples)
    but not the decoding; greedy keeps the selection free of sampling noise, and the answers may
    be as long as the references they are scored against (the target limit, 512 in the paper)."""
    return decoding.Sampling(max_new_tokens=cfg.dev_max_new_tokens)


def dev_rouge_l(model, tokenizer, dev: Sequence[Example], cfg: TrainConfig) -> float:
    """Mean ROUGE-L of greedy answers on the dev set, sharded over ranks and averaged."""
    return dev_score(model, tokenizer, dev, cfg)[0]


def dev_score(model, tokenizer, dev: Sequence[Example], cfg: TrainConfig) -> tuple[float, int]:
    """(mean ROUGE-L, the dev examples it scored, over all ranks): selection's score, and the
    count the protocol report reads as the dev set that ran."""
    import torch
    import torch.distributed as dist

    distributed = dist.is_available() and dist.is_initialized()
    rank, world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
    shard = list(dev[rank::world])
    batches = math.ceil(math.ceil(len(dev) / world) / cfg.dev_batch_size)
    sampling = dev_sampling(cfg)
    total, count = 0.0, 0
    for b in range(batches):  # every rank runs the same number of batches (ZeRO-3 lockstep)
        batch = shard[b * cfg.dev_batch_size : (b + 1) * cfg.dev_batch_size]
        real = len(batch)
        batch = batch or list(dev[:1])  # a stand-in keeps an idle rank stepping with the others
        prompts = [chat.format_prompt(tokenizer, i) for i, _ in batch]
        outs = decoding.generate(model, tokenizer, prompts, sampling, synced=world > 1)
        if real:
            total += sum(
                rouge.rouge_l(o.text, ref) for o, (_, ref) in zip(outs, batch, strict=True)
            )
            count += real
    if distributed and world > 1:
        device = next(model.parameters()).device
        sums = torch.tensor([total, float(count)], dtype=torch.float64, device=device)
        dist.all_reduce(sums)
        total, count = float(sums[0]), int(sums[1])
    return total / max(count, 1), count


@dataclass
class Selection:
    """The dev-selection bookkeeping of one run (saved in every checkpoint)."""

    best: float = -1.0
    best_step: int = 0
    curve: list = field(default_factory=list)  # [step, dev ROUGE-L]
    losses: list = field(default_factory=list)  # [step, training loss]

    def record(self, step: int, score: float) -> bool:
        """Add one dev evaluation; True when it is the best so far (its weights are kept).
        The first of equal scores stays best: a later checkpoint must do strictly better."""
        self.curve.append([step, score])
        if score > self.best:
            self.best, self.best_step = score, step
            return True
        return False

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict) -> Selection:
        return cls(raw["best"], raw["best_step"], list(raw["curve"]), list(raw["losses"]))


def callback(
    selection: Selection,
    cfg: TrainConfig,
    tokenizer,
    dev: Sequence[Example],
    best_dir: Path,
    report: Report | None,
    checkpointing: checkpoints.Checkpointing | None,
    context: dict,
):
    """The HF ``TrainerCallback`` that scores the dev set, keeps the best weights, and asks the
    Trainer for a checkpoint every ``checkpointing.every`` steps (then uploads it).
    ``context`` carries the Trainer (set once it exists) and the extra fields of each report."""
    from transformers import TrainerCallback

    class DevSelection(TrainerCallback):
        def on_log(self, args, st, control, logs=None, **kw):
            if logs and "loss" in logs:
                selection.losses.append([st.global_step, float(logs["loss"])])
            if logs and context.get("log"):
                shown = {k: float(logs[k]) for k in LOGGED if isinstance(logs.get(k), int | float)}
                if shown:
                    context["log"](st.global_step, shown)

        def on_step_end(self, args, st, control, model=None, **kw):
            step = st.global_step
            context["step"] = step
            if checkpointing is not None and checkpointing.due(step, cfg.max_steps):
                control.should_save = True  # HF writes it after this step's log (and loss)
            if step % cfg.eval_every and step != cfg.max_steps:
                return
            score, context["dev_scored"] = dev_score(model, tokenizer, dev, cfg)
            if selection.record(step, score):
                context["trainer"].save_model(str(best_dir))  # every rank: ZeRO-3 gathers
            if context.get("log"):
                context["log"](step, {"dev_rouge_l": score, "best_dev_rouge_l": selection.best})
            if report is not None:
                loss = selection.losses[-1][1] if selection.losses else float("nan")
                report(
                    {
                        "step": step,
                        "dev_rouge_l": score,
                        "best_dev_rouge_l": selection.best,
                        "loss": loss,
                        **context.get("report_extra", {}),
                    }
                )

        def on_save(self, args, st, control, **kw):
            if checkpointing is None:
                return
            import shutil

            local = Path(args.output_dir) / f"checkpoint-{st.global_step}"
            state = selection.to_dict()
            checkpoints.save(checkpointing, st.global_step, local, state, best_dir)
            shutil.rmtree(local, ignore_errors=True)  # it is in the store; disk is for the next

    return DevSelection()
