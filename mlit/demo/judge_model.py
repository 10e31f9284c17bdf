"""The demo judge: the demo base model fine-tuned to compare two answers, so demo verdicts mean
something without an API.

    mlit demo-judge ~/.cache/mlit/demo/judge

Training pairs come from the bundled training split only. For each instruction the reference
answer is set against three kinds of negative, each shown in both orders, and the target is the
single digit of the better answer:

- another instruction's answer (same language): off-topic;
- the reference in another language than the instruction: wrong language;
- the reference cut to its first few words: incomplete.

Prompts use mlit's compact judge template (``templates/judge_compact.txt``: the same structure as
the default one, in fewer tokens, which a model this small learns far faster); sweeps that use the
demo judge send that template. Accuracy and order
consistency on pairs built the same way from the *eval* split (never trained on) are measured and
written next to the model in ``mlit_judge.json``.
"""

from __future__ import annotations

import json
import os
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import polars as pl

from mlit.data import dataset
from mlit.judging import host
from mlit.judging.judge import Judge
from mlit.plumbing import console
from mlit.plumbing.atomic import atomic_dir

MARKER = "mlit_judge.json"
TEMPLATE = host.DEMO_JUDGE_TEMPLATE


@dataclass(frozen=True)
class DemoJudgeConfig:
    # On the width-64 base: 800 steps 0.74 held-out accuracy (122 s), 500 steps 0.74 (76 s),
    # 400 steps 0.72 (53 s, on the 400-step base); chance is 0.5.
    steps: int = 400
    batch_size: int = 16  # pairs per step; each is shown in both orders, so 2x rows
    learning_rate: float = 1e-3
    max_answer_tokens: int = 16
    max_instruction_tokens: int = 12
    seed: int = 0


default_dir = host.demo_judge_dir


