"""The page `mlit compare` writes: runs of one experiment side by side, one self-contained HTML
file (the figure inlined), built from the run folders alone."""

from __future__ import annotations

import html
import tempfile
from pathlib import Path

from mlit.method import experiments
from mlit.plumbing.atomic import atomic_write
from mlit.results import plots, run_comparison
from mlit.results.report_page import STYLE, figure_html, table_html
from mlit.results.run_comparison import CONFIDENCE, Run


def _e(value) -> str:
    return html.escape(str(value))


def _provenance(run: Run) -> list:
    meta = run.folder.meta()
    cfg = meta.get("config") or {}
    return [
        run.label,
        cfg.get("base_model") or "the demo base model",
        cfg.get("judge") or "the demo judge",
        cfg.get("seed", ""),
        meta.get("status", ""),
        str(run.folder.path.resolve()),
    ]


def write(runs: list[Run], out: Path, n_boot: int = 1000) -> tuple[Path, list]:
    """The page at ``out``; returns it and, per run after the first, its cells' table."""
    reference = runs[0]
    try:
        exp = experiments.get(reference.experiment)
        title = f"{exp.figure}: {exp.title}"
    except (KeyError, ValueError):
        title = reference.experiment
    order = run_comparison.model_order(reference)
    lines = {r.label: dict(run_comparison.model_means(r).rows()) for r in runs}
    with tempfile.TemporaryDirectory() as tmp:
        figure = plots.runs_plot(lines, order, title, Path(tmp) / "runs.png")
        parts = [
            f"<h1>{_e(len(runs))} runs of {_e(reference.experiment)}</h1>",
            f"<p>{_e(title)}. Each run is set beside <b>{_e(reference.label)}</b>.</p>",
            "<h2>Runs</h2>",
            table_html([_provenance(r) for r in runs],
                       ["run", "base model", "judge", "seed", "status", "folder"], css="text"),
            "<h2>Figure</h2>",
            figure_html(figure),
        ]  # fmt: skip
    tables = []
    for other in runs[1:]:
        cells = run_comparison.paired(reference, other, n_boot)
        tables.append(cells)
        significant = int(cells["significant"].sum()) if cells.height else 0
        rows = [
            [c["model"], c["baseline"], c["eval_lang"], c["instructions"],
             f"{c[reference.label]:.1f}", f"{c[other.label]:.1f}",
             f"{c['diff']:+.1f} [{c['ci_low']:+.1f}, {c['ci_high']:+.1f}]",
             "yes" if c["significant"] else ""]
            for c in cells.iter_rows(named=True)
        ]  # fmt: skip
        marks = ["differs" if c else "" for c in cells["significant"]] if cells.height else []
        parts += [
            f"<h2>{_e(other.label)} − {_e(reference.label)}</h2>",
            f"<p>{significant} of {cells.height} cells differ significantly: the "
            f"{CONFIDENCE:.0%} paired bootstrap interval of the difference leaves out 0 "
            f"({n_boot} replicates over the same instructions). Among many cells, about "
            f"{1 - CONFIDENCE:.0%} differ by chance alone.</p>",
            table_html(rows, ["model", "baseline", "language", "instructions", reference.label,
                              other.label, f"difference [{CONFIDENCE:.0%} CI]", "significant"],
                       marks),
        ]  # fmt: skip
    page = (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{_e(title)}: {_e(len(runs))} runs</title><style>{STYLE}</style></head><body>\n"
        + "\n".join(parts)
        + "\n</body></html>\n"
    )
    return atomic_write(out, page), tables
