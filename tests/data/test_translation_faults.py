"""A translator's faults never enter the dataset (issue 50): against the loopback provider of
tests/judge_server.py answering cut off, in a close language, wrapped in a preamble, quotes or a
code fence, with its placeholders swapped, without usage, or with a day's Retry-After. After
each, a rerun with a sound translator writes exactly what a sound translator alone writes."""

import time

import polars as pl
import pytest
from click.testing import CliRunner
from conftest import rows

from mlit.cli.main import app
from mlit.data import close_languages, translation, translation_checks
from mlit.providers import llm, pricing
from mlit.store.artifacts import Store

SENTENCES = [
    "How do I keep a dog hydrated on a hot day?",
    "Write a short poem about the sea at night.",
    "Explain why the sky looks blue during the day.",
    "Give me three tips for sleeping better tonight.",
    "What is the best way to learn a new language?",
    "Describe the water cycle in simple words for children.",
    "Suggest a healthy breakfast that takes five minutes.",
    "Why do cats like to sit in small boxes?",
]
SOURCE = rows(
    *[(f"s{i}", "en", "train", text, f"Here is an answer about {text.lower()}") for i, text in
      enumerate(SENTENCES)],
    ("code", "en", "train", "How do I print in Python?",
     "Use `print` as shown in https://docs.python.org/3/ and you are done."),
)  # fmt: skip


def _translator(url, model="translate"):
    endpoint = llm.Endpoint(f"openai/{model}", url, retries=1, backoff_s=0.01, patience_s=0)
    return translation.Translator(endpoint)


def _sound(url, tmp_path, langs) -> pl.DataFrame:
    """What a sound translator alone writes, into a store of its own."""
    store = Store(str(tmp_path / "sound-store"))
    out = translation.translate(SOURCE, langs, _translator(url), store, progress=False)
    assert out.failures.height == 0
    return out.frame.sort("example_id", "lang")


def _fault_then_sound(url, tmp_path, model, langs):
    store = Store(str(tmp_path / "store"))
    faulty = translation.translate(SOURCE, langs, _translator(url, model), store, progress=False)
    # The translator's name is part of a translation's key: the sound rerun is the same model
    # answering soundly, as after a provider fixed its fault. The loopback provider switches on
    # the model's name, so the rerun names the sound one and the store is shared.
    again = translation.translate(SOURCE, langs, _translator(url), store, progress=False)
    assert again.failures.height == 0
    assert again.frame.sort("example_id", "lang").equals(_sound(url, tmp_path, langs))
    return faulty, store


def test_a_cut_off_translation_is_refused_never_written(endpoint, tmp_path):
    _, url = endpoint
    faulty, _ = _fault_then_sound(url, tmp_path, "translate-cut", ["fi"])
    assert faulty.failures.height == 18 and set(faulty.failures["check"]) == {"cut_off"}
    assert faulty.frame.filter(pl.col("lang") == "fi").height == 0
    assert "finish_reason length" in faulty.failures["error"][0]
    assert faulty.failed_ever == {"cut_off": 18}


@pytest.mark.parametrize(("model", "lang", "written"), [("translate-pt", "es", "pt"),
                                                         ("translate-et", "fi", "et")])  # fmt: skip
def test_a_close_language_is_refused_as_the_one_asked_for(endpoint, tmp_path, model, lang, written):
    _, url = endpoint
    faulty, _ = _fault_then_sound(url, tmp_path, model, [lang])
    long_texts = 16  # the 8 sentences and their answers: the short code example is not identified
    refused = faulty.failures.filter(pl.col("check") == "language")
    assert refused.height >= long_texts, faulty.failures
    assert all(f"written in {written}" in e for e in refused["error"])


def test_the_sample_datas_sound_translations_are_never_refused_as_a_close_language():
    """False refusals of the close-language check on the bundled sample (its translations are
    sound): none (measured: 0 of 1,847 texts of 20 letters or more in 17 languages)."""
    checked, refused = close_languages.sample_refusals(translation_checks.MIN_LETTERS)
    assert refused == []
    assert checked > 1800


