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