def _negatives(rows: list[dict], by_id_lang: dict, rng: random.Random) -> list[tuple[dict, str]]:
    """(row, negative answer) triples: off-topic, wrong language, truncated."""
    out = []
    langs = sorted({r["lang"] for r in rows})
    ids = sorted({r["example_id"] for r in rows})
    for r in rows:
        other_id = rng.choice([i for i in ids if i != r["example_id"]])
        out.append((r, by_id_lang[(other_id, r["lang"])]))
        other_lang = rng.choice([lang for lang in langs if lang != r["lang"]])
        out.append((r, by_id_lang[(r["example_id"], other_lang)]))
        words = r["response"].split()
        cut = max(1, min(len(words) // 3, 4))
        if len(words) > cut + 1:
            out.append((r, " ".join(words[:cut])))
    return out


def build_pairs(frame: pl.DataFrame, split: str, seed: int) -> list[tuple[str, str, str, str]]:
    """(instruction, answer 1, answer 2, correct digit) for one split, both orders of each pair."""
    rows = [
        r for r in frame.filter(pl.col("split") == split).iter_rows(named=True) if r["response"]
    ]
    by_id_lang = {(r["example_id"], r["lang"]): r["response"] for r in rows}
    rng = random.Random(seed)
    pairs = []
    for r, negative in _negatives(rows, by_id_lang, rng):
        pairs.append((r["instruction"], r["response"], negative, "1"))
        pairs.append((r["instruction"], negative, r["response"], "2"))
    return pairs


def evaluate(model, tokenizer, pairs, judge: Judge, batch_size: int = 32) -> dict:
    """Accuracy (the likelier of '1'/'2' at the answer position) and order consistency."""
    import torch

    from mlit.generation import chat, decoding

    one = tokenizer("1", add_special_tokens=False)["input_ids"][0]
    two = tokenizer("2", add_special_tokens=False)["input_ids"][0]
    picks = []
    model.eval()
    with torch.no_grad():
        for i in range(0, len(pairs), batch_size):
            chunk = pairs[i : i + batch_size]
            ids = [
                decoding.encode_prompt(
                    tokenizer, chat.format_prompt(tokenizer, judge.prompt(q, a, b))
                )
                for q, a, b, _ in chunk
            ]
            width = max(map(len, ids))
            pad = tokenizer.pad_token_id
            batch = torch.tensor([[pad] * (width - len(x)) + x for x in ids])
            mask = torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in ids])
            pos = (mask.cumsum(-1) - 1).clamp(min=0)
            logits = model(input_ids=batch, attention_mask=mask, position_ids=pos).logits[:, -1]
            picks += [
                "1" if a > b else "2" for a, b in zip(logits[:, one], logits[:, two], strict=True)
            ]
    correct = sum(p == t for p, (*_, t) in zip(picks, pairs, strict=True))
    # pairs come in (order 1, order 2) couples: consistent when both orders pick the same answer
    consistent = sum(
        (picks[i] == "1") == (picks[i + 1] == "2") for i in range(0, len(picks) - 1, 2)
    )
    return {
        "pairs": len(pairs),
        "accuracy": correct / max(1, len(pairs)),
        "order_consistency": consistent / max(1, len(pairs) // 2),
    }


def is_built(out_dir: Path, base_dir: Path, cfg: DemoJudgeConfig) -> bool:
    marker = Path(out_dir) / MARKER
    if not marker.exists():
        return False
    meta = json.loads(marker.read_text())
    return (
        meta.get("config") == asdict(cfg)
        and meta.get("base") == _relative_base(out_dir, base_dir)
        and meta.get("base_recipe") == _base_recipe(base_dir)
    )


def _relative_base(out_dir: Path, base_dir: Path) -> str:
    """The base's folder as seen from the judge's: a cache copied whole to another home (or
    another machine) still names the same base, and its judge is not rebuilt."""
    return os.path.relpath(Path(base_dir).resolve(), Path(out_dir).resolve())


def _base_recipe(base_dir: Path) -> str | None:
    """The recipe of the base the judge was tuned from: a base rebuilt in the same folder with
    other settings (another head size, say) must not keep a judge tuned from the old one."""
    marker = Path(base_dir) / "mlit_demo.json"  # `base_model.MARKER`, without importing torch
    return json.loads(marker.read_text()).get("recipe_hash") if marker.exists() else None


def build_demo_judge(
    out_dir: str | Path | None = None,
    base_dir: str | Path | None = None,
    cfg: DemoJudgeConfig = DemoJudgeConfig(),
    progress: bool = True,
) -> Path:
    """Fine-tune the demo base model into a pairwise judge (cached); returns its directory."""
    from mlit.demo import base_model

    out = Path(out_dir) if out_dir else default_dir()
    base = Path(base_dir) if base_dir else base_model.build_demo_model(progress=progress)
    if is_built(out, base, cfg):
        return out
    import torch
    from tqdm import tqdm
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from mlit.generation import chat, decoding

    torch.manual_seed(cfg.seed)
    start = time.time()
    judge = Judge("demo-judge", template=TEMPLATE)
    frame = dataset.sample()
    train_pairs = build_pairs(frame, "train", cfg.seed)
    eval_pairs = build_pairs(frame, "eval", cfg.seed + 1)
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base)
    trunc = lambda t: chat.truncate_text(tokenizer, t, cfg.max_answer_tokens)  # noqa: E731
    short = lambda q: chat.truncate_text(tokenizer, q, cfg.max_instruction_tokens)  # noqa: E731
    digit = {d: tokenizer(d, add_special_tokens=False)["input_ids"][0] for d in ("1", "2")}
    encoded = [
        (
            decoding.encode_prompt(
                tokenizer, chat.format_prompt(tokenizer, judge.prompt(short(q), trunc(a), trunc(b)))
            ),
            digit[d],
        )
        for q, a, b, d in train_pairs
    ]
    # Both orders of a pair sit side by side (build_pairs), and a batch always takes both: the
    # gradient of "prefer position 1" cancels, which is what teaches content over position.
    couples = [(encoded[i], encoded[i + 1]) for i in range(0, len(encoded) - 1, 2)]
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, cfg.learning_rate, total_steps=cfg.steps, pct_start=max(0.1, 3 / cfg.steps)
    )
    rng = random.Random(cfg.seed)
    pad, eos = tokenizer.pad_token_id, tokenizer.eos_token_id
    model.train()
    bar = tqdm(
        range(cfg.steps),
        desc="training demo judge",
        disable=None if progress else True,
        file=console.bar_stream(),
    )
    for _ in bar:
        rows = [row for couple in rng.sample(couples, cfg.batch_size) for row in couple]
        ids = [[*prompt, d] for prompt, d in rows]
        width = max(map(len, ids))
        inputs = torch.tensor([[pad] * (width - len(x)) + x for x in ids])
        mask = torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in ids])
        position = (mask.cumsum(-1) - 1).clamp(min=0)
        hidden = model.model(input_ids=inputs, attention_mask=mask, position_ids=position)
        # The loss only needs two positions (the digit, then EOS): projecting just those onto
        # the vocabulary instead of every position makes each step about a third cheaper.
        logits = model.lm_head(hidden.last_hidden_state[:, -2:])
        targets = torch.tensor([[d, eos] for _, d in rows])
        loss = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), targets.reshape(-1)
        )
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        bar.set_postfix(loss=f"{loss.item():.3f}")
    truncated_eval = [(short(q), trunc(a), trunc(b), t) for q, a, b, t in eval_pairs]
    held_out = evaluate(model, tokenizer, truncated_eval, judge)
    meta = {
        "config": asdict(cfg),
        "base": _relative_base(out, base),
        "base_recipe": _base_recipe(base),
        "train_pairs": len(train_pairs),
        "held_out": held_out,
        "chance": 0.5,
        "seconds": round(time.time() - start, 1),
        "template_sha": judge.template_hash(),
        "note": "demo judge: pairs built from the bundled sample; held-out pairs from its eval split",
    }

    def write(tmp: Path) -> None:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / MARKER).write_text(json.dumps(meta, indent=1))

    return atomic_dir(write, out)
