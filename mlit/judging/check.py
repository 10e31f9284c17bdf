"""`mlit judge check`: how far a judge agrees with human preferences, per language, before a study
spends on it.

The data is a human preference set in MM-Eval's published shape (``prompt, chosen, rejected,
language``, and ``subset``, ``id``, ``chosen_model``, ``rejected_model`` where present): a local
Parquet or JSONL file, or a hub dataset's ``test`` split. Each pair is judged exactly as a study
judges (`mlit.judging.judge.judge_pairs`: the run's template, both orders, greedy, the same
parser and verdict cache), with the human's choice as the candidate, so the paper's rule reads
as agreement: a win in both orders is 1, a tie (the orders disagree) 0.5, a loss 0. Per
language (and per subset): agreement, order consistency and tie rate, each with a bootstrap
interval over the pairs; a language whose agreement interval holds 0.5 is within noise of chance.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import polars as pl

from mlit.judging.judgments import VALUES
from mlit.judging.pairs import Pair

REQUIRED = ("prompt", "chosen", "rejected", "language")
CHANCE = 0.5  # agreement of a judge that picks at random, or by position alone
SUMMARY = {
    "language": pl.String,
    "pairs": pl.Int64,
    "agreement": pl.Float64,
    "agreement_ci_low": pl.Float64,
    "agreement_ci_high": pl.Float64,
    "order_consistency": pl.Float64,
    "order_consistency_ci_low": pl.Float64,
    "order_consistency_ci_high": pl.Float64,
    "tie_rate": pl.Float64,
    "errors": pl.Int64,
    "within_chance": pl.Boolean,
}


class CheckError(ValueError):
    """A preference set that cannot be used; the message names the source and the problem."""


def load(source: str) -> pl.DataFrame:
    """The preference set: a local Parquet/JSONL file, else a hub dataset's ``test`` split;
    ``sample``: pairs made from the bundled sample (`sample_pairs`)."""
    path = Path(source)
    if source == SAMPLE:
        from mlit.data import dataset

        frame = sample_pairs(dataset.sample())
    elif path.exists():
        try:
            if path.suffix == ".parquet":
                frame = pl.read_parquet(path)
            elif path.suffix in (".jsonl", ".json"):
                frame = pl.read_ndjson(path)
            else:
                raise CheckError(f"{path}: a preference set is .parquet or .jsonl")
        except (pl.exceptions.PolarsError, OSError) as err:
            raise CheckError(f"{path}: cannot be read ({err})") from err
    else:
        frame = _from_hub(source)
    missing = [c for c in REQUIRED if c not in frame.columns]
    if missing:
        raise CheckError(
            f"{source}: lacks the column(s) {', '.join(missing)} (a preference set in MM-Eval's "
            f"shape has {', '.join(REQUIRED)}, and subset and id where it can)"
        )
    if "id" not in frame.columns:
        frame = frame.with_row_index("id").with_columns(pl.col("id").cast(pl.String))
    if "subset" not in frame.columns:
        frame = frame.with_columns(subset=pl.lit("all"))
    return frame.with_columns(pl.col("id").cast(pl.String), pl.col("language").cast(pl.String))


def is_local(source: str) -> bool:
    """Whether ``source`` is read from this machine (a file, or the bundled sample), not the hub:
    what can be read, and priced, before a run starts."""
    return source == SAMPLE or Path(source).exists()


def _from_hub(name: str) -> pl.DataFrame:
    try:
        import datasets
    except ImportError as err:
        raise CheckError(
            f"{name}: no such file, and the `datasets` package that loads hub datasets is not "
            "installed (pip install datasets, or pass a local .parquet/.jsonl)"
        ) from err
    try:
        return pl.from_arrow(datasets.load_dataset(name, split="test").data.table)
    except Exception as err:  # the hub's failures come in many types
        raise CheckError(f"{name}: no such file, and not loadable from the hub ({err})") from err


def select(
    frame: pl.DataFrame, languages: Sequence[str] | None, per_language: int | None, seed: int = 0
) -> pl.DataFrame:
    """The pairs checked: the languages asked for (all by default), at most ``per_language``
    each, chosen by a hash of the id and ``seed`` (the same pairs on every run)."""
    if languages:
        unknown = sorted(set(languages) - set(frame["language"].unique().to_list()))
        if unknown:
            have = ", ".join(sorted(frame["language"].unique().to_list()))
            raise CheckError(f"no pairs in language(s) {', '.join(unknown)}; the set has: {have}")
        frame = frame.filter(pl.col("language").is_in(list(languages)))
    order = [hashlib.sha256(f"{seed}:{i}".encode()).hexdigest() for i in frame["id"].to_list()]
    frame = frame.with_columns(_order=pl.Series(order)).sort("language", "_order")
    if per_language:
        frame = frame.group_by("language", maintain_order=True).head(per_language)
    return frame.drop("_order")


def pairs_of(frame: pl.DataFrame) -> list[Pair]:
    """Each preference as a study's comparison: the human's choice as the candidate."""
    return [
        Pair("chosen", "rejected", lang, f"{subset}:{i}", prompt, chosen, rejected, "c", "r")
        for i, lang, subset, prompt, chosen, rejected in frame.select(
            "id", "language", "subset", "prompt", "chosen", "rejected"
        ).rows()
    ]


def summarise(
    judgments: pl.DataFrame, by: str = "eval_lang", n_boot: int = 1000, seed: int = 0
) -> pl.DataFrame:
    """Per group of ``judgments`` (a judgments table of `pairs_of` pairs): agreement, order
    consistency and tie rate with bootstrap intervals over the pairs, and whether agreement is
    within noise of chance (its interval holds 0.5)."""
    judgments = judgments.with_columns(subset=pl.col("example_id").str.split(":").list.first())
    rows = []
    for (group,), part in sorted(judgments.partition_by(by, as_dict=True).items()):
        ok = part.filter(pl.col("verdict") != "error")["verdict"].to_list()
        values = np.array([VALUES[v] for v in ok])
        consistent = np.array([v != "tie" for v in ok], dtype=float)
        rng = np.random.default_rng([seed, len(ok)])
        agree, agree_ci = _with_interval(values, rng, n_boot)
        order, order_ci = _with_interval(consistent, rng, n_boot)
        rows.append(
            {
                "language": group,
                "pairs": len(ok),
                "agreement": agree,
                "agreement_ci_low": agree_ci[0],
                "agreement_ci_high": agree_ci[1],
                "order_consistency": order,
                "order_consistency_ci_low": order_ci[0],
                "order_consistency_ci_high": order_ci[1],
                "tie_rate": 1.0 - order if ok else None,
                "errors": part.height - len(ok),
                "within_chance": bool(ok) and agree_ci[0] <= CHANCE <= agree_ci[1],
            }
        )
    return pl.DataFrame(rows, schema=SUMMARY)


def _with_interval(values: np.ndarray, rng, n_boot: int) -> tuple[float | None, tuple]:
    if not values.size:
        return None, (None, None)
    draws = rng.integers(0, values.size, size=(n_boot, values.size))
    means = values[draws].mean(axis=1)
    low, high = np.quantile(means, [0.025, 0.975])
    return float(values.mean()), (float(low), float(high))


def estimate(pairs: Sequence[Pair], judge, stored: dict, budget) -> tuple[int, float]:
    """(calls to make, their cost at most) for ``pairs``: both orders of each, less those in
    the store (``stored``: `judge.stored_verdicts`'s map)."""
    from mlit.judging import pairs as pairs_rule
    from mlit.judging.judge import pair_keys
    from mlit.providers import pricing

    calls, cost = 0, 0.0
    for p, keys in zip(pairs, pair_keys(pairs, judge), strict=True):
        for order, key in enumerate(keys or ()):
            if key not in stored:
                sent = pricing.prompt_tokens(pairs_rule.prompt(judge, p, order))
                calls, cost = calls + 1, cost + budget.estimate(sent, judge.max_tokens)
    return calls, cost


def run(frame: pl.DataFrame, judge, store, budget, n_boot: int = 1000, progress: bool = True):
    """Judge every pair of ``frame`` (`select`'s) as a study would; returns (per language,
    per subset, the judgments). Nothing is sent when the estimate passes ``budget``'s limit
    (`mlit.providers.pricing.BudgetError`); a pair judged before costs nothing."""
    from mlit.judging import judge as judging
    from mlit.plumbing import console
    from mlit.providers import pricing

    pairs = pairs_of(frame)
    stored = judging.stored_verdicts(pairs, judge, store)
    calls, cost = estimate(pairs, judge, stored[1], budget)
    cached = 2 * len(pairs) - calls
    priced = f"at most {pricing.dollars(cost)}" if budget.prices else "unpriced"
    console.say(
        f"[judge check] {len(pairs)} pairs in {frame['language'].n_unique()} language(s): "
        f"{calls} judge calls ({cached} from the store), {priced}"
    )
    pricing.check_plan(cost, budget.limit, "the judge check")
    table = judging.judge_pairs(
        pairs, judge, store, progress=progress, stored=stored, budget=budget
    )
    return (
        summarise(table, "eval_lang", n_boot),
        summarise(table, "subset", n_boot).rename({"language": "subset"}),
        table,
    )


SAMPLE = "sample"  # `load`'s name for the pairs made from the bundled sample


def sample_pairs(frame: pl.DataFrame) -> pl.DataFrame:
    """Preference pairs made from a parallel dataset's evaluation split (`load("sample")`: the
    bundled sample), in MM-Eval's shape: each instruction's reference answer chosen over the
    reference answer of another instruction in its language. Not human preferences: a sanity
    check any judge must pass (the demo's, on its own data)."""
    evals = frame.filter((pl.col("split") == "eval") & pl.col("response").is_not_null())
    rows = []
    for (lang,), part in sorted(evals.partition_by("lang", as_dict=True).items()):
        items = part.sort("example_id").select("example_id", "instruction", "response").rows()
        for i, (ex, instruction, response) in enumerate(items):
            other = items[(i + len(items) // 2) % len(items)][2]
            if len(items) > 1 and other != response:
                rows.append((instruction, response, other, lang, SAMPLE, ex))
    columns = ["prompt", "chosen", "rejected", "language", "subset", "id"]
    return pl.DataFrame(rows, schema=columns, orient="row")


RESULT_COLUMNS = ("language", "pairs", "agreement", "order_consistency")


def read_result(path: str | Path) -> pl.DataFrame:
    """A `mlit judge check --out` table (.csv or .parquet), checked: what a sweep shows beside
    its scores (``--judge-check``)."""
    path = Path(path)
    try:
        frame = pl.read_parquet(path) if path.suffix == ".parquet" else pl.read_csv(path)
    except (pl.exceptions.PolarsError, OSError) as err:
        raise CheckError(f"--judge-check {path}: cannot be read ({err})") from err
    missing = [c for c in RESULT_COLUMNS if c not in frame.columns]
    if missing:
        raise CheckError(
            f"--judge-check {path}: lacks {', '.join(missing)} (write it with "
            "`mlit judge check --out FILE`)"
        )
    for name, dtype in SUMMARY.items():
        if name not in frame.columns:
            frame = frame.with_columns(pl.lit(None, dtype).alias(name))
    return frame.select(list(SUMMARY)).cast(SUMMARY)
