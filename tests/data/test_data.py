import json

import helpers
import polars as pl
import pytest
from conftest import FIXTURES, rows

from mlit.data import dataset, paper_sources
from mlit.method.languages import SAMPLE_LANGUAGES


def test_bundled_sample_is_parallel_valid_and_large_enough(sample):
    report = dataset.validate(sample, SAMPLE_LANGUAGES)
    assert report.ok, report.summary()
    assert set(report.languages) == set(SAMPLE_LANGUAGES)
    assert report.examples["train"] >= 48
    assert report.examples["eval"] >= 16
    eval_rows = dataset.split(sample, "eval")
    assert eval_rows["response"].null_count() == 0  # reference answers ship with the eval split
    # Reference answers are one to four sentences.
    for text in dataset.split(sample, "eval").filter(pl.col("lang") == "en")["response"]:
        sentences = [s for s in text.replace("!", ".").replace("?", ".").split(".") if s.strip()]
        assert 1 <= len(sentences) <= 4, text


def test_sample_translations_are_distinct_texts(sample):
    # A translation that is a copy of English is the commonest silent failure of parallel data.
    en = sample.filter(pl.col("lang") == "en").select("example_id", pl.col("response").alias("en"))
    joined = sample.filter(pl.col("lang") != "en").join(en, on="example_id")
    copies = joined.filter(pl.col("response") == pl.col("en"))
    assert copies.height == 0, copies


def test_jsonl_and_parquet_round_trip(tmp_path, sample):
    small = sample.head(40)
    for name in ("d.jsonl", "d.parquet"):
        path = dataset.save(small, tmp_path / name)
        assert dataset.load(path).equals(small)
    assert dataset.load(tmp_path).height == 80  # a folder loads every file in it


def test_hf_datasets_path_reads_a_local_file(tmp_path, sample):
    path = dataset.save(sample.head(10), tmp_path / "hub_like.parquet")
    assert dataset.open_source(f"hf:{path}").equals(sample.head(10))


def test_malformed_files_name_the_problem(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        '{"example_id": "a", "lang": "en", "split": "train", "instruction": "x"}\n{oops\n'
    )
    with pytest.raises(dataset.DataError, match=r"bad.jsonl:2: invalid JSON"):
        dataset.load(bad)
    bad.write_text(json.dumps({"example_id": "a", "lang": "en", "instruction": "x"}) + "\n")
    with pytest.raises(dataset.DataError, match="lacks field"):
        dataset.load(bad)
    bad.write_text(
        json.dumps({"example_id": "a", "lang": "en", "split": "dev", "instruction": "x"}) + "\n"
    )
    with pytest.raises(dataset.DataError, match="split must be"):
        dataset.load(bad)
    bad.write_text(
        json.dumps({"example_id": "a", "lang": "xx", "split": "train", "instruction": "x"}) + "\n"
    )
    with pytest.raises(dataset.DataError, match="unknown language code 'xx'"):
        dataset.load(bad)
    bad.write_text(
        json.dumps({"example_id": 7, "lang": "en", "split": "train", "instruction": "x"}) + "\n"
    )
    with pytest.raises(dataset.DataError, match="must be a string"):
        dataset.load(bad)
    with pytest.raises(dataset.DataError, match="no such file"):
        dataset.load(tmp_path / "missing.jsonl")
    with pytest.raises(dataset.DataError, match="unsupported file type"):
        dataset.load(FIXTURES / ".." / "conftest.py")


def test_validation_reports_missing_language_with_ids():
    frame = rows(
        ("a", "en", "train", "Hi", "Hello"),
        ("a", "fi", "train", "Moi", "Hei"),
        ("b", "en", "train", "Bye", "Goodbye"),
    )
    report = dataset.validate(frame)
    assert not report.ok
    [problem] = report.by_kind()["missing_language"]
    assert (problem.example_id, problem.lang) == ("b", "fi")
    assert "b [fi]" in report.summary()


