"""Scores at scale: 1,000,000 synthetic verdicts through Polars against a plain pandas version.

    python benchmarks/scores_speed.py          # writes benchmarks/results/scores_speed.json

The data: 12 evaluation languages x 617 instructions x 135 models = 999,540 judged pairs with
random verdicts (some errors). Both sides compute the same things: IF scores per (model, language)
with discounted ties and error counts, a 1,000-replicate bootstrap interval per score, order
consistency per language, and the model x language table with a cross-lingual average.

- mlit: `mlit.results.scores.score` (Polars aggregation; a paired bootstrap as one matrix product per
  language) and `mlit.results.scores.tables_for`.
- baseline: pandas groupby, and a bootstrap that resamples each group's verdicts, the way one
  would write it first.

Goals: Polars at least 10x faster, and every table in under 5 s on this machine.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl

from mlit.judging.judgments import JUDGMENT_COLUMNS
from mlit.method import experiments, mixtures
from mlit.results import scores

import host

OUT = Path(__file__).parent / "results" / "scores_speed.json"
LANGS = experiments.PAPER_LANGUAGES
N_EX, N_MODELS, N_BOOT = 617, 135, 1000


def synthetic() -> tuple[pl.DataFrame, experiments.Experiment]:
    rng = np.random.default_rng(0)
    models = [f"m{i:03d}" for i in range(N_MODELS)]
    n = len(LANGS) * N_EX * N_MODELS
    lang = np.repeat(np.array(LANGS), N_EX * N_MODELS)
    example = np.tile(np.repeat(np.array([f"e{i:04d}" for i in range(N_EX)]), N_MODELS), len(LANGS))
    model = np.tile(np.array(models), len(LANGS) * N_EX)
    verdict = rng.choice(["win", "tie", "loss", "error"], size=n, p=[0.35, 0.3, 0.33, 0.02])
    frame = pl.DataFrame(
        {
            "candidate": model,
            "baseline": np.char.add("mono-", lang),
            "eval_lang": lang,
            "example_id": example,
            "verdict": verdict,
            "self_comparison": np.zeros(n, dtype=bool),
            "judge": np.full(n, "j"),
        }
    )
    frame = frame.with_columns(
        [
            pl.lit(None, dtype=t).alias(c)
            for c, t in JUDGMENT_COLUMNS.items()
            if c not in frame.columns
        ]
    ).select(list(JUDGMENT_COLUMNS))
    recipes = tuple(
        mixtures.Recipe(m, (LANGS[i % len(LANGS)],), 100.0, LANGS[i % len(LANGS)])
        for i, m in enumerate(models)
    )
    exp = experiments.Experiment("monolingual", "synthetic", "§", "Fig. 1", recipes, LANGS)
    return frame, exp


def with_polars(frame: pl.DataFrame, exp) -> dict:
    t = time.perf_counter()
    s = scores.score(frame, n_boot=N_BOOT)
    t_scores = time.perf_counter() - t
    tables = scores.tables_for(s, exp)
    oc = scores.order_consistency(frame)
    total = time.perf_counter() - t
    return {
        "scores_and_bootstrap_s": round(t_scores, 3),
        "all_tables_s": round(total, 3),
        "rows": s.table.height,
        "tables": len(tables) + 1,
        "_oc": oc.height,
    }


def with_pandas(frame: pl.DataFrame) -> dict:
    df = frame.select("candidate", "baseline", "eval_lang", "example_id", "verdict").to_pandas()
    t = time.perf_counter()
    df["v"] = df["verdict"].map({"win": 1.0, "tie": 0.5, "loss": 0.0})
    rng = np.random.default_rng(0)
    rows = []
    for (model, base, lang), g in df.groupby(["candidate", "baseline", "eval_lang"]):
        v = g["v"].dropna().to_numpy()
        boots = [rng.choice(v, size=len(v), replace=True).mean() * 100 for _ in range(N_BOOT)]
        rows.append(
            {
                "model": model,
                "baseline": base,
                "eval_lang": lang,
                "wins": int((g["verdict"] == "win").sum()),
                "ties": int((g["verdict"] == "tie").sum()),
                "losses": int((g["verdict"] == "loss").sum()),
                "errors": int((g["verdict"] == "error").sum()),
                "n": len(v),
                "score": v.mean() * 100,
                "ci_low": np.quantile(boots, 0.025),
                "ci_high": np.quantile(boots, 0.975),
            }
        )
    table = pd.DataFrame(rows)
    wide = table.pivot(index="model", columns="eval_lang", values="score")
    wide["avg"] = wide.mean(axis=1)
    judged = df[df["verdict"] != "error"]
    oc = judged.groupby("eval_lang")["verdict"].apply(lambda s: (s == "tie").mean())
    total = time.perf_counter() - t
    return {"all_tables_s": round(total, 3), "rows": len(table), "_oc": len(oc)}


def main() -> None:
    frame, exp = synthetic()
    fast = with_polars(frame, exp)
    slow = with_pandas(frame)
    ratio = slow["all_tables_s"] / fast["all_tables_s"]
    report = {
        "machine": host.describe(),
        "judgment_rows": frame.height,
        "bootstrap_replicates": N_BOOT,
        "polars": {k: v for k, v in fast.items() if not k.startswith("_")},
        "pandas": {k: v for k, v in slow.items() if not k.startswith("_")},
        "speedup": round(ratio, 1),
        "goal": "polars >= 10x faster and all tables < 5 s",
        "goal_met": ratio >= 10 and fast["all_tables_s"] < 5,
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
