"""Verdicts -> instruction-following (IF) scores, confidence intervals and the paper's tables.

IF_L(M) is the side-by-side score of model M against the baseline on language L's evaluation set:
a win counts 1, a tie 0.5 and a loss 0, averaged over instructions, in percent (50: the two are
indistinguishable). Pairs with an ``error`` verdict are excluded and counted.

Confidence intervals come from a paired bootstrap over instructions: each replicate resamples the
instructions of an evaluation language once and applies the same resample to every model scored on
that language, so averages over models or languages get honest intervals too. The replicates are
kept next to the table (`Scores.samples`) and every table averages them.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

from mlit.judging.judgments import VALUES
from mlit.method.experiments import Experiment, monolingual_name

SCORE_COLUMNS = (
    "model",
    "eval_lang",
    "baseline",
    "score",
    "ci_low",
    "ci_high",
    "wins",
    "ties",
    "losses",
    "errors",
    "n",
)


@dataclass(frozen=True)
class Scores:
    table: pl.DataFrame  # one row per (model, baseline, eval_lang)
    samples: np.ndarray  # [rows, replicates] bootstrap scores in percent, aligned with table
    confidence: float = 0.95

    def __post_init__(self) -> None:
        # (model, eval_lang, baseline) -> row: tables look cells up many times each.
        keys = self.table.select("model", "eval_lang", "baseline").rows()
        object.__setattr__(self, "_row", {k: i for i, k in enumerate(keys)})

    def sample(self, model: str, lang: str, baseline: str) -> np.ndarray | None:
        i = self._row.get((model, lang, baseline))
        return None if i is None else self.samples[i]

    def point(self, model: str, lang: str, baseline: str) -> float:
        i = self._row.get((model, lang, baseline))
        value = None if i is None else self.table["score"][i]
        return float("nan") if value is None else float(value)

    def interval(self, samples: np.ndarray) -> tuple[float, float]:
        alpha = (1 - self.confidence) / 2
        return float(np.quantile(samples, alpha)), float(np.quantile(samples, 1 - alpha))


def score(
    judgments: pl.DataFrame, confidence: float = 0.95, n_boot: int = 1000, seed: int = 0
) -> Scores:
    """IF scores per (candidate, baseline, eval language) with paired-bootstrap intervals."""
    valued = judgments.with_columns(
        pl.col("verdict").replace_strict(VALUES, default=None, return_dtype=pl.Float64).alias("v")
    )
    table = (
        valued.group_by("candidate", "baseline", "eval_lang")
        .agg(
            wins=(pl.col("verdict") == "win").sum(),
            ties=(pl.col("verdict") == "tie").sum(),
            losses=(pl.col("verdict") == "loss").sum(),
            errors=(pl.col("verdict") == "error").sum(),
            n=pl.col("v").is_not_null().sum(),
            score=pl.col("v").mean() * 100,
        )
        .rename({"candidate": "model"})
        .sort("eval_lang", "model", "baseline")
    )
    samples = _bootstrap(valued, table, n_boot, seed)
    alpha = (1 - confidence) / 2
    with np.errstate(all="ignore"):
        low = np.nanquantile(samples, alpha, axis=1) if samples.size else np.array([])
        high = np.nanquantile(samples, 1 - alpha, axis=1) if samples.size else np.array([])
    table = table.with_columns(
        ci_low=pl.Series(low, dtype=pl.Float64), ci_high=pl.Series(high, dtype=pl.Float64)
    ).select(SCORE_COLUMNS)
    return Scores(table, samples, confidence)


def _bootstrap(valued: pl.DataFrame, table: pl.DataFrame, n_boot: int, seed: int) -> np.ndarray:
    out = np.full((table.height, n_boot), np.nan)
    row_of = {
        (m, b, lang): i
        for i, (m, b, lang) in enumerate(table.select("model", "baseline", "eval_lang").rows())
    }
    parts = valued.partition_by("eval_lang", as_dict=True)
    for (lang,), part in sorted(parts.items()):
        # One stream per language, seeded by (seed, language): the intervals are the same on
        # every rebuild, whatever order the partitions come in and whatever else was scored.
        rng = np.random.default_rng([seed, zlib.crc32(lang.encode())])
        examples = part["example_id"].unique().sort()
        n = len(examples)
        # counts[b, j]: how often replicate b draws instruction j (shared by every model: paired)
        counts = rng.multinomial(n, np.full(n, 1 / n), size=n_boot).astype(np.float64)
        wide = part.with_columns(pair=pl.concat_str("candidate", pl.lit("\x00"), "baseline")).pivot(
            on="pair", index="example_id", values="v", aggregate_function="mean"
        )
        wide = pl.DataFrame({"example_id": examples}).join(wide, on="example_id", how="left")
        pairs = [c for c in wide.columns if c != "example_id"]
        values = wide.select(pairs).to_numpy().astype(np.float64)  # [n, pairs], NaN: error/absent
        valid = ~np.isnan(values)
        with np.errstate(invalid="ignore", divide="ignore"):
            boot = (counts @ np.where(valid, values, 0.0)) / (counts @ valid)  # [B, pairs]
        for j, pair in enumerate(pairs):
            cand, base = pair.split("\x00")
            out[row_of[(cand, base, lang)]] = boot[:, j] * 100
    return out


def order_consistency(judgments: pl.DataFrame) -> pl.DataFrame:
    """Per judge and language: the share of judged pairs whose two orders disagreed (ties)."""
    judged = judgments.filter(~pl.col("self_comparison") & (pl.col("verdict") != "error"))
    return (
        judged.group_by("judge", "eval_lang")
        .agg(pairs=pl.len(), disagree=(pl.col("verdict") == "tie").sum())
        .with_columns(disagreement=pl.col("disagree") / pl.col("pairs"))
        .sort("judge", "eval_lang")
    )


# --------------------------------------------------------------------------------------------
# Tables behind each figure


def _avg(scores: Scores, cells: Sequence[tuple[str, str, str]]) -> tuple[float, float, float]:
    """Mean of several (model, lang, baseline) scores with its bootstrap interval."""
    found = [(c, s) for c in cells if (s := scores.sample(*c)) is not None]
    if not found:
        return (float("nan"),) * 3
    mean = np.nanmean(np.vstack([s for _, s in found]), axis=0)
    point = float(np.mean([scores.point(*c) for c, _ in found]))
    low, high = scores.interval(mean[~np.isnan(mean)]) if np.isfinite(mean).any() else (np.nan,) * 2
    return point, low, high


def matrix_table(scores: Scores, exp: Experiment, diagonal: bool = True) -> pl.DataFrame:
    """Fig. 1, 7 and 10: train language x eval language, plus the row average.

    The paper's row average (Fig. 1, and Fig. 7 drawn the same way) is over every evaluation
    language, the diagonal's 50 included: its ar row is 36.1 with it, 34.8 without, and all 12
    rows agree. Fig. 10 has no diagonal (every cell is against the base model). ``diagonal=False``
    gives the cross-lingual average without the model's own language (Fig. 8's x values).
    """
    rows = []
    for r in exp.recipes:
        train_lang = r.languages[0]
        row = {"model": r.name, "train_lang": train_lang}
        for lang in exp.eval_languages:
            row[lang] = scores.point(r.name, lang, exp.baseline_for(lang))
        cells = [
            (r.name, lang, exp.baseline_for(lang))
            for lang in exp.eval_languages
            if diagonal or lang != train_lang or exp.scores_against_base
        ]
        row["avg"], row["avg_ci_low"], row["avg_ci_high"] = _avg(scores, cells)
        rows.append(row)
    return pl.DataFrame(rows)


def fraction_table(scores: Scores, exp: Experiment) -> pl.DataFrame:
    """Fig. 3 and 4: one row per P; each language, English, seen and unseen non-English averages
    (the paper plots English, the average over the other tuning languages, and over the unseen
    ones: the same three groups)."""
    rows = []
    for r in exp.recipes:
        p = r.meta_dict().get("percent")
        row: dict = {"model": r.name, "percent": p}
        for lang in exp.eval_languages:
            row[lang] = scores.point(r.name, lang, exp.baseline_for(lang))
        groups = {
            "en": [lang for lang in exp.eval_languages if lang == "en"],
            "seen": [lang for lang in exp.eval_languages if lang in r.languages and lang != "en"],
            "unseen": [lang for lang in exp.eval_languages if lang not in r.languages],
        }
        for group, langs in groups.items():
            cells = [(r.name, lang, exp.baseline_for(lang)) for lang in langs]
            point, low, high = _avg(scores, cells) if cells else (None, None, None)
            row[f"{group}_avg"], row[f"{group}_ci_low"], row[f"{group}_ci_high"] = point, low, high
        rows.append(row)
    return pl.DataFrame(rows).sort("percent")


def count_table(scores: Scores, exp: Experiment) -> pl.DataFrame:
    """Fig. 5: number of tuning languages x unseen eval language, averaged over the orders (the
    paper's lines are means over the three orders; its average is over the unseen languages)."""
    rows = []
    for k in sorted({int(r.meta_dict()["k"]) for r in exp.recipes}):
        models = [r.name for r in exp.recipes if int(r.meta_dict()["k"]) == k]
        row: dict = {"k": k}
        for lang in exp.eval_languages:
            row[lang] = _avg(scores, [(m, lang, exp.baseline_for(lang)) for m in models])[0]
        cells = [(m, lang, exp.baseline_for(lang)) for m in models for lang in exp.eval_languages]
        row["avg"], row["avg_ci_low"], row["avg_ci_high"] = _avg(scores, cells)
        rows.append(row)
    return pl.DataFrame(rows)


def bilingual_table(scores: Scores, exp: Experiment) -> pl.DataFrame:
    """Fig. 6: each pair against the two monolingual models, on the languages neither covers (the
    paper's bars average each model over the 10 languages outside the pair)."""
    rows = []
    for r in exp.recipes:
        a, b = r.languages
        unseen = [lang for lang in exp.eval_languages if lang not in (a, b)]

        def avg(model: str, unseen=unseen) -> tuple[float, float, float]:
            return _avg(scores, [(model, lang, exp.baseline_for(lang)) for lang in unseen])

        bi, mono_a, mono_b = avg(r.name), avg(monolingual_name(a)), avg(monolingual_name(b))
        rows.append(
            {
                "pair": f"{a}+{b}",
                "lang_a": a,
                "lang_b": b,
                "bilingual": bi[0],
                "bilingual_ci_low": bi[1],
                "bilingual_ci_high": bi[2],
                "mono_a": mono_a[0],
                "mono_b": mono_b[0],
                "n_langs": len(unseen),
            }
        )
    return pl.DataFrame(rows)


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    if len(x) < 2 or np.std(x) == 0 or np.std(y) == 0:
        return float("nan")
    return float(np.corrcoef(x, y)[0, 1])


def pretraining_table(
    scores: Scores,
    exp: Experiment,
    shares: Mapping[str, float],
    n_boot: int = 1000,
    seed: int = 0,
    source: str = "pretraining documents",
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Fig. 8: per training language its average cross-lingual score (its own language left out)
    and pretraining share, and the Pearson r between them with a bootstrap interval (languages
    resampled). English is excluded, as in the paper's Fig. 8 (r = 0.22 there). ``source`` says
    what the shares are; a proxy is labelled as one in both tables."""
    matrix = matrix_table(scores, exp, diagonal=False)
    langs = [lang for lang in matrix["train_lang"] if lang in shares and lang != "en"]
    per_lang = (
        matrix.filter(pl.col("train_lang").is_in(langs))
        .select("train_lang", pl.col("avg").alias("avg_cross_score"))
        .with_columns(
            share=pl.col("train_lang").replace_strict(dict(shares), return_dtype=pl.Float64),
            shares=pl.lit(source),
        )
    )
    x, y = per_lang["share"].to_numpy(), per_lang["avg_cross_score"].to_numpy()
    r = pearson(x, y)
    rng = np.random.default_rng(seed)
    boots = []
    for _ in range(n_boot):
        idx = rng.integers(0, len(x), len(x))
        boots.append(pearson(x[idx], y[idx]))
    boots = np.array([b for b in boots if np.isfinite(b)])
    alpha = (1 - scores.confidence) / 2
    low, high = np.quantile(boots, [alpha, 1 - alpha]) if boots.size else (np.nan, np.nan)
    summary = pl.DataFrame(
        {
            "pearson_r": [r],
            "ci_low": [float(low)],
            "ci_high": [float(high)],
            "n_languages": [len(x)],
            "english": ["excluded"],
            "shares": [source],
        }
    )
    return per_lang, summary


def tables_for(
    scores: Scores,
    exp: Experiment,
    shares: Mapping[str, float] | None = None,
    shares_source: str = "pretraining documents",
):
    """Every table of an experiment, by file stem; the experiment says which kind it makes."""
    stem = exp.table_stem
    makers = {
        "matrix": matrix_table,
        "fraction": fraction_table,
        "count": count_table,
        "bilingual": bilingual_table,
    }
    if exp.table_kind in makers:
        return {stem: makers[exp.table_kind](scores, exp)}
    per_lang, summary = pretraining_table(scores, exp, shares or {}, source=shares_source)
    return {
        stem: per_lang,
        f"{stem}_pearson": summary,
        f"fig1_{exp.name}_matrix": matrix_table(scores, exp),
    }


# How each table averages, as the paper does (checked against its text); printed under the table.
AVERAGE_RULES = {
    "matrix": "avg: over every evaluation language, the diagonal's 50 included, as in the paper's "
    "Fig. 1 (and Fig. 7); against the base model (Fig. 10) there is no diagonal",
    "fraction": "averages: English; the other tuning languages (seen); the languages not tuned on "
    "(unseen), as the paper's Figs. 3 and 4",
    "count": "each cell: mean over the three language orders; avg: over the unseen languages too "
    "(Fig. 5)",
    "bilingual": "each model averaged over the 10 languages outside the pair (Fig. 6)",
    "pretraining": "avg_cross_score: over the other evaluation languages (own language left out); "
    "English excluded from the correlation, as in Fig. 8",
}


def notes_for(exp: Experiment) -> dict[str, str]:
    """The average rule of each table of an experiment, by file stem."""
    notes = {exp.table_stem: AVERAGE_RULES[exp.table_kind]}
    if exp.table_kind == "pretraining":
        notes[f"fig1_{exp.name}_matrix"] = AVERAGE_RULES["matrix"]
    return notes


def write_tables(
    tables: Mapping[str, pl.DataFrame], folder, notes: Mapping[str, str] | None = None
) -> list:
    """Each table as CSV and Markdown (with its note under it); returns the paths written."""
    from pathlib import Path

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for stem, table in tables.items():
        csv, md = folder / f"{stem}.csv", folder / f"{stem}.md"
        table.write_csv(csv, float_precision=2)
        note = (notes or {}).get(stem)
        md.write_text(to_markdown(table) + (f"\n{note}\n" if note else ""))
        written += [csv, md]
    return written


def to_markdown(table: pl.DataFrame, digits: int = 1) -> str:
    def fmt(v) -> str:
        if v is None or (isinstance(v, float) and np.isnan(v)):
            return "–"
        return f"{v:.{digits}f}" if isinstance(v, float) else str(v)

    head = "| " + " | ".join(table.columns) + " |"
    rule = "|" + "|".join("---" for _ in table.columns) + "|"
    body = ["| " + " | ".join(fmt(v) for v in row) + " |" for row in table.rows()]
    return "\n".join([head, rule, *body]) + "\n"