def test_validation_reports_duplicates_empty_texts_and_leakage():
    frame = rows(
        ("a", "en", "train", "Name a fruit.", "Apple."),
        ("a", "en", "train", "Name a fruit!", "Pear."),
        ("b", "en", "train", "   ", "Text."),
        ("c", "en", "train", "Say hi.", ""),
        ("e1", "en", "eval", "NAME a   fruit.", None),  # same text as a training instruction
        ("e2", "en", "eval", "Something new.", None),  # eval rows may lack a response
    )
    kinds = dataset.validate(frame).by_kind()
    assert [p.example_id for p in kinds["duplicate"]] == ["a"]
    assert {(p.example_id, p.detail) for p in kinds["empty_text"]} == {
        ("b", "empty instruction"),
        ("c", "empty response"),
    }
    [leak] = kinds["leakage"]
    assert leak.example_id == "e1" and "example a" in leak.detail
    with pytest.raises(dataset.DataError, match="duplicate"):
        helpers.require_valid(frame)


def test_leakage_is_caught_across_languages():
    frame = rows(
        ("a", "en", "train", "Name a fruit.", "Apple."),
        ("a", "es", "train", "Nombra una fruta.", "Manzana."),
        ("e", "en", "eval", "Nombra una fruta.", None),
        ("e", "es", "eval", "Otra cosa.", None),
    )
    [leak] = dataset.validate(frame).by_kind()["leakage"]
    assert (leak.example_id, leak.lang) == ("e", "en")


def test_lima_loader_keeps_single_turn_pairs():
    out = paper_sources.lima_rows(dataset.hf_dataset(str(FIXTURES / "lima_like.jsonl")))
    assert [r["example_id"] for r in out] == ["lima-0000", "lima-0001", "lima-0003"]
    assert out[0]["instruction"].startswith("How do I tie")
    assert all(r["split"] == "train" and r["lang"] == "en" for r in out)


def test_oasst_loader_takes_first_prompt_and_best_ranked_reply():
    out = paper_sources.oasst_rows(dataset.hf_dataset(str(FIXTURES / "oasst_like.jsonl")))
    by_id = {r["example_id"]: r for r in out}
    # Spanish tree, unanswered, deleted and rejected prompts left out
    assert set(by_id) == {"oasst-t1", "oasst-t2", "oasst-t7"}
    assert by_id["oasst-t1"]["response"].startswith("It says no three")  # rank 0 wins
    assert by_id["oasst-t2"]["response"] == "Give it fresh water often."
    assert by_id["oasst-t7"]["response"].startswith("A number with")  # rejected rank 0 skipped
    _, counts = paper_sources.oasst_selection(
        dataset.hf_dataset(str(FIXTURES / "oasst_like.jsonl"))
    )
    assert counts == {
        "roots": 6,
        "dropped_deleted_rejected_or_unfinished": 2,
        "dropped_without_reply": 1,
        "kept": 3,
    }


def test_alpaca_farm_loader_drops_openassistant_items_and_joins_input():
    out = paper_sources.alpaca_farm_rows(
        dataset.hf_dataset(str(FIXTURES / "alpaca_farm_like.jsonl"))
    )
    assert len(out) == 4
    assert all("meaning of life" not in r["instruction"] for r in out)
    assert out[1]["instruction"] == "Translate the sentence.\n\nGood morning."
    assert all(r["split"] == "eval" for r in out)


def test_paper_sources_build_a_valid_english_dataset():
    frame = paper_sources.load_paper_sources(
        lima=str(FIXTURES / "lima_like.jsonl"),
        oasst=str(FIXTURES / "oasst_like.jsonl"),
        alpaca_farm=str(FIXTURES / "alpaca_farm_like.jsonl"),
    )
    report = dataset.validate(frame)
    assert report.ok, report.summary()
    assert report.examples == {"train": 6, "eval": 4}