def test_preambles_quotes_and_fences_are_taken_off_the_content_kept(endpoint, tmp_path):
    _, url = endpoint
    faulty, _ = _fault_then_sound(url, tmp_path, "translate-preamble", ["es"])
    assert faulty.failures.height == 0  # every reply's content was intact: taken off, written
    assert faulty.frame.sort("example_id", "lang").equals(_sound(url, tmp_path, ["es"]))
    assert set(faulty.unwrapped) == {"preamble", "quotes", "fence"}
    for text in faulty.frame.filter(pl.col("lang") == "es")["instruction"]:
        assert not text.startswith(("Sure", "Aquí", "“", "```")), text


def test_unwrap_takes_off_only_what_the_source_does_not_have():
    unwrap = translation_checks.unwrap
    assert unwrap("Hello there.", "Sure! Here's the translation:\n\n“Hola.”") == (
        "Hola.",
        ["preamble", "quotes"],
    )
    assert unwrap("Steps\n1. one", "Pasos:\n1. uno") == ("Pasos:\n1. uno", [])  # its own line
    assert unwrap('"Quoted," he said.', '"Citado", dijo.') == ('"Citado", dijo.', [])
    assert unwrap("A list:\n- a", "Aquí está:\nUna lista:\n- a") == (
        "Una lista:\n- a",
        ["preamble"],
    )


def test_swapped_placeholders_are_refused(endpoint, tmp_path):
    _, url = endpoint
    faulty, _ = _fault_then_sound(url, tmp_path, "translate-swap", ["fi"])
    assert faulty.failures.to_dicts() == [
        {
            "example_id": "code",
            "lang": "fi",
            "field": "response",
            "check": "placeholders",
            "error": "placeholders: placeholders changed in translation: expected ⟦0⟧⟦1⟧ in "
            "order, got ⟦1⟧⟦0⟧",
        }
    ]


def test_translations_without_usage_are_charged_and_the_budget_holds(endpoint, tmp_path):
    script, url = endpoint
    script.no_usage = True
    budget = pricing.Budget(1.0, pricing.Prices(1000.0, 1000.0, "given"))  # ~8 calls
    out = translation.translate(
        SOURCE, ["fi"], _translator(url), Store(str(tmp_path)), progress=False, budget=budget
    )
    assert out.stopped and out.budget_stop and 0 < out.cost_usd <= 1.0
    assert out.usage_estimated == budget.unmetered > 0


def test_a_days_retry_after_stops_translation_at_once_rc_1(endpoint, tmp_path):
    script, url = endpoint
    source = tmp_path / "en.jsonl"
    SOURCE.write_ndjson(source)
    script.quota_until = time.time() + 86400
    args = ["translate", "--source", str(source), "--languages", "fi", "--translator",
            "openai/translate", "--api-base", url, "--out", str(tmp_path / "out.jsonl"),
            "--store", str(tmp_path / "store")]  # fmt: skip
    start = time.monotonic()
    result = CliRunner().invoke(app, args)
    assert time.monotonic() - start < 60
    assert result.exit_code == 1, result.output
    assert "asks to wait 24 h" in result.output and "rerun after" in result.output
    assert script.refused <= 8  # the calls in flight, once: nothing more was sent
    script.quota_until = 0
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0, again.output


def test_a_cancelled_translation_batch_stops_with_what_it_answered_written(endpoint, tmp_path):
    from mlit.providers import batch_api

    script, url = endpoint
    script.cancel_batches = 1  # half of the batch answered, then cancelled by the user
    store = Store(str(tmp_path))
    opts = batch_api.BatchOptions(poll_s=0.1, max_poll_s=0.5)
    t = _translator(url)
    out = translation.translate(SOURCE, ["fi"], t, store, progress=False, batch=opts)
    assert out.stopped and "cancelled at the provider" in out.stopped and not out.budget_stop
    assert sum(script.calls.values()) == 0 and len(script.batches) == 1  # nothing online
    assert len(store.keys("translations")) == 9  # the half it answered, checked and written
    assert set(out.failures["check"]) == {"provider"}
    again = translation.translate(SOURCE, ["fi"], t, store, progress=False, batch=opts)
    assert again.failures.height == 0 and len(script.batches) == 2  # the rest, submitted anew
