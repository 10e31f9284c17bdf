"""The judgments table: one row per (candidate, baseline, eval language, example), made from the
records of the pair's two orders, and the rule that turns two choices into win, tie or loss.

Order 1 shows the candidate as Answer 1, order 2 as Answer 2. A *win* is the candidate chosen in
both orders, a *loss* the baseline chosen in both, a *tie* orders that disagree; a pair with a
failed or unparseable order is an ``error``, never folded into ties or losses.
"""

from __future__ import annotations

import polars as pl

# What a verdict is worth to the candidate (the paper's IF score, and a judge check's agreement).
VALUES = {"win": 1.0, "tie": 0.5, "loss": 0.0}

JUDGMENT_COLUMNS = {
    "candidate": pl.String,
    "baseline": pl.String,
    "eval_lang": pl.String,
    "example_id": pl.String,
    "verdict": pl.String,  # win | tie | loss | error
    "self_comparison": pl.Boolean,
    "raw_1": pl.String,  # judge output with the candidate as Answer 1
    "raw_2": pl.String,  # judge output with the candidate as Answer 2
    "parse_1": pl.String,  # text | logprobs | unparseable | error | cached-... | self
    "parse_2": pl.String,
    "choice_1": pl.Int64,
    "choice_2": pl.Int64,
    "cached_1": pl.Boolean,
    "cached_2": pl.Boolean,
    "error": pl.String,
    "latency_s": pl.Float64,
    "cost_usd": pl.Float64,
    "prompt_tokens": pl.Int64,
    "completion_tokens": pl.Int64,
    "judge": pl.String,
}


def pair_verdict(choice_1: int | None, choice_2: int | None) -> str:
    """Order 1 shows the candidate as Answer 1, order 2 as Answer 2."""
    if choice_1 is None or choice_2 is None:
        return "error"
    picked = (choice_1 == 1) + (choice_2 == 2)
    return {2: "win", 1: "tie", 0: "loss"}[picked]


def row(judge: str, p, r1: dict | None, r2: dict | None) -> dict:
    """A pair's row of the judgments table from the records of its two orders."""
    row = {
        "candidate": p.candidate,
        "baseline": p.baseline,
        "eval_lang": p.eval_lang,
        "example_id": p.example_id,
        "judge": judge,
        "self_comparison": p.is_self,
    }
    if p.is_self:
        return {**row, "verdict": "tie", "parse_1": "self", "parse_2": "self", "cost_usd": 0.0}
    # An empty answer is an answer (the model said nothing) and is judged; only a missing one
    # (its generation failed) makes the pair an error.
    if r1 is None or r2 is None:
        return {**row, "verdict": "error", "error": "an answer is missing (generation failed)"}
    errors = [r["error"] for r in (r1, r2) if r["status"] != "ok"]
    c1, c2 = r1.get("choice"), r2.get("choice")
    return {
        **row,
        "verdict": "error" if errors else pair_verdict(c1, c2),
        "raw_1": r1.get("raw"),
        "raw_2": r2.get("raw"),
        "parse_1": r1.get("parse", "error"),
        "parse_2": r2.get("parse", "error"),
        "choice_1": c1,
        "choice_2": c2,
        "cached_1": r1["cached"],
        "cached_2": r2["cached"],
        "error": "; ".join(errors) or None,
        "latency_s": sum(r.get("latency_s") or 0 for r in (r1, r2)),
        "cost_usd": sum(r.get("cost_usd") or 0 for r in (r1, r2)),
        "prompt_tokens": sum(r.get("prompt_tokens") or 0 for r in (r1, r2)),
        "completion_tokens": sum(r.get("completion_tokens") or 0 for r in (r1, r2)),
    }


def error_summary(judgments: pl.DataFrame) -> str | None:
    """A one-paragraph account of failed pairs, or None when there are none."""
    errors = judgments.filter(pl.col("verdict") == "error")
    if errors.height == 0:
        return None
    first = errors["error"].drop_nulls().head(1).to_list()
    return (
        f"{errors.height} of {judgments.height} pairs have no verdict (judge errors or "
        f"unparseable replies); they are excluded from scores, nothing of them is stored, and "
        f"they are asked again on the next run. First error: {first[0] if first else 'unknown'}"
    )
