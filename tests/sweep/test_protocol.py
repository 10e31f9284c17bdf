"""The paper preset is the paper: its judging rule, averages, §4.2 statistic, pairs, human studies,
training details, protocol report, and a side-by-side with its published numbers."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from mlit.judging import judge
from mlit.judging.judge import Judge
from mlit.method import experiments, mixtures
from mlit.method.hyperparameters import TrainConfig, TrainError, dropout_settings
from mlit.planning.config import SweepConfig
from mlit.results import comparison, human, scores
from mlit.results.run_folder import RunFolder

ROOT = Path(__file__).parents[2]
LANGS = ["ar", "cs", "en", "es", "et", "fi", "he", "hi", "it", "ru", "sw", "zh"]


def _script(tmp_path: Path, name: str, *args: str) -> subprocess.CompletedProcess:
    """A sweep script run as a user would, with its own empty store."""
    return subprocess.run(
        [sys.executable, str(ROOT / "sweeps" / f"{name}.py"), *args],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "MLIT_STORE": str(tmp_path)},
    )


def _scores(cells: dict[tuple[str, str, str], float]) -> scores.Scores:
    rows = [
        {
            "model": m,
            "eval_lang": lang,
            "baseline": b,
            "score": v,
            "ci_low": v,
            "ci_high": v,
            "wins": 0,
            "ties": 0,
            "losses": 0,
            "errors": 0,
            "n": 1,
        }
        for (m, lang, b), v in cells.items()
    ]
    table = pl.DataFrame(rows).select(scores.SCORE_COLUMNS)
    samples = np.repeat(table["score"].to_numpy()[:, None], 20, axis=1)
    return scores.Scores(table, samples)


# 1. The judging rule -----------------------------------------------------------------------------


def test_the_paper_template_is_the_default_and_adds_no_criteria():
    j = Judge("openai/x")
    assert j.template_name == "paper"
    text = j.template_text().lower()
    assert "subjective" in text and "one digit" in text
    for added in ("language", "correct", "complete", "helpful"):
        assert added not in text, added
    assert "language of the request" in Judge("openai/x", template="rubric").template_text()
    assert Judge("openai/x", template="compact").template_hash() != j.template_hash()
    with pytest.raises(judge.JudgeError, match="or name one of: paper, rubric, compact"):
        Judge("openai/x", template="papr")


# 2. Averages as the paper computes them -----------------------------------------------------------


def test_fig1_row_averages_include_the_diagonal_as_the_paper():
    published = comparison.published()["fig1_monolingual"]["rows"]
    cells = {(f"mono-{t}", e, f"mono-{e}"): published[t]["cells"][e] for t in LANGS for e in LANGS}
    table = scores.matrix_table(_scores(cells), experiments.get("monolingual"))
    ours = dict(zip(table["train_lang"], table["avg"], strict=True))
    for t in LANGS:  # e.g. ar: 36.1 with the diagonal's 50, 34.8 without
        assert ours[t] == pytest.approx(published[t]["avg"], abs=0.051), t
    assert (
        "diagonal's 50 included"
        in scores.notes_for(experiments.get("monolingual"))["fig1_monolingual"]
    )


# 3. §4.2 -------------------------------------------------------------------------------------------


def test_paper_preset_without_shares_stops_before_any_work(tmp_path):
    out = _script(
        tmp_path,
        "pretraining_fraction",
        "--preset",
        "paper",
        "--base-model",
        "X/base",
        "--judge",
        "openai/x",
    )
    assert out.returncode == 2 and "--pretraining-shares FILE" in out.stderr
    assert '{"ar": 0.011' in out.stderr and not (tmp_path / "results").exists()


def test_english_is_excluded_and_a_proxy_is_labelled():
    exp = experiments.get("pretraining_fraction").restricted(("en", "fi", "ru", "sw"))
    cells = {
        (f"mono-{t}", e, f"mono-{e}"): 40.0 + i + j
        for i, t in enumerate(exp.eval_languages)
        for j, e in enumerate(exp.eval_languages)
    }
    shares = {"en": 0.9, "fi": 0.01, "ru": 0.05, "sw": 0.001}
    per_lang, summary = scores.pretraining_table(_scores(cells), exp, shares, source="proxy: x")
    assert "en" not in per_lang["train_lang"].to_list()
    row = summary.row(0, named=True)
    assert row["n_languages"] == 3 and row["english"] == "excluded" and row["shares"] == "proxy: x"
    assert set(per_lang["shares"]) == {"proxy: x"}


# 4. Bilingual pairs ---------------------------------------------------------------------------------


def test_pairs_are_chosen_or_keep_es_en_by_default():
    for seed in range(6):
        names = {r.name for r in experiments.get("bilingual", seed).recipes}
        assert "bi-en-es" in names and len(names) == 6
    chosen = experiments.get("bilingual", 0, ("es-en", "ar-it"))
    assert [r.name for r in chosen.recipes] == ["bi-en-es", "bi-ar-it"]
    with pytest.raises(mixtures.MixtureError, match="two different languages"):
        experiments.get("bilingual", 0, ("es-es",))
    with pytest.raises(mixtures.MixtureError, match="es in two pairs"):
        experiments.get("bilingual", 0, ("es-en", "es-it"))
    with pytest.raises(ValueError, match="--pairs is for the bilingual experiment"):
        SweepConfig(experiment="monolingual", pairs=("es-en",))
    cfg = SweepConfig(experiment="bilingual", pairs=("es-en", "ar-it"))
    assert SweepConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


# 5, 6. Human studies as in the paper ----------------------------------------------------------------


def _gens(tmp_path: Path) -> Path:
    from helpers import judgments

    from mlit.generation.answer_client import GENERATION_COLUMNS

    rows = [
        {
            "model": f"mono-{m}",
            "model_key": m,
            "example_id": f"e{i}",
            "lang": lang,
            "instruction": f"q{i}",
            "response": f"{m} says {i} in {lang}",
            "status": "ok",
            "cached": False,
        }
        for m in ("en", "es", "fi")
        for lang in ("en", "es")
        for i in range(5)
    ]
    pl.DataFrame(
        [{c: r.get(c) for c in GENERATION_COLUMNS} for r in rows], schema=GENERATION_COLUMNS
    ).write_parquet(tmp_path / "generations.parquet")
    judged = [
        (f"mono-{m}", f"mono-{lang}", lang, f"e{i}", "loss")
        for m in ("en", "es", "fi")
        for lang in ("en", "es")
        if m != lang
        for i in range(5)
    ]
    judgments(judged).write_parquet(tmp_path / "judgments.parquet")
    return tmp_path


def test_human_kit_rates_each_languages_monolingual_model_against_a_random_other(tmp_path):
    run = _gens(tmp_path)
    frame, key = human.export(run, per_language=3, seed=0, languages=("en", "es"))
    rating = frame.filter(pl.col("study") == "rating")
    assert rating.height == 6
    for r in rating.iter_rows(named=True):
        assert key[r["item_id"]]["model"] == f"mono-{r['eval_lang']}"
        assert f"in {r['eval_lang']}" in r["answer"]
    sbs = frame.filter(pl.col("study") == "side_by_side")
    assert sbs.height == 6
    for r in sbs.iter_rows(named=True):
        k = key[r["item_id"]]
        assert k["baseline"] == f"mono-{r['eval_lang']}" and k["candidate"] != k["baseline"]
        assert k["candidate"].startswith("mono-")
    with pytest.raises(human.HumanKitError, match="no answers of mono-ru in ru"):
        human.export(run, languages=("ru",))


def test_app_e_draws_answers_from_models_tuned_on_other_languages(tmp_path):
    run = _gens(tmp_path)
    frame, key = human.export_language(run, per_language=4, seed=0)
    assert frame.height == 8
    for r in frame.iter_rows(named=True):
        assert key[r["item_id"]]["model"] != f"mono-{r['eval_lang']}"
    filled = frame.with_columns(same_language=pl.Series(["yes"] * 7 + ["no"]))
    filled.write_csv(tmp_path / "filled.csv")
    share = human.language_share([tmp_path / "filled.csv"])
    assert share.row(-1, named=True)["same_language"] == 7
    assert share.row(-1, named=True)["share"] == pytest.approx(87.5)


# 7. Training exactly as specified ----------------------------------------------------------------


def test_the_batch_is_exactly_128_on_any_worker_count_that_divides_it():
    paper = TrainConfig.paper()
    for workers in (1, 2, 4, 8, 16, 32, 64, 128):
        per_device, accumulation = paper.batch_plan(workers)
        assert per_device * accumulation * workers == 128, workers
        assert per_device <= paper.per_device_batch_size
    for workers in (3, 5, 6, 12):  # 132, 140, 144 before
        with pytest.raises(TrainError, match="worker counts that work: 1, 2, 4, 8, 16, 32, 64"):
            paper.batch_plan(workers)
    with pytest.raises(TrainError, match="worker counts that work"):
        from mlit.planning import plan

        plan.prepare(
            SweepConfig(
                experiment="monolingual", preset="paper", dry_run=True, base_model="X/y", workers=3
            )
        )


def test_dropout_reaches_every_dropout_setting_the_config_has():
    from transformers import GPT2Config, LlamaConfig

    assert dropout_settings(LlamaConfig()) == ["attention_dropout"]
    gpt2 = dropout_settings(GPT2Config())
    assert {"attn_pdrop", "embd_pdrop", "resid_pdrop"} <= set(gpt2)
    assert dropout_settings(type("C", (), {"to_dict": lambda self: {"hidden_size": 8}})()) == []


# 9. Side by side with the paper ------------------------------------------------------------------


def test_compare_paper_sets_each_cell_beside_the_published_value(tmp_path, capsys):
    run = RunFolder(tmp_path / "run")
    run.start(
        SweepConfig(experiment="monolingual", languages=("ar", "en", "es")), "monolingual", {}
    )
    published = comparison.published()["fig1_monolingual"]["rows"]
    rows = []
    for t in ("ar", "en", "es"):
        row = {"model": f"mono-{t}", "train_lang": t}
        row.update({e: published[t]["cells"][e] + 1.0 for e in ("ar", "en", "es")})
        rows.append(row)
    run.tables.mkdir(parents=True)
    pl.DataFrame(rows).write_csv(run.tables / "fig1_monolingual.csv")
    frame = comparison.compare(run.path)
    assert frame.height == 9 and frame["diff"].to_list() == pytest.approx([1.0] * 9)
    printed = capsys.readouterr().out
    assert "Spearman rank correlation over 6 off-diagonal cells: 1.00" in printed
    assert (run.tables / "compare_paper.csv").exists() and (
        run.figures / "compare_paper.png"
    ).exists()
