"""Scores, tables and figures of a run, from its run folder alone.

The sweep calls `build` at its end; `mlit report RUN_DIR` calls `rebuild`, which needs nothing but
the folder (not the dataset, not the store): what the report needs beyond the verdicts, such as the
pretraining shares §4.2 used, the sweep wrote into the folder.
"""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl

from mlit.data import dataset, langid
from mlit.method.experiments import Experiment
from mlit.planning.config import SweepConfig
from mlit.planning.plan import experiment
from mlit.plumbing import console
from mlit.results import plots, report_page, scores
from mlit.results.run_folder import RunFolder

PROXY = "proxy: each language's share of the training text, in characters"


def shares_for(cfg: SweepConfig, frame: pl.DataFrame | None) -> tuple[dict[str, float], str]:
    """§4.2's pretraining shares and where they came from: the user's file, or (demo) each
    language's share of the sample's training text in characters."""
    if cfg.pretraining_shares:
        path = Path(cfg.pretraining_shares)
        raw = json.loads(path.read_text("utf-8"))
        return {k: float(v) for k, v in raw.items()}, str(path)
    if frame is None:
        return {}, "none"
    train = frame.filter(pl.col("split") == "train")
    chars = train.group_by("lang").agg(
        n=(pl.col("instruction").str.len_chars() + pl.col("response").str.len_chars()).sum()
    )
    total = chars["n"].sum()
    return {lang: n / total for lang, n in chars.rows()}, PROXY


def build(
    run: RunFolder,
    exp: Experiment,
    cfg: SweepConfig,
    judgments: pl.DataFrame,
    gens: pl.DataFrame | None,
    shares: dict[str, float],
    shares_source: str = "pretraining documents",
) -> pl.DataFrame:
    """Scores, tables and figures from judgments (and generations for Appendix E); prints the
    main table and returns it."""
    s = scores.score(judgments, n_boot=cfg.n_boot, seed=cfg.seed)
    run.write_frame("scores", s.table)
    tables = scores.tables_for(s, exp, shares, shares_source)
    tables["order_consistency"] = scores.order_consistency(judgments)
    if gens is not None and gens.height:
        tables["appE_response_language"] = langid.response_language(gens)
    scores.write_tables(tables, run.tables, scores.notes_for(exp))
    note = plots.NOTE_DEMO if cfg.is_demo else None
    figures = plots.figures_for(tables, exp, run.figures, note)
    if run.has_frame("train"):  # how each model trained, and the checkpoint kept
        curves = plots.training_curves(run.frame("train"), run.figures / plots.CURVES, note)
        figures += [curves] if curves else []
    main = tables[exp.table_stem]
    console.say(f"\n{exp.figure} — {exp.title}\n")
    console.say(scores.to_markdown(main.select([c for c in main.columns if "ci_" not in c])))
    console.say(f"tables:  {run.tables}  ({len(tables)} tables)")
    console.say("figures: " + ", ".join(str(p) for p in figures))
    return main


def rebuild(run_dir: str | Path) -> pl.DataFrame:
    """Every table and figure of a run, rebuilt from its files alone; a folder whose files come
    from different runs is refused (`RunFolder.check_one_run`)."""
    run = RunFolder.open(Path(run_dir))
    run.check_one_run()
    cfg = run.config()
    exp = experiment(cfg)
    judgments = run.frame("judgments")
    gens = run.frame("generations") if run.has_frame("generations") else None
    stored = run.shares()
    if stored is None:  # a folder written before the sweep kept its shares: recompute if we can
        try:
            stored = shares_for(cfg, dataset.open_source(cfg.data))
        except (dataset.DataError, OSError):
            stored = ({}, "none")
    table = build(run, exp, cfg, judgments, gens, *stored)
    console.say(f"results page: {report_page.write(run)}")
    return table
