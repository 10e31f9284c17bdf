"""report.html, loaded in a real browser (headless Chromium): every figure renders, no console
errors. The run folder is written as a sweep writes it, from synthetic verdicts (no Ray)."""

import os
import shutil

import pytest
from browser import chromium, load
from helpers import synthetic_judgments

from mlit.method import experiments
from mlit.planning.config import SweepConfig
from mlit.results import analysis
from mlit.results.run_folder import RunFolder

needs_chromium = pytest.mark.skipif(
    chromium() is None and not os.environ.get("CI"),
    reason="headless Chromium is missing: `apt-get install chromium` (Debian) to run this test",
)


def _run_folder(path, name: str) -> RunFolder:
    """A finished run's folder: run.json, judgments, shares; then `mlit report` on it."""
    exp = experiments.get(name)
    cfg = SweepConfig(experiment=name, output=str(path), n_boot=50)
    run = RunFolder(path)
    record = run.start(cfg, name, {})
    record.phase("train", {"seconds": 1.0, "models_trained": 2})
    record.set(
        protocol=[
            {"name": "languages", "paper": "ar cs en", "ours": "cs en", "matches": False},
            {"name": "dropout", "paper": "0.05", "ours": "0.05", "matches": True},
        ]
    )
    record.finish("ok")
    run.write_frame("judgments", synthetic_judgments(exp, seed=3))
    run.write_shares({lang: 0.01 * (i + 1) for i, lang in enumerate(exp.eval_languages)}, "test")
    analysis.rebuild(path)
    return run


@needs_chromium
@pytest.mark.parametrize("name", ["language_count", "language_similarity", "bilingual"])
def test_the_results_page_renders_every_figure_in_a_browser(name, tmp_path):
    run = _run_folder(tmp_path / "run", name)
    page = run.path / "report.html"
    html = page.read_text("utf-8")
    exp = experiments.get(name)
    assert exp.title in html and exp.section in html
    assert "DEMO RUN" in html  # the demo notice
    assert "ci_low" in html  # tables carry their confidence intervals
    assert "order_consistency" in html and "git commit" in html
    assert 'href="judgments.parquet"' in html
    assert "1 of 2 items as in the paper" in html and '<tr class="differs">' in html
    assert "http://" not in html and "https://" not in html  # nothing fetched from a network

    shown = load(page, tmp_path / f"{name}.png")
    figures = sorted(run.figures.glob("*.png"))
    assert len(shown.images) == len(figures) >= 1
    assert all(i["ok"] and i["width"] > 300 for i in shown.images), shown.images
    assert shown.errors == []
    assert exp.title in shown.title
    assert shown.screenshot.stat().st_size > 20_000
    keep = os.environ.get("MLIT_SCREENSHOTS")  # to look at the page: a folder to keep them in
    if keep:
        shutil.copy(shown.screenshot, keep)


@needs_chromium
def test_the_browser_check_sees_a_broken_figure_and_a_console_error(tmp_path):
    """The check above can fail: a figure that does not decode and a script error are seen."""
    page = tmp_path / "broken.html"
    page.write_text(
        '<!doctype html><title>broken</title><img alt="bad" src="data:image/png;base64,AAAA">'
        "<script>console.error('boom'); undefined_function();</script>"
    )
    shown = load(page, tmp_path / "broken.png")
    assert shown.images == [{"alt": "bad", "ok": False, "width": 0}]
    assert any("boom" in e for e in shown.errors)
    assert any("undefined_function" in e or "Uncaught" in e for e in shown.errors)


@needs_chromium
def test_a_sweep_given_a_judge_check_shows_each_languages_agreement(tmp_path):
    """Issue 51: the judge's agreement with humans beside the scores, and the scores of a
    language where it is within noise of chance marked."""
    import polars as pl

    from mlit.judging import check

    exp = experiments.get("language_count")
    langs = list(exp.eval_languages)
    table = pl.DataFrame(
        [
            {"language": lang, "pairs": 40, "agreement": 0.5 if i == 0 else 0.9,
             "agreement_ci_low": 0.4 if i == 0 else 0.8, "agreement_ci_high": 0.6 if i == 0 else 0.97,
             "order_consistency": 0.05 if i == 0 else 0.85, "within_chance": i == 0}
            for i, lang in enumerate(langs)
        ]
    )  # fmt: skip
    table.write_csv(tmp_path / "check.csv")
    run = RunFolder.open(_run_folder(tmp_path / "run", "language_count").path)
    run.write_frame("judge_check", check.read_result(tmp_path / "check.csv"))  # as a sweep does
    analysis.rebuild(run.path)
    shown = load(run.path / "report.html", tmp_path / "check.png")
    assert shown.errors == []
    assert "The judge's reliability per language" in shown.text
    assert "agreement with humans [95% CI]" in shown.text
    assert f"{langs[1]}\t40\t0.900 [0.800, 0.970]\t0.850" in shown.text
    assert "within noise of chance" in shown.text and f"{langs[0]} ⚠" in shown.text
    assert f"{langs[1]} ⚠" not in shown.text


@needs_chromium
def test_training_curves_show_on_the_page_with_the_checkpoint_kept(tmp_path):
    """Issue 52: each model's loss and dev ROUGE-L over steps, drawn from train.parquet (no
    tracker needed), the checkpoint kept named per model; a model stored before curves were
    recorded is listed without one."""
    import json

    import polars as pl

    from mlit.results import plots

    run = _run_folder(tmp_path / "run", "language_count")
    rows = [
        {"mixture": "count-fi", "best_step": 4, "best_dev_rouge_l": 0.31, "status": "trained",
         "loss_curve": json.dumps([[1, 3.2], [2, 2.9], [3, 2.5], [4, 2.4]]),
         "dev_curve": json.dumps([[2, 0.22], [4, 0.31]]), "mlflow_run_id": "abc123"},
        {"mixture": "count-fi-en", "best_step": 2, "best_dev_rouge_l": 0.28, "status": "stored",
         "loss_curve": json.dumps([[1, 3.1], [2, 2.7], [3, 2.6], [4, 2.6]]),
         "dev_curve": json.dumps([[2, 0.28], [4, 0.27]]), "mlflow_run_id": None},
        {"mixture": "mono-cs", "best_step": None, "best_dev_rouge_l": 0.2, "status": "stored",
         "loss_curve": None, "dev_curve": None, "mlflow_run_id": None},
    ]  # fmt: skip
    run.write_frame("train", pl.DataFrame(rows))
    analysis.rebuild(run.path)
    assert [c[0] for c in plots.curves_of(run.frame("train"))] == ["count-fi", "count-fi-en"]
    shown = load(run.path / "report.html", tmp_path / "curves.png")
    assert shown.errors == [] and all(i["ok"] for i in shown.images)
    assert "training_curves" in {i["alt"] for i in shown.images}
    assert "Training curves" in shown.text and "★ marks the checkpoint kept" in shown.text
    assert "count-fi\t4\t0.3100\ttrained\tabc123" in shown.text
    assert "count-fi-en\t2\t0.2800\tstored" in shown.text
