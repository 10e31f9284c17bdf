"""Human validation kit: export for raters, import filled CSVs, the paper's agreement rule."""

import json

import polars as pl
import pytest
from helpers import judgments

from mlit.generation.answer_client import GENERATION_COLUMNS
from mlit.results import human


def _run(tmp_path):
    gens = []
    for model in ("mono-en", "mono-fi"):
        for i in range(6):
            gens.append(
                {
                    "model": model,
                    "model_key": model,
                    "example_id": f"e{i}",
                    "lang": "fi",
                    "instruction": f"Kysymys {i}?",
                    "response": f"{model} vastaus {i}",
                    "status": "ok",
                    "cached": False,
                }
            )
    pl.DataFrame(
        [{c: g.get(c) for c in GENERATION_COLUMNS} for g in gens], schema=GENERATION_COLUMNS
    ).write_parquet(tmp_path / "generations.parquet")
    verdicts = ["win", "loss", "tie", "win", "loss", "win"]
    judgments(
        [("mono-en", "mono-fi", "fi", f"e{i}", v) for i, v in enumerate(verdicts)]
    ).write_parquet(tmp_path / "judgments.parquet")
    return tmp_path


def _fill(frame: pl.DataFrame, key: dict, rater: str, human_outcome) -> pl.DataFrame:
    rows = []
    for r in frame.iter_rows(named=True):
        r = dict(r)
        r["rater"] = rater
        if r["study"] == "rating":
            r["rating"] = "pass"
        else:
            outcome = human_outcome(key[r["item_id"]])
            cand = key[r["item_id"]]["candidate_is"]
            r["choice"] = "tie" if outcome == "tie" else str(cand if outcome == "win" else 3 - cand)
        rows.append(r)
    return pl.DataFrame(rows, schema=frame.schema)


def test_agreement_rule():
    assert human.agreement("win", "win") == 1
    assert human.agreement("win", "tie") == 0.5 and human.agreement("tie", "loss") == 0.5
    assert human.agreement("win", "loss") == 0


def test_export_import_round_trip(tmp_path):
    run = _run(tmp_path)
    frame, key = human.export(run, per_language=4, seed=1, languages=("fi",))
    assert set(frame["study"]) == {"rating", "side_by_side"}
    assert frame.filter(pl.col("study") == "side_by_side").height == 4
    assert "model" not in frame.columns and "candidate" not in frame.columns  # raters are blind
    csv, key_path = human.write_kit(frame, key, tmp_path / "kit.csv")
    key = json.loads(key_path.read_text())
    # Rater A agrees with the judge everywhere; rater B always says tie.
    a = _fill(
        pl.read_csv(csv, schema_overrides=dict.fromkeys(human.COLUMNS, pl.String)),
        key,
        "alice",
        lambda k: k["judge_verdict"],
    )
    b = _fill(
        pl.read_csv(csv, schema_overrides=dict.fromkeys(human.COLUMNS, pl.String)),
        key,
        "bob",
        lambda k: "tie",
    )
    a.write_csv(tmp_path / "a.csv")
    b.write_csv(tmp_path / "b.csv")
    filled = human.read_filled([tmp_path / "a.csv", tmp_path / "b.csv"])
    ratings = human.rating_distribution(filled).row(0, named=True)
    assert ratings["pass"] == 100 and ratings["n"] == 8
    agree = human.agreements(filled, key).row(0, named=True)
    ties = sum(key[i]["judge_verdict"] == "tie" for i in key if i.startswith("s-"))
    # alice: 100 on every item; bob: 1 where the judge said tie, 0.5 elsewhere.
    expected_bob = (ties * 1 + (4 - ties) * 0.5) / 4 * 100
    assert agree["judge_human"] == pytest.approx((100 + expected_bob) / 2)
    assert agree["human_human"] == pytest.approx(expected_bob)


def test_bad_choices_are_named(tmp_path):
    run = _run(tmp_path)
    frame, _key = human.export(run, per_language=2, languages=("fi",))
    bad = frame.with_columns(
        choice=pl.when(pl.col("study") == "side_by_side").then(pl.lit("maybe"))
    )
    bad.write_csv(tmp_path / "bad.csv")
    with pytest.raises(human.HumanKitError, match="choice must be one of"):
        human.read_filled([tmp_path / "bad.csv"])


def test_the_raters_agreement_lands_on_the_runs_results_page(tmp_path):
    """Issue 51: `mlit human export` names its run in the key; `mlit human import` writes the
    raters' agreement into that run folder and its results page shows it per language."""
    from click.testing import CliRunner

    from mlit.cli.main import app
    from mlit.planning.config import SweepConfig
    from mlit.results.run_folder import RunFolder

    (tmp_path / "run").mkdir()
    run_dir = _run(tmp_path / "run")
    RunFolder(run_dir).start(SweepConfig(experiment="monolingual", output=str(run_dir)), "x", {})
    runner = CliRunner()
    kit = tmp_path / "kit.csv"
    done = runner.invoke(
        app, ["human", "export", str(run_dir), "--per-language", "4", "--languages", "fi",
              "--out", str(kit)],
    )  # fmt: skip
    assert done.exit_code == 0, done.output
    key_path = kit.with_suffix(".key.json")
    key = json.loads(key_path.read_text())
    assert key[human.RUN_ENTRY] == str(run_dir.resolve())
    schema = dict.fromkeys(human.COLUMNS, pl.String)
    _fill(pl.read_csv(kit, schema_overrides=schema), key, "alice", lambda k: k["judge_verdict"]
          ).write_csv(tmp_path / "a.csv")  # fmt: skip
    done = runner.invoke(
        app, ["human", "import", str(tmp_path / "a.csv"), "--key", str(key_path),
              "--out-dir", str(tmp_path / "tables")],
    )  # fmt: skip
    assert done.exit_code == 0, done.output
    assert "results page shows it" in done.output
    page = (run_dir / "report.html").read_text("utf-8")
    assert "agreement with this run&#x27;s raters" in page
    assert "<td>fi</td>" in page and "1.000 (4 items)" in page  # alice agrees with the judge
    # Named explicitly, a folder that is not a run is refused with one line, tables kept.
    done = runner.invoke(
        app, ["human", "import", str(tmp_path / "a.csv"), "--key", str(key_path),
              "--out-dir", str(tmp_path / "tables2"), "--run", str(tmp_path / "nowhere")],
    )  # fmt: skip
    assert done.exit_code == 2 and "not on a results page" in done.output
    assert (tmp_path / "tables2" / "appD_agreement.csv").exists()
