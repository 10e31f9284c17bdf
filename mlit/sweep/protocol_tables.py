"""The averages of the tables a run writes, read back from the files and set beside the paper's
rules, which are computed here from the cells alone, never by the table functions they check.

The dry run writes an experiment's tables from known cells (`known_cells`) through the very
functions a run uses (`mlit.results.scores.tables_for`, `write_tables`) and reads the files
back; a run's own tables are read the same way beside its ``scores.parquet``. A wrong average
shows as its row, the value written and the paper's.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import numpy as np
import polars as pl

from mlit.method.experiments import BASE, Experiment, monolingual_name

# Each table kind's averages as the paper draws them (Figs. 1, 3-8, 10).
RULES = {
    "matrix": "every evaluation language, diagonal included",
    "fraction": "English; seen: the other tuning languages; unseen: the rest",
    "count": "each language: mean over the orders; avg: every evaluation language",
    "bilingual": "the evaluation languages outside the pair",
    "pretraining": "every other evaluation language (own left out); matrix with its diagonal",
}
TOLERANCE = 0.006  # tables are written with 2 decimals

Cells = dict[tuple[str, str, str], float]  # (model, eval language, baseline) -> score


def known_cells(exp: Experiment, seed: int = 7) -> Cells:
    """A score for every cell any table of ``exp`` reads, each one different, so that every
    averaging rule gives its own numbers."""
    rng = np.random.default_rng(seed)
    names = {r.name for r in exp.required_recipes()} | {BASE}
    names |= {monolingual_name(lang) for r in exp.recipes for lang in r.languages}
    return {
        (m, lang, exp.baseline_for(lang)): round(float(rng.uniform(0, 100)), 2)
        for m in sorted(names)
        for lang in exp.eval_languages
    }


def scores_of(cells: Cells):
    """`mlit.results.scores.Scores` holding ``cells`` (intervals of width 0)."""
    from mlit.results import scores

    rows = [
        {"model": m, "eval_lang": lang, "baseline": b, "score": v, "ci_low": v, "ci_high": v}
        | {"wins": 0, "ties": 0, "losses": 0, "errors": 0, "n": 1}
        for (m, lang, b), v in cells.items()
    ]
    table = pl.DataFrame(rows).select(scores.SCORE_COLUMNS)
    return scores.Scores(table, np.repeat(table["score"].to_numpy()[:, None], 2, axis=1))


def written_from_known(exp: Experiment) -> tuple[Path, Cells]:
    """The experiment's tables written from `known_cells` by the run's own functions, in a
    temporary folder: (folder, cells)."""
    from mlit.results import scores

    cells = known_cells(exp)
    shares = {lang: 1.0 / (i + 2) for i, lang in enumerate(sorted(exp.all_languages()))}
    tables = scores.tables_for(scores_of(cells), exp, shares)
    folder = Path(tempfile.mkdtemp(prefix="mlit-protocol-"))
    scores.write_tables(tables, folder, scores.notes_for(exp))
    return folder, cells


def cells_of(scores_frame: pl.DataFrame) -> Cells:
    """A run's cells from its ``scores.parquet``."""
    return {
        (m, lang, b): float("nan") if v is None else float(v)
        for m, lang, b, v in scores_frame.select("model", "eval_lang", "baseline", "score").rows()
    }


def _mean(values) -> float:
    found = [v for v in values if v is not None and not math.isnan(v)]
    return sum(found) / len(found) if found else float("nan")


def _same(written, expected: float) -> bool:
    if written is None or (isinstance(written, float) and math.isnan(written)):
        return math.isnan(expected)
    return not math.isnan(expected) and abs(float(written) - expected) <= TOLERANCE


