"""`mlit compare`: runs of one experiment side by side (other base models, seeds, judges).

Every run is set beside the first (the reference). A cell is a (model, baseline, evaluation
language) score, as in the run's own tables; its difference between two runs gets a paired
bootstrap interval over the same instructions: each replicate draws the language's instructions
with replacement once and scores both runs on that draw, so what the two runs share (an
instruction that is hard for every model) cancels out, as in the paper's own intervals
(`mlit.results.scores`). A difference is significant when its interval leaves out 0.

Runs of different experiments, or evaluated on different instructions, are refused: their cells
are not the same questions, and pairing them would be a mistake dressed up as a statistic.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from mlit.judging.judgments import VALUES
from mlit.results.run_folder import RunFolder, RunFolderError

CONFIDENCE = 0.95
CELL = ("model", "baseline", "eval_lang")


class CompareError(ValueError):
    """Runs that cannot be compared; the message says why in one line."""


@dataclass(frozen=True)
class Run:
    label: str  # the run folder's name, made unique
    folder: RunFolder
    experiment: str
    valued: pl.DataFrame  # model, baseline, eval_lang, example_id, v (win 1, tie .5, loss 0)


def _valued(run: RunFolder) -> pl.DataFrame:
    judged = run.frame("judgments").filter(~pl.col("self_comparison"))
    return judged.select(
        pl.col("candidate").alias("model"),
        "baseline",
        "eval_lang",
        "example_id",
        v=pl.col("verdict").replace_strict(VALUES, default=None, return_dtype=pl.Float64),
    )


def load(folders: list[Path]) -> list[Run]:
    """The runs, checked to be of one experiment and judged on the same instructions."""
    if len(folders) < 2:
        raise CompareError("mlit compare needs two runs or more")
    runs, labels = [], set()
    for path in folders:
        try:
            folder = RunFolder.open(path)
            meta = folder.meta()
            valued = _valued(folder)
        except (RunFolderError, FileNotFoundError, OSError, pl.exceptions.PolarsError) as err:
            raise CompareError(f"{path}: not a finished run folder ({err})") from err
        label = Path(path).name
        while label in labels:
            label += "'"
        labels.add(label)
        runs.append(Run(label, folder, str(meta.get("experiment")), valued))
    first = runs[0]
    for other in runs[1:]:
        if other.experiment != first.experiment:
            raise CompareError(
                f"{other.label} is a run of {other.experiment}, {first.label} of "
                f"{first.experiment}: only runs of one experiment can be compared"
            )
        mine, theirs = _instructions(first), _instructions(other)
        if mine != theirs:
            extra = sorted(theirs - mine) or sorted(mine - theirs)
            raise CompareError(
                f"{other.label} and {first.label} were evaluated on different instructions "
                f"({len(theirs - mine)} not in {first.label}, {len(mine - theirs)} not in "
                f"{other.label}; first: {extra[0][1]} in {extra[0][0]}): their cells are not "
                "the same questions"
            )
    return runs


def _instructions(run: Run) -> set[tuple[str, str]]:
    return set(run.valued.select("eval_lang", "example_id").unique().rows())


def _wide(run: Run, lang: str, examples: list[str], cells: list[tuple]) -> np.ndarray:
    """[instructions, cells] of the run's values in ``lang`` (NaN: an error or no verdict)."""
    part = run.valued.filter(pl.col("eval_lang") == lang)
    frame = part.with_columns(cell=pl.concat_str("model", pl.lit("\x00"), "baseline")).pivot(
        on="cell", index="example_id", values="v", aggregate_function="mean"
    )
    frame = pl.DataFrame({"example_id": examples}).join(frame, on="example_id", how="left")
    names = [f"{m}\x00{b}" for m, b, _ in cells]
    return np.column_stack(
        [
            frame[n].to_numpy().astype(np.float64) if n in frame.columns else np.full(len(examples), np.nan)
            for n in names
        ]
    )  # fmt: skip


def paired(reference: Run, other: Run, n_boot: int = 1000, seed: int = 0) -> pl.DataFrame:
    """Per cell: both runs' scores (percent), their difference (other - reference) and its
    paired bootstrap interval; ``significant`` when the interval leaves out 0."""
    cells = sorted(set(reference.valued.select(*CELL).unique().rows()))
    rows = []
    alpha = (1 - CONFIDENCE) / 2
    for lang in sorted({c[2] for c in cells}):
        here = [c for c in cells if c[2] == lang]
        examples = sorted(
            reference.valued.filter(pl.col("eval_lang") == lang)["example_id"].unique()
        )
        a, b = _wide(reference, lang, examples, here), _wide(other, lang, examples, here)
        both = ~np.isnan(a) & ~np.isnan(b)  # paired: an instruction counts where both have it
        diff = np.where(both, b - a, 0.0)
        rng = np.random.default_rng([seed, zlib.crc32(lang.encode())])
        n = len(examples)
        counts = rng.multinomial(n, np.full(n, 1 / n), size=n_boot).astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            boot = (counts @ diff) / (counts @ both) * 100  # [replicates, cells]
            low = np.nanquantile(boot, alpha, axis=0)
            high = np.nanquantile(boot, 1 - alpha, axis=0)
        for j, (model, baseline, _) in enumerate(here):
            used = both[:, j]
            if not used.any():
                continue
            mean_a, mean_b = a[used, j].mean() * 100, b[used, j].mean() * 100
            rows.append(
                {
                    "model": model, "baseline": baseline, "eval_lang": lang,
                    "instructions": int(used.sum()), reference.label: mean_a, other.label: mean_b,
                    "diff": mean_b - mean_a, "ci_low": float(low[j]), "ci_high": float(high[j]),
                    "significant": bool(low[j] > 0 or high[j] < 0),
                }
            )  # fmt: skip
    return pl.DataFrame(rows)


def model_means(run: Run) -> pl.DataFrame:
    """Each model's score averaged over its cells (languages and baselines): a run's line."""
    return (
        run.valued.group_by(*CELL)
        .agg(score=pl.col("v").mean() * 100)
        .group_by("model")
        .agg(pl.col("score").mean())
    )


def model_order(run: Run) -> list[str]:
    """The experiment's own order of its models, where the run's config names it."""
    from mlit.planning.plan import experiment

    seen = set(run.valued["model"].unique())
    try:
        named = [r.name for r in experiment(run.folder.config()).recipes]
    except (RunFolderError, KeyError, ValueError):
        named = []
    return [m for m in named if m in seen] + sorted(seen - set(named))
