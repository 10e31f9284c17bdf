"""`mlit data paper`: the paper's selection from files in the published shapes, translated by a
translator on loopback, every translation checked before it is written, resumable, and a dataset
a sweep plans on."""

import json
import os
import subprocess
import sys
from pathlib import Path

import polars as pl
from click.testing import CliRunner

from mlit.cli.main import app
from mlit.data import dataset
from mlit.method import languages

FIXTURES = Path(__file__).parents[1] / "fixtures"
ROOT = Path(__file__).parents[2]


def _args(url: str, out: Path, store: Path, *extra: str) -> list[str]:
    return [
        "data", "paper",
        "--lima", str(FIXTURES / "lima_like.jsonl"),
        "--oasst", str(FIXTURES / "oasst_like.jsonl"),
        "--alpaca-farm", str(FIXTURES / "alpaca_farm_like.jsonl"),
        "--languages", "es,sr",
        "--translator", "openai/translate", "--api-base", url,
        "--out", str(out), "--store", str(store), *extra,
    ]  # fmt: skip


def test_data_paper_selects_translates_checks_and_reruns_only_what_failed(endpoint, tmp_path):
    script, url = endpoint
    out, store = tmp_path / "paper.parquet", tmp_path / "store"
    dry = CliRunner().invoke(
        app, _args(url, out, store, "--dry-run", "--input-price", "2.5", "--output-price", "10")
    )
    assert dry.exit_code == 0, dry.output
    said = " ".join(dry.output.split())
    assert "LIMA single-turn pairs: 3 (paper: 1,000)" in said
    assert "OpenAssistant first turns: 3 (paper: 3,640; of 6 English roots, 2 deleted" in said
    assert "AlpacaFarm, no OpenAssistant: 4 (paper: 617)" in said
    assert "40 texts, 40 to translate" in said and "$0.01" in said
    assert sum(script.calls.values()) == 0 and not out.exists()  # no call, nothing written

    script.echo = "owls"  # one LIMA example comes back untranslated, in both fields
    first = CliRunner().invoke(app, _args(url, out, store))
    assert first.exit_code == 1, first.output
    assert "4 translation(s) failed their checks and were not written: untranslated 4" in (
        first.output
    )
    frame = dataset.open_source(str(out))
    owls = frame.filter(pl.col("instruction").str.contains("(?i)owls"))
    assert owls["lang"].to_list() == ["en"]  # not written in es or sr
    for lang in ("es", "sr"):
        assert frame.filter(pl.col("lang") == lang).height == 10 - 1  # 3+3+4 examples, one failed
    for text in frame.filter(pl.col("lang") == "sr")["instruction"]:
        share = languages.script_share(text, "Cyrl")
        assert share is None or share > 0.5, text  # Serbian in Cyrillic ("42." has no letters)
    card = json.loads(out.with_name(out.name + ".card.json").read_text())
    assert card["selection"]["oasst"] == 3 and card["examples"]["sr"] == {"eval": 4, "train": 5}
    assert card["checks"]["not_written"] == {"untranslated": 4}
    assert card["checks"]["replies_refused"] == {"untranslated": 4}
    assert card["sources"]["lima"]["sha256"] and card["translator"]["prompt"]

    calls = sum(script.calls.values())
    script.echo = None
    second = CliRunner().invoke(app, _args(url, out, store))
    assert second.exit_code == 0, second.output
    assert sum(script.calls.values()) - calls == 4  # only what failed
    assert dataset.open_source(str(out)).filter(pl.col("lang") != "en").height == 20
    # The rerun's card describes the whole dataset: 36 texts from the store, 4 asked again, and
    # the 4 replies refused by the first run still counted.
    checks = json.loads(out.with_name(out.name + ".card.json").read_text())["checks"]
    assert checks["texts_written"] == 40 and checks["texts_from_the_store"] == 36
    assert checks["not_written"] == {} and checks["replies_refused"] == {"untranslated": 4}
    assert checks["pass_rate"]["untranslated"] == round(1 - 4 / 44, 4)

    plan = subprocess.run(
        [sys.executable, str(ROOT / "sweeps" / "monolingual.py"), "--data", str(out),
         "--languages", "en,es", "--dry-run"],
        capture_output=True, text=True, cwd=tmp_path,
        env={**os.environ, "MLIT_STORE": str(tmp_path / "sweep-store")},
    )  # fmt: skip
    assert plan.returncode == 0, plan.stderr
    assert "mono-en" in plan.stdout and "mono-es" in plan.stdout


def test_bad_options_fail_before_any_source_is_read(tmp_path):
    out = CliRunner().invoke(
        app, _args("http://127.0.0.1:9", tmp_path / "o.parquet", tmp_path, "--languages", "es,xx")
    )
    assert out.exit_code == 2 and "unknown language code 'xx'" in out.output
    out = CliRunner().invoke(
        app, _args("http://127.0.0.1:9", tmp_path / "o.parquet", tmp_path, "--input-price", "1")
    )
    assert out.exit_code == 2 and "--input-price and --output-price" in out.output
    out = CliRunner().invoke(
        app, _args("http://127.0.0.1:9", tmp_path / "o.parquet", tmp_path, "--rpm", "0")
    )
    assert out.exit_code == 2 and "--rpm must be positive" in out.output


def test_retry_after_is_honoured(endpoint):
    import asyncio

    from mlit.providers import llm

    script, url = endpoint
    script.fail_first["judge"] = 2
    script.retry_after = 1
    e = llm.Endpoint("openai/judge", url, retries=5, backoff_s=0.01, patience_s=0)
    result = asyncio.run(llm.complete(e, "Answer 1: good Answer 2: bad", 2))
    assert result["status"] == "ok"
    gaps = [b - a for a, b in zip(script.times, script.times[1:], strict=False)]
    assert len(gaps) == 2 and min(gaps) >= 0.9  # the backoff alone would ask again at once


def test_data_paper_in_batch_mode_under_a_budget(endpoint, tmp_path):
    """`--mode batch` and `--max-cost` on the command line: over budget by estimate, nothing is
    sent; within it, the translations come through the Batch API, no online call."""
    script, url = endpoint
    out, store = tmp_path / "paper.parquet", tmp_path / "store"
    prices = ("--input-price", "2.5", "--output-price", "10", "--batch-poll", "0.1")
    over = CliRunner().invoke(
        app, _args(url, out, store, "--mode", "batch", "--max-cost", "0.001", *prices)
    )
    assert over.exit_code != 0 and "over the budget --max-cost $0.0010" in over.output
    assert sum(script.calls.values()) == 0 and not script.batches and not out.exists()
    ok = CliRunner().invoke(
        app, _args(url, out, store, "--mode", "batch", "--max-cost", "1", *prices)
    )
    assert ok.exit_code == 0, ok.output
    assert script.batch_calls["translate"] == 40 and sum(script.calls.values()) == 0
    assert "cost: $" in ok.output
    assert dataset.open_source(str(out)).filter(pl.col("lang") == "sr").height == 10