def _paper_rows(exp: Experiment, cells: Cells) -> tuple[str, str, dict]:
    """(file stem, key column, {row key: {column: the paper's value}}) of the main table."""
    cell = lambda m, lang: cells.get((m, lang, exp.baseline_for(lang)), float("nan"))  # noqa: E731
    langs = exp.eval_languages
    kind = exp.table_kind
    if kind == "matrix":
        rows = {r.name: {"avg": _mean(cell(r.name, lang) for lang in langs)} for r in exp.recipes}
        return exp.table_stem, "model", rows
    if kind == "fraction":
        rows = {}
        for r in exp.recipes:
            seen = [lang for lang in langs if lang in r.languages and lang != "en"]
            unseen = [lang for lang in langs if lang not in r.languages]
            rows[r.name] = {
                "en_avg": cell(r.name, "en") if "en" in langs else None,
                "seen_avg": _mean(cell(r.name, lang) for lang in seen) if seen else None,
                "unseen_avg": _mean(cell(r.name, lang) for lang in unseen) if unseen else None,
            }
        return exp.table_stem, "model", rows
    if kind == "count":
        by_k: dict[int, list[str]] = {}
        for r in exp.recipes:
            by_k.setdefault(int(r.meta_dict()["k"]), []).append(r.name)
        rows = {
            k: {lang: _mean(cell(m, lang) for m in ms) for lang in langs}
            | {"avg": _mean(cell(m, lang) for m in ms for lang in langs)}
            for k, ms in by_k.items()
        }
        return exp.table_stem, "k", rows
    if kind == "bilingual":
        rows = {}
        for r in exp.recipes:
            a, b = r.languages
            out = [lang for lang in langs if lang not in (a, b)]
            rows[f"{a}+{b}"] = {
                col: _mean(cell(m, lang) for lang in out)
                for col, m in (
                    ("bilingual", r.name),
                    ("mono_a", monolingual_name(a)),
                    ("mono_b", monolingual_name(b)),
                )
            }
        return exp.table_stem, "pair", rows
    # Pretraining: each training language's average over the other languages (which languages
    # have a row is §4.2's question: `english_in_correlation`).
    rows = {
        r.languages[0]: {
            "avg_cross_score": _mean(cell(r.name, lang) for lang in langs if lang != r.languages[0])
        }
        for r in exp.recipes
    }
    return exp.table_stem, "train_lang", rows


def averages(exp: Experiment, folder: Path, cells: Cells) -> tuple[str, bool]:
    """The main table's averages as written in ``folder``, beside the paper's rule over
    ``cells``: (the rule's name, or what the table does instead; True when they agree)."""
    stem, key, expected = _paper_rows(exp, cells)
    checks = [(stem, key, expected)]
    if exp.table_kind == "pretraining":  # its Fig. 1-style matrix is written too
        matrix = _paper_rows(_as_matrix(exp), cells)
        checks.append((f"fig1_{exp.name}_matrix", "model", matrix[2]))
    for name, column, rows in checks:
        path = folder / f"{name}.csv"
        if not path.exists():
            return f"no table {path.name} written", False
        table = pl.read_csv(path)
        if column not in table.columns:
            return f"{path.name} has no {column} column", False
        written = {str(r[column]): r for r in table.iter_rows(named=True)}
        if name == stem and exp.table_kind == "pretraining":
            rows = {k: v for k, v in rows.items() if str(k) in written}
        for row, values in rows.items():
            for col, value in values.items():
                if value is None and col.endswith("_avg"):
                    continue
                got = (written.get(str(row)) or {}).get(col)
                if not _same(got, value):
                    shown = "absent" if got is None else f"{float(got):.2f}"
                    why = _explain(exp, cells, row, col, got) if name == stem else ""
                    return (
                        f"{name}: row {row}, {col} {shown} written, {value:.2f} by the paper's "
                        f"rule{why}",
                        False,
                    )
    return RULES[exp.table_kind], True


def _as_matrix(exp: Experiment) -> Experiment:
    from dataclasses import replace

    return replace(exp, table_kind="matrix")


def _explain(exp: Experiment, cells: Cells, row, col: str, got) -> str:
    """The known wrong rule a written value follows, where it follows one."""
    if got is None:
        return ""
    cell = lambda m, lang: cells.get((m, lang, exp.baseline_for(lang)), float("nan"))  # noqa: E731
    recipe = next((r for r in exp.recipes if r.name == row), None)
    if recipe is None:
        return ""
    langs = exp.eval_languages
    guesses = {}
    if exp.table_kind == "matrix" and col == "avg":
        own = recipe.languages[0]
        guesses["diagonal left out"] = _mean(cell(row, lang) for lang in langs if lang != own)
    if exp.table_kind == "fraction" and col == "seen_avg":
        seen = [lang for lang in langs if lang in recipe.languages]
        guesses["English counted in seen"] = _mean(cell(row, lang) for lang in seen)
    for name, value in guesses.items():
        if _same(got, value):
            return f" ({name})"
    return ""


def english_in_correlation(folder: Path, exp: Experiment) -> bool | None:
    """Whether §4.2's table (the languages its correlation runs over) holds English; None when
    the table is not there."""
    path = folder / f"{exp.table_stem}.csv"
    if not path.exists():
        return None
    return "en" in pl.read_csv(path)["train_lang"].cast(pl.String).to_list()
