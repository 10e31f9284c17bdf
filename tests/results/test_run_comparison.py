"""`mlit compare` (issue 52): runs of one experiment side by side, per-cell differences with a
paired bootstrap interval over the same instructions; runs of different experiments or on
different instructions refused with one line and rc 2. Run folders are written as a sweep
writes them, from synthetic verdicts (no Ray)."""

import os

import polars as pl
import pytest
from browser import chromium, load
from click.testing import CliRunner
from helpers import synthetic_judgments

from mlit.cli.main import app
from mlit.method import experiments
from mlit.planning.config import SweepConfig
from mlit.results import analysis, run_comparison
from mlit.results.run_folder import RunFolder

needs_chromium = pytest.mark.skipif(
    chromium() is None and not os.environ.get("CI"),
    reason="headless Chromium is missing: `apt-get install chromium` (Debian) to run this test",
)

N = 40  # instructions per language: enough for a strong effect to be significant


def _run(path, name: str, seed: int, judgments: pl.DataFrame | None = None) -> RunFolder:
    exp = experiments.get(name)
    cfg = SweepConfig(experiment=name, output=str(path), n_boot=50, seed=seed)
    run = RunFolder(path)
    run.start(cfg, name, {}).finish("ok")
    run.write_frame("judgments", synthetic_judgments(exp, seed=seed, n=N) if judgments is None else judgments)  # fmt: skip
    run.write_shares({lang: 0.1 for lang in exp.eval_languages}, "test")
    analysis.rebuild(path)
    return run


def _better(judged: pl.DataFrame, model: str, lang: str) -> pl.DataFrame:
    """The same verdicts, except that ``model`` wins every comparison in ``lang``."""
    hit = (pl.col("candidate") == model) & (pl.col("eval_lang") == lang)
    return judged.with_columns(verdict=pl.when(hit).then(pl.lit("win")).otherwise("verdict"))


def test_paired_differences_find_the_changed_cell_and_only_it(tmp_path):
    exp = experiments.get("language_count")
    model, lang = exp.recipes[0].name, exp.eval_languages[0]
    a = _run(tmp_path / "seed0", "language_count", 0)
    b = _run(tmp_path / "seed0-better", "language_count", 0,
             _better(synthetic_judgments(exp, seed=0, n=N), model, lang))  # fmt: skip
    runs = run_comparison.load([a.path, b.path])
    cells = run_comparison.paired(*runs, n_boot=500)
    changed = cells.filter((pl.col("model") == model) & (pl.col("eval_lang") == lang)).row(
        0, named=True
    )
    assert changed["significant"] and changed["diff"] > 0 and changed["ci_low"] > 0
    assert changed["instructions"] == N and changed["seed0-better"] == 100.0
    same = cells.filter(~((pl.col("model") == model) & (pl.col("eval_lang") == lang)))
    assert same.height > 10 and (same["diff"] == 0).all() and not same["significant"].any()


@needs_chromium
def test_two_seeds_side_by_side_in_a_browser(tmp_path):
    for seed in (0, 1):
        _run(tmp_path / f"seed{seed}", "language_count", seed)
    out = tmp_path / "compare.html"
    done = CliRunner().invoke(
        app, ["compare", str(tmp_path / "seed0"), str(tmp_path / "seed1"), "--out", str(out),
              "--n-boot", "200"],
    )  # fmt: skip
    assert done.exit_code == 0, done.output
    assert "seed1 - seed0:" in done.output and "cells differ significantly" in done.output
    shown = load(out, tmp_path / "compare.png")
    assert shown.errors == [] and len(shown.images) == 1 and shown.images[0]["ok"]
    assert shown.images[0]["width"] > 300
    assert "2 runs of language_count" in shown.text
    assert "seed1 − seed0" in shown.text and "difference [95% CI]" in shown.text
    exp = experiments.get("language_count")
    assert f"{exp.recipes[0].name}\tmono-" in shown.text  # a row per cell


def test_other_experiments_or_other_instructions_are_refused_with_one_line(tmp_path):
    _run(tmp_path / "count", "language_count", 0)
    _run(tmp_path / "mono", "monolingual", 0)
    exp = experiments.get("language_count")
    fewer = synthetic_judgments(exp, seed=0, n=N).filter(pl.col("example_id") != "e3")
    _run(tmp_path / "fewer", "language_count", 0, fewer)
    runner = CliRunner()
    for other, says in (
        ("mono", "mono is a run of monolingual, count of language_count"),
        ("fewer", "fewer and count were evaluated on different instructions (0 not in count"),
    ):
        done = runner.invoke(app, ["compare", str(tmp_path / "count"), str(tmp_path / other),
                                   "--out", str(tmp_path / "x.html")])  # fmt: skip
        assert done.exit_code == 2, done.output
        assert says in done.output and len(done.output.strip().splitlines()) == 1
    assert not (tmp_path / "x.html").exists()
