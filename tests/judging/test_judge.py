"""Judging through litellm against real HTTP endpoints on loopback."""

import socket

import pytest
from helpers import judge_pairs

from mlit.judging import judge, judgments, parsers
from mlit.judging.judge import Judge, Pair
from mlit.store.artifacts import Store


def test_verdicts_both_orders_cached_and_zero_calls_on_rerun(endpoint, tmp_path):
    script, url = endpoint
    store = Store(str(tmp_path / "store"))
    j = Judge("openai/good", api_base=url, retries=0, patience_s=0)
    saved = []
    first = judge.judge_pairs(judge_pairs(), j, store, saved.append, progress=False)
    assert script.calls["good"] == 6  # 3 pairs x 2 orders
    assert first["verdict"].to_list() == ["win", "loss", "win"]
    assert first["parse_1"].to_list() == ["text"] * 3
    assert saved[0].equals(first)
    again = judge.judge_pairs(judge_pairs(), j, store, progress=False)
    assert script.calls["good"] == 6  # zero new calls, counted at the server
    assert again["cached_1"].all() and again["verdict"].to_list() == first["verdict"].to_list()
    # The template is part of the key: a new template means new calls.
    custom = tmp_path / "tpl.txt"
    custom.write_text("Q: {instruction}\nAnswer 1: {answer_1}\nAnswer 2: {answer_2}\nDigit:")
    judge.judge_pairs(
        judge_pairs(1),
        Judge("openai/good", api_base=url, template=str(custom)),
        store,
        progress=False,
    )
    assert script.calls["good"] == 8


def test_self_comparison_costs_no_call(endpoint, tmp_path):
    script, url = endpoint
    p = Pair("mono-en", "mono-en", "en", "e0", "Q?", "same", "same", "k", "k")
    out = judge.judge_pairs(
        [p], Judge("openai/good", api_base=url), Store(str(tmp_path)), progress=False
    )
    assert out["verdict"].to_list() == ["tie"] and out["self_comparison"].to_list() == [True]
    assert sum(script.calls.values()) == 0


def test_rate_limited_calls_are_retried(endpoint, tmp_path):
    script, url = endpoint
    script.fail_first["good"] = 2
    out = judge.judge_pairs(
        judge_pairs(1),
        Judge("openai/good", api_base=url, concurrency=1, backoff_s=0.01),
        Store(str(tmp_path)),
        progress=False,
    )
    assert out["verdict"].to_list() == ["win"]
    assert script.calls["good"] == 4  # two 429s, then both orders


def test_unparseable_and_logprob_fallback(endpoint, tmp_path):
    _script, url = endpoint
    store = Store(str(tmp_path))
    chatty = judge.judge_pairs(
        judge_pairs(1), Judge("openai/chatty", api_base=url), store, progress=False
    )
    assert chatty["verdict"].to_list() == ["win"]
    assert chatty["parse_1"].to_list() == ["logprobs"] and chatty["parse_2"].to_list() == [
        "logprobs"
    ]
    mute = judge.judge_pairs(
        judge_pairs(1), Judge("openai/mute", api_base=url), store, progress=False
    )
    row = mute.row(0, named=True)
    assert row["verdict"] == "error" and row["parse_1"] == "unparseable"
    assert row["raw_1"] == "Hmm, hard to say." and "unparseable" in row["error"]


def test_a_down_endpoint_ends_with_a_clear_error_and_caches_nothing(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens here
    store = Store(str(tmp_path))
    j = Judge(
        "openai/good",
        api_base=f"http://127.0.0.1:{port}/v1",
        retries=2,
        backoff_s=0.01,
        patience_s=0,
        timeout_s=5,
    )
    out = judge.judge_pairs(judge_pairs(2), j, store, progress=False)
    assert out["verdict"].to_list() == ["error", "error"]
    assert f"127.0.0.1:{port}" in out["error"][0] and "unreachable" in out["error"][0]
    assert store.keys("verdicts") == []
    assert "2 of 2 pairs have no verdict" in judgments.error_summary(out)


def test_wrong_key_and_bad_templates_are_clear(endpoint, tmp_path, monkeypatch):
    script, url = endpoint
    saved = []
    with pytest.raises(judge.JudgeError, match=r"openai/bad-key refused a call.*rejected the API"):
        judge.judge_pairs(
            judge_pairs(1),
            Judge("openai/bad-key", api_base=url, retries=3),
            Store(str(tmp_path)),
            save=saved.append,
            progress=False,
        )
    assert "rejected the API key" in saved[0]["error"][0]  # the table is kept
    assert script.calls["bad-key"] == 2  # one per order: authentication errors are not retried
    bad = tmp_path / "t.txt"
    bad.write_text("no placeholders")
    with pytest.raises(judge.JudgeError, match=r"lacks \{instruction\}"):
        Judge("openai/good", template=str(bad))
    with pytest.raises(judge.JudgeError, match="is not set"):
        monkeypatch.delenv("MLIT_NO_SUCH_KEY", raising=False)
        Judge("openai/good", api_key_env="MLIT_NO_SUCH_KEY").api_key()


def test_parse_digit_is_strict():
    assert parsers.parse_digit("1", None) == (1, "text")
    assert parsers.parse_digit(" 2.\n", None) == (2, "text")
    assert parsers.parse_digit("12", None) == (None, "unparseable")
    assert parsers.parse_digit("Answer 1", [("Answer", -0.1), (" 2", -1.0), ("1", -2.0)]) == (
        2,
        "logprobs",
    )
