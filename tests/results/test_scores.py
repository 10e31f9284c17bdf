"""IF scores against hand calculations, intervals, order consistency and the figure tables."""

import helpers
import numpy as np
import polars as pl
import pytest
from helpers import judgments, synthetic_judgments

from mlit.judging.judgments import pair_verdict
from mlit.method import experiments
from mlit.results import scores


def one(table, model, lang="en"):
    return table.filter((pl.col("model") == model) & (pl.col("eval_lang") == lang)).row(
        0, named=True
    )


def test_pair_verdict_from_both_orders():
    assert pair_verdict(1, 2) == "win"  # candidate chosen as Answer 1 and as Answer 2
    assert pair_verdict(2, 1) == "loss"
    assert pair_verdict(1, 1) == "tie" and pair_verdict(2, 2) == "tie"
    assert pair_verdict(None, 2) == "error"


def test_scores_by_hand():
    rows = []
    rows += [("all-wins", "b", "en", f"e{i}", "win") for i in range(4)]
    rows += [("all-ties", "b", "en", f"e{i}", "tie") for i in range(4)]
    rows += [
        ("mixed", "b", "en", ex, v)
        for ex, v in [("e0", "win"), ("e1", "win"), ("e2", "tie"), ("e3", "loss")]
    ]
    rows += [
        ("with-errors", "b", "en", ex, v)
        for ex, v in [("e0", "win"), ("e1", "error"), ("e2", "loss"), ("e3", "error")]
    ]
    rows += [("b", "b", "en", f"e{i}", "tie") for i in range(4)]  # self-comparison
    s = scores.score(judgments(rows), n_boot=500)
    t = s.table
    assert one(t, "all-wins")["score"] == 100
    assert one(t, "all-ties")["score"] == 50
    assert one(t, "mixed")["score"] == pytest.approx(62.5)  # (1 + 1 + 0.5 + 0) / 4
    errs = one(t, "with-errors")
    assert errs["score"] == 50 and errs["errors"] == 2 and errs["n"] == 2
    assert (errs["wins"], errs["ties"], errs["losses"]) == (1, 0, 1)
    assert one(t, "b")["score"] == 50 and one(t, "b")["ci_low"] == 50 == one(t, "b")["ci_high"]
    for row in t.iter_rows(named=True):
        assert row["ci_low"] <= row["score"] <= row["ci_high"]
    assert one(t, "mixed")["ci_low"] < 62.5 < one(t, "mixed")["ci_high"]
    assert set(t.columns) >= {
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
    }


def test_bootstrap_is_paired_and_seeded():
    rows = [("m1", "b", "fi", f"e{i}", "win" if i % 2 else "loss") for i in range(20)]
    rows += [("m2", "b", "fi", f"e{i}", "win" if i % 2 else "loss") for i in range(20)]
    a = scores.score(judgments(rows), n_boot=200, seed=1)
    b = scores.score(judgments(rows), n_boot=200, seed=1)
    assert np.array_equal(a.samples, b.samples)
    # Two models with identical verdicts get identical replicates: instructions resampled jointly.
    assert np.array_equal(a.samples[0], a.samples[1])


def test_order_consistency_counts_disagreeing_orders():
    rows = [
        ("m", "b", "en", "e0", "tie"),
        ("m", "b", "en", "e1", "win"),
        ("m", "b", "en", "e2", "error"),
        ("b", "b", "en", "e0", "tie"),
    ]
    oc = scores.order_consistency(judgments(rows)).row(0, named=True)
    assert (oc["pairs"], oc["disagree"], oc["disagreement"]) == (2, 1, 0.5)


@pytest.mark.parametrize(
    ("name", "shape"),
    [
        ("monolingual", (12, 2 + 12 + 3)),
        ("language_similarity", (7, 2 + 7 + 3)),
        ("base_model", (12, 2 + 12 + 3)),
        ("multilingual_fraction", (11, 2 + 12 + 9)),
        ("unseen_languages", (11, 2 + 12 + 9)),
        ("language_count", (6, 1 + 6 + 3)),
        ("bilingual", (6, 9)),
    ],
)
def test_figure_tables_have_the_experiments_shape(name, shape):
    exp = experiments.get(name)
    s = scores.score(synthetic_judgments(exp), n_boot=100)
    [table] = scores.tables_for(s, exp).values()
    assert table.shape == shape
    if name == "language_count":
        assert table["k"].to_list() == [1, 2, 3, 4, 5, 6]
        assert all(lang in table.columns for lang in ("cs", "et", "he", "hi", "es", "zh"))
    if name == "unseen_languages":
        assert table["percent"].to_list() == list(experiments.PERCENTS)
        assert table["unseen_avg"].is_not_null().all()


