"""PNG figures that a reader of the paper would recognise, drawn from the score tables.

- Heatmaps (Fig. 1, 7, 10): each evaluation-language column is coloured on its own scale, as in
  the paper, and the diagonal (a model against itself, 50 by definition) is left out of the colour.
- Line plots (Fig. 3, 4 and 5): per-language scores as thin lines, averages as thick lines with
  their bootstrap interval as a band.
- Bars (Fig. 6) and a scatter with its regression line (Fig. 8).
- Training curves: loss and dev ROUGE-L per model, the checkpoint kept marked.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl

from mlit.method.experiments import Experiment
from mlit.planning.config import DEMO_NOTE

NOTE_DEMO = DEMO_NOTE  # on every figure of a demo run


def _plt():
    import matplotlib

    matplotlib.use("Agg")  # files only, no display needed
    import matplotlib.pyplot as plt

    return plt


def _finish(fig, path: Path, note: str | None) -> Path:
    if note:
        fig.text(0.5, -0.04, note, ha="center", va="top", fontsize=7, color="grey")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=130, bbox_inches="tight")
    _plt().close(fig)
    return path


def heatmap(table: pl.DataFrame, exp: Experiment, path: Path, note: str | None = None) -> Path:
    plt = _plt()
    langs = [lang for lang in exp.eval_languages if lang in table.columns]
    cols = [*langs, "avg"]
    values = table.select(cols).to_numpy().astype(float)
    rows = table["train_lang"].to_list()
    fig, ax = plt.subplots(figsize=(1 + 0.62 * len(cols), 0.8 + 0.45 * len(rows)))
    cmap = plt.get_cmap("viridis")
    for j, col in enumerate(cols):
        column = values[:, j].copy()
        diagonal = np.array([col == r and not exp.scores_against_base for r in rows])
        colour_values = column[~diagonal & np.isfinite(column)]
        lo, hi = (colour_values.min(), colour_values.max()) if colour_values.size else (0, 1)
        for i in range(len(rows)):
            v = column[i]
            if diagonal[i] or not np.isfinite(v):
                face = (0.9, 0.9, 0.9, 1)
            else:
                face = cmap(0.5 if hi == lo else (v - lo) / (hi - lo))
            ax.add_patch(plt.Rectangle((j, i), 1, 1, color=face))
            if np.isfinite(v):
                dark = not diagonal[i] and (hi == lo or (v - lo) / (hi - lo) < 0.55)
                ax.text(
                    j + 0.5,
                    i + 0.5,
                    f"{v:.0f}",
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="white" if dark else "black",
                )
    ax.set_xlim(0, len(cols))
    ax.set_ylim(len(rows), 0)
    ax.set_xticks(np.arange(len(cols)) + 0.5, cols)
    ax.set_yticks(np.arange(len(rows)) + 0.5, rows)
    ax.xaxis.tick_top()
    ax.set_xlabel("evaluation language (each column on its own colour scale)")
    ax.set_ylabel("tuning language")
    ax.axvline(len(langs), color="white", lw=3)
    ax.set_title(f"{exp.figure}: {exp.title}", fontsize=9, pad=24)
    return _finish(fig, path, note)


def _label(ax, exp: Experiment, xlabel: str, ylabel: str) -> None:
    # 50: indistinguishable from the baseline, as the paper's dashed line
    ax.axhline(50, color="grey", ls="--", lw=0.8, label="50 = same as the baseline")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(f"{exp.figure}: {exp.title}", fontsize=9)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)


def _language_lines(ax, x, table: pl.DataFrame, langs: list[str]) -> None:
    """One thin line per evaluation language, each in its own colour, named in the legend and
    at its right end (a reader can tell every line apart, as in the paper's Figs. 3-5)."""
    colours = _plt().get_cmap("tab20")
    for i, lang in enumerate(langs):
        y = table[lang].cast(pl.Float64).to_numpy()
        colour = colours(i % 20)
        ax.plot(x, y, color=colour, lw=0.8, alpha=0.75, marker=".", label=lang)
        finite = np.isfinite(y)
        if finite.any():
            last = np.flatnonzero(finite)[-1]
            ax.annotate(
                lang,
                (x[last], y[last]),
                textcoords="offset points",
                xytext=(3, 0),
                fontsize=6,
                color=colour,
                va="center",
            )


def _band(ax, x, mid, low, high, colour, label, width=2.4, style="-"):
    ax.plot(x, mid, color=colour, lw=width, ls=style, label=label, marker="o", ms=3)
    if low is not None and high is not None:
        ax.fill_between(x, low, high, color=colour, alpha=0.18, lw=0)


def fraction_plot(table: pl.DataFrame, exp: Experiment, path: Path, note: str | None = None):
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4))
    x = np.arange(table.height)
    langs = [lang for lang in exp.eval_languages if lang != "en" and lang in table.columns]
    _language_lines(ax, x, table, langs)
    # Averages in dark colours and their own line styles, so they never read as a language line.
    for group, colour, style, label in (
        ("seen", "black", "-", "avg: non-English tuning languages"),
        ("unseen", "dimgray", "--", "avg: languages unseen in tuning"),
        ("en", "navy", "-.", "English"),
    ):
        mid = table[f"{group}_avg"].cast(pl.Float64).to_numpy()
        if np.isfinite(mid).any():
            low = table[f"{group}_ci_low"].cast(pl.Float64).to_numpy()
            high = table[f"{group}_ci_high"].cast(pl.Float64).to_numpy()
            _band(ax, x, mid, low, high, colour, label, style=style)
    ax.set_xticks(x, [f"{p:g}%" for p in table["percent"]])
    _label(
        ax,
        exp,
        "share of the tuning set spread over the multilingual languages (P)",
        "IF score vs. monolingual model",
    )
    return _finish(fig, path, note)


