"""A run beside the paper's published numbers (`mlit report RUN --compare-paper`).

The numbers the paper's text gives ship with mlit (`mlit/paper/published.json`, with their source):
the Fig. 1 heatmap, the Fig. 10 heatmap, the App. D agreement table, App. E's count and Fig. 8's r.
A run of the monolingual (Fig. 1) or base-model (Fig. 10) experiment is compared cell by cell: the
paper's value, ours, the difference, and Spearman's rank correlation over the cells both have
(Fig. 1's diagonal, 50 by definition, left out; Fig. 10's, a real score against the base, kept).
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import numpy as np
import polars as pl

from mlit.planning.plan import experiment
from mlit.results import plots, scores
from mlit.results.run_folder import RunFolder, RunFolderError

FIGURE_OF = {"monolingual": "fig1_monolingual", "base_model": "fig10_base_model"}


def published() -> dict:
    return json.loads((resources.files("mlit") / "paper" / "published.json").read_text("utf-8"))


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    if len(x) < 3:
        return float("nan")
    rx, ry = (pl.Series(v).rank("average").to_numpy() for v in (x, y))
    return scores.pearson(rx, ry)


def cells(run: RunFolder) -> tuple[str, pl.DataFrame]:
    """(figure key, one row per cell: train_lang, eval_lang, paper, ours, diff)."""
    cfg = run.config()
    exp = experiment(cfg)
    key = FIGURE_OF.get(exp.name)
    if key is None:
        known = ", ".join(FIGURE_OF)
        raise RunFolderError(
            f"{run.path}: the paper's text gives cell values only for {known} (Figs. 1 and 10); "
            f"this run is {exp.name} ({exp.figure})"
        )
    table_path = run.tables / f"{exp.table_stem}.csv"
    if not table_path.exists():
        raise RunFolderError(f"{table_path}: missing (run `mlit report {run.path}` first)")
    ours = pl.read_csv(table_path)
    paper = published()[key]["rows"]
    rows = []
    for r in ours.iter_rows(named=True):
        train = r["train_lang"]
        for lang in exp.eval_languages:
            theirs = paper.get(train, {}).get("cells", {}).get(lang)
            rows.append(
                {"train_lang": train, "eval_lang": lang, "paper": theirs, "ours": r.get(lang)}
            )
    frame = pl.DataFrame(
        rows,
        schema={
            "train_lang": pl.String,
            "eval_lang": pl.String,
            "paper": pl.Float64,
            "ours": pl.Float64,
        },
    ).with_columns(diff=pl.col("ours") - pl.col("paper"))
    return key, frame


# Fig. 1's diagonal is 50 by definition (a model against itself): no information, left out of
# the correlation. Fig. 10's diagonal is a real score (each model against the base model, in its
# own training language), so it counts like every other cell.
DIAGONAL_IS_SCORED = {"fig1_monolingual": False, "fig10_base_model": True}


def ranked_cells(frame: pl.DataFrame, exp) -> pl.DataFrame:
    """The cells the rank correlation is over: both values known; the diagonal only where it is
    a real comparison (`DIAGONAL_IS_SCORED`)."""
    both = frame.filter(pl.col("paper").is_not_null() & pl.col("ours").is_not_null())
    if exp.scores_against_base:
        return both
    return both.filter(pl.col("train_lang") != pl.col("eval_lang"))


def compare(run_dir: str | Path) -> pl.DataFrame:
    """Print and plot a run beside the paper; writes tables/compare_paper.csv|md and a figure."""
    run = RunFolder.open(Path(run_dir))
    key, frame = cells(run)
    both = ranked_cells(frame, experiment(run.config()))
    rho = spearman(both["paper"].to_numpy(), both["ours"].to_numpy())
    which = "cells, the diagonal included" if DIAGONAL_IS_SCORED[key] else "off-diagonal cells"
    note = (
        f"Spearman rank correlation over {both.height} {which}: {rho:.2f}. "
        f"Source: {published()['source']}."
    )
    scores.write_tables({"compare_paper": frame}, run.tables, {"compare_paper": note})
    figure = plots.comparison_plot(
        both,
        key,
        rho,
        run.figures / "compare_paper.png",
        plots.NOTE_DEMO if run.config().is_demo else None,
    )
    print(f"\n{key}: this run beside the paper (ours - paper = diff)\n", flush=True)
    print(scores.to_markdown(frame), flush=True)
    print(note, flush=True)
    print(f"table: {run.tables / 'compare_paper.csv'}\nfigure: {figure}", flush=True)
    return frame