def test_pretraining_correlation():
    exp = experiments.get("pretraining_fraction")
    s = scores.score(synthetic_judgments(exp, seed=3), n_boot=100)
    shares = {lang: 0.01 * (i + 1) for i, lang in enumerate(exp.eval_languages)}
    tables = scores.tables_for(s, exp, shares)
    per_lang = tables["fig8_pretraining_fraction"]
    summary = tables["fig8_pretraining_fraction_pearson"].row(0, named=True)
    # English is excluded, as in the paper's Fig. 8 (issue 13): 11 languages, not 12.
    assert per_lang.height == 11 and summary["n_languages"] == 11
    assert "en" not in per_lang["train_lang"].to_list()
    x, y = per_lang["share"].to_numpy(), per_lang["avg_cross_score"].to_numpy()
    assert summary["pearson_r"] == pytest.approx(np.corrcoef(x, y)[0, 1])
    assert summary["ci_low"] <= summary["pearson_r"] <= summary["ci_high"]


def test_scores_recompute_from_judgments():
    exp = experiments.get("language_count")
    j = synthetic_judgments(exp, seed=5)
    s = scores.score(j, n_boot=50).table
    again = helpers.recompute_from_judgments(j)
    joined = s.join(again, on=["model", "baseline", "eval_lang"], suffix="_re")
    assert joined.height == s.height
    assert (joined["score"] - joined["score_re"]).abs().max() < 1e-9


@pytest.mark.parametrize("name", experiments.NAMES)
def test_every_figure_is_drawn_from_a_small_run(name, tmp_path):
    from mlit.results import plots

    exp = experiments.get(name)
    s = scores.score(synthetic_judgments(exp, seed=7), n_boot=50)
    shares = {lang: 0.02 * (i + 1) for i, lang in enumerate(exp.eval_languages)}
    tables = scores.tables_for(s, exp, shares)
    written = scores.write_tables(tables, tmp_path / "tables")
    assert all(p.exists() and p.stat().st_size > 0 for p in written)
    figures = plots.figures_for(tables, exp, tmp_path / "figures", note=plots.NOTE_DEMO)
    assert figures and all(p.suffix == ".png" and p.stat().st_size > 5000 for p in figures)
    assert figures[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("name", experiments.NAMES)
def test_every_line_and_cell_of_every_figure_is_labelled(name, tmp_path, monkeypatch):
    """Checked on the figure objects, not the pixels: each plotted line and bar set has a name in
    the legend, each heatmap cell its value, every axis its title, and line plots the 50 line."""
    from matplotlib.container import BarContainer

    from mlit.results import plots

    drawn = []
    finish = plots._finish
    monkeypatch.setattr(
        plots, "_finish", lambda fig, path, note: (drawn.append(fig), finish(fig, path, note))[1]
    )
    exp = experiments.get(name)
    s = scores.score(synthetic_judgments(exp, seed=7), n_boot=50)
    shares = {lang: 0.02 * (i + 1) for i, lang in enumerate(exp.eval_languages)}
    tables = scores.tables_for(s, exp, shares)
    plots.figures_for(tables, exp, tmp_path, note=plots.NOTE_DEMO)
    assert drawn
    for fig in drawn:
        ax = fig.axes[0]
        assert ax.get_title() and ax.get_xlabel() and ax.get_ylabel()
        patches = [p for p in ax.patches if type(p).__name__ == "Rectangle"]
        if exp.table_kind in ("matrix", "pretraining") and len(patches) > 20:  # a heatmap
            texts = [t.get_text() for t in ax.texts]
            assert len(texts) == len(patches), "every heatmap cell carries its value"
            continue
        error_bars = {  # the whiskers of a bar set belong to that (labelled) bar set
            id(part)
            for c in ax.containers
            if isinstance(c, BarContainer) and c.errorbar is not None
            for group in c.errorbar.lines
            for part in (group if isinstance(group, tuple) else (group,))
        }
        lines = [
            ln for ln in ax.get_lines() if len(ln.get_xdata()) > 1 and id(ln) not in error_bars
        ]
        for line in lines:
            assert not line.get_label().startswith("_"), f"an unlabelled line in {exp.figure}"
        for bars in (c for c in ax.containers if isinstance(c, BarContainer)):
            assert not bars.get_label().startswith("_")
        if exp.table_kind in ("fraction", "count"):
            assert any(ln.get_ydata()[0] == 50 for ln in ax.get_lines()), "the 50 line"
            named = {ln.get_label() for ln in lines}
            assert {lang for lang in exp.eval_languages if lang != "en"} <= named