def count_plot(table: pl.DataFrame, exp: Experiment, path: Path, note: str | None = None):
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    x = table["k"].to_numpy()
    _language_lines(ax, x, table, [lang for lang in exp.eval_languages if lang in table.columns])
    _band(
        ax,
        x,
        table["avg"].to_numpy(),
        table["avg_ci_low"].to_numpy(),
        table["avg_ci_high"].to_numpy(),
        "black",
        "avg: unseen languages",
    )
    ax.set_xticks(x)
    _label(
        ax,
        exp,
        "number of tuning languages (averaged over the three orders)",
        "IF score on unseen languages",
    )
    return _finish(fig, path, note)


def bilingual_plot(table: pl.DataFrame, exp: Experiment, path: Path, note: str | None = None):
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4))
    x = np.arange(table.height)
    w = 0.27
    ax.bar(
        x - w, table["mono_a"].to_numpy(), w, label="monolingual (first language)", color="tab:gray"
    )
    ax.bar(
        x,
        table["bilingual"].to_numpy(),
        w,
        label="bilingual 50/50",
        color="tab:red",
        yerr=[
            table["bilingual"] - table["bilingual_ci_low"],
            table["bilingual_ci_high"] - table["bilingual"],
        ],
        capsize=2,
    )
    ax.bar(
        x + w, table["mono_b"].to_numpy(), w, label="monolingual (second language)", color="silver"
    )
    ax.set_xticks(x, table["pair"].to_list())
    _label(ax, exp, "language pair", "average IF score on the other languages")
    return _finish(fig, path, note)


def pretraining_plot(
    per_lang: pl.DataFrame,
    summary: pl.DataFrame,
    exp: Experiment,
    path: Path,
    note: str | None = None,
):
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 4))
    x, y = per_lang["share"].to_numpy(), per_lang["avg_cross_score"].to_numpy()
    ax.scatter(x, y, color="tab:blue")
    for lang, xi, yi in zip(per_lang["train_lang"], x, y, strict=True):
        ax.annotate(lang, (xi, yi), textcoords="offset points", xytext=(3, 3), fontsize=8)
    if len(x) > 1 and np.std(x) > 0:
        slope, intercept = np.polyfit(x, y, 1)
        xs = np.linspace(x.min(), x.max(), 50)
        ax.plot(xs, slope * xs + intercept, color="tab:red", label="least-squares fit")
        ax.legend(fontsize=7)
    s = summary.row(0, named=True)
    ax.set_title(
        f"{exp.figure}: Pearson r = {s['pearson_r']:.2f} [{s['ci_low']:.2f}, {s['ci_high']:.2f}], "
        f"{s['n_languages']} languages, English excluded",
        fontsize=9,
    )
    proxy = str(s.get("shares", "")).startswith("proxy")
    ax.set_xlabel(
        "PROXY share: " + str(s["shares"]).removeprefix("proxy: ")
        if proxy
        else "share of pretraining documents (user-supplied)"
    )
    ax.set_ylabel("average cross-lingual IF score")
    return _finish(fig, path, note)


def comparison_plot(both: pl.DataFrame, key: str, rho: float, path: Path, note: str | None = None):
    """This run's cells against the paper's, each labelled train>eval, with the y = x line."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 5))
    x, y = both["paper"].to_numpy(), both["ours"].to_numpy()
    ax.scatter(x, y, color="tab:blue", s=14)
    for t, e, xi, yi in zip(both["train_lang"], both["eval_lang"], x, y, strict=True):
        ax.annotate(f"{t}>{e}", (xi, yi), textcoords="offset points", xytext=(2, 2), fontsize=6)
    if len(x):
        low, high = min(x.min(), y.min()) - 2, max(x.max(), y.max()) + 2
        ax.plot([low, high], [low, high], color="grey", linestyle="--", linewidth=1)
    ax.set_xlabel(f"paper ({key})")
    ax.set_ylabel("this run")
    ax.set_title(f"this run vs the paper: Spearman rho = {rho:.2f} over {len(x)} cells", fontsize=9)
    return _finish(fig, path, note)


def figures_for(
    tables: dict[str, pl.DataFrame], exp: Experiment, folder: Path, note: str | None = None
) -> list[Path]:
    """Draw every figure of an experiment from its tables (`mlit.results.scores.tables_for`); the
    experiment's ``table_kind`` says which plot each table gets."""
    folder = Path(folder)
    stem = exp.table_stem
    if exp.table_kind == "pretraining":
        figure = pretraining_plot(
            tables[stem], tables[f"{stem}_pearson"], exp, folder / f"{stem}.png", note
        )
        matrix = f"fig1_{exp.name}_matrix"
        return [figure, heatmap(tables[matrix], exp, folder / f"{matrix}.png", note)]
    draw = {
        "matrix": heatmap,
        "fraction": fraction_plot,
        "count": count_plot,
        "bilingual": bilingual_plot,
    }[exp.table_kind]
    return [draw(tables[stem], exp, folder / f"{stem}.png", note)]


def curves_of(train: pl.DataFrame) -> list[tuple[str, list, list, int | None]]:
    """(mixture, loss [step, value] pairs, dev ROUGE-L pairs, best step) of each model whose
    curves were recorded (models stored before mlit kept them have none)."""
    if "loss_curve" not in train.columns:
        return []
    out = []
    for r in train.iter_rows(named=True):
        loss = json.loads(r["loss_curve"]) if r.get("loss_curve") else []
        dev = json.loads(r["dev_curve"]) if r.get("dev_curve") else []
        if loss or dev:
            out.append((r["mixture"], loss, dev, r.get("best_step")))
    return sorted(out)


CURVES = "training_curves.png"
LEGEND_AT_MOST = 12  # more models than this: a count in the title instead of a legend


def training_curves(train: pl.DataFrame, path: Path, note: str | None = None) -> Path | None:
    """Training loss and dev ROUGE-L per model over steps, the selected checkpoint (the best dev
    ROUGE-L, the paper's rule) marked; None when no model recorded its curves."""
    curves = curves_of(train)
    if not curves:
        return None
    plt = _plt()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for mixture, loss, dev, best in curves:
        if loss:
            left.plot([s for s, _ in loss], [v for _, v in loss], lw=1.2, label=mixture)
        if dev:
            (line,) = right.plot([s for s, _ in dev], [v for _, v in dev], marker="o", ms=3,
                                 lw=1.2, label=mixture)  # fmt: skip
            chosen = [v for s, v in dev if s == best]
            if chosen:
                right.plot([best], chosen, marker="*", ms=13, color=line.get_color(),
                           markeredgecolor="black", ls="none")  # fmt: skip
    left.set(xlabel="step", ylabel="training loss", title="training loss")
    right.set(xlabel="step", ylabel="dev ROUGE-L", title="dev ROUGE-L (★ the checkpoint kept)")
    if len(curves) <= LEGEND_AT_MOST:
        right.legend(fontsize=7, loc="best")
    else:
        fig.suptitle(f"{len(curves)} models", fontsize=9)
    from matplotlib.ticker import MaxNLocator

    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # steps are whole
    return _finish(fig, path, note)


def runs_plot(lines: dict[str, dict[str, float]], order: list[str], title: str, path: Path) -> Path:
    """One line per run over the experiment's models (each model's mean score): runs of one
    experiment side by side (`mlit compare`)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(max(6, 0.7 * len(order) + 3), 4))
    x = np.arange(len(order))
    for label, means in lines.items():
        ax.plot(x, [means.get(m, np.nan) for m in order], marker="o", lw=2, label=label)
    ax.axhline(50, color="grey", lw=0.8, ls=":")  # a tie with the baseline
    ax.set_xticks(x, order, rotation=30, ha="right", fontsize=8)
    ax.set(ylabel="IF score (mean over languages)", title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _finish(fig, path, None)
