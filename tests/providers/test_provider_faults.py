"""A paid API's faults never enter the data (issue 50): the loopback provider of
tests/judge_server.py misbehaves the way real ones do: a batch output answering a request twice
with different content or answering requests never asked, a batch the user cancelled or one that
failed, replies without usage, a rate limit counted over a rolling minute, a Retry-After as an
HTTP date, and one of a day."""

import asyncio
import time

import pytest
from helpers import judge_pairs

from mlit.judging import judge
from mlit.judging.judge import Judge
from mlit.providers import batch_api, llm, pricing, rate_limits, retries
from mlit.store.artifacts import Store

FAST = batch_api.BatchOptions(poll_s=0.1, max_poll_s=0.5)


def test_a_request_answered_twice_differently_is_asked_again_never_a_verdict(endpoint, tmp_path):
    script, url = endpoint
    j = Judge("openai/good", api_base=url)
    online = judge.judge_pairs(judge_pairs(16), j, Store(str(tmp_path / "a")), progress=False)
    script.conflicting_duplicates = True  # the wrong answer first, then the right one
    script.unknown_ids = 3  # and answers to requests never asked
    report = batch_api.Report()
    store = Store(str(tmp_path / "b"))
    out = judge.judge_pairs(judge_pairs(16), j, store, progress=False, batch=FAST, report=report)
    # Every round's batch answers twice differently: after the rounds, the calls go online.
    assert out["verdict"].to_list() == online["verdict"].to_list()
    assert report.conflicting == 32 * (FAST.rounds + 1) and report.unknown_ids == 3 * 4
    assert report.failed_requests == report.conflicting
    stored = store.records("verdicts")
    assert len(stored) == 32 and all(v["raw"] in ("1", "2") for v in stored.values())
    assert report.as_dict()["batch_conflicting_answers"] == 128


def test_identical_duplicates_are_one_answer():
    from mlit.providers import batch_files

    line = {"status": "ok", "text": "1", "finish_reason": "stop", "top_logprobs": None}
    read = batch_files.answers([("a", line), ("a", dict(line)), ("x", line)], {"a", "b"}, "b-1")
    assert read.answers == {"a": line} and read.duplicates == 1 and read.unknown == 1
    assert read.conflicting == 0


def test_a_cancelled_batch_stops_judging_and_is_not_resubmitted_until_a_rerun(
    endpoint, tmp_path, capsys
):
    script, url = endpoint
    script.cancel_batches = 1  # the user cancels the first batch: half of it was answered
    j = Judge("openai/good", api_base=url)
    store = Store(str(tmp_path))
    report = batch_api.Report()
    with pytest.raises(llm.ProviderStop, match="cancelled at the provider"):
        judge.judge_pairs(judge_pairs(8), j, store, progress=False, batch=FAST, report=report)
    assert len(script.batches) == 1 and sum(script.calls.values()) == 0  # no resubmission, online
    assert report.cancelled == 1 and report.as_dict()["batches_cancelled"] == 1
    assert len(store.keys("verdicts")) == 8  # what it answered is kept
    assert "was cancelled at the provider" in capsys.readouterr().out
    out = judge.judge_pairs(judge_pairs(8), j, store, progress=False, batch=FAST)
    assert (out["verdict"] != "error").all() and len(script.batches) == 2  # the rest, once
    assert script.batch_calls["good"] == 16


def test_a_failed_batch_is_counted_and_its_requests_asked_again(endpoint, tmp_path):
    script, url = endpoint
    script.fail_batches = 1
    report = batch_api.Report()
    out = judge.judge_pairs(
        judge_pairs(4),
        Judge("openai/good", api_base=url),
        Store(str(tmp_path)),
        progress=False,
        batch=FAST,
        report=report,
    )
    assert (out["verdict"] != "error").all()
    assert report.failed == 1 and report.failed_requests == 8 and len(script.batches) == 2


@pytest.mark.parametrize("mode", ["online", "batch"])
def test_replies_without_usage_are_charged_never_free(endpoint, tmp_path, mode):
    """The provider leaves usage out: each reply is charged at mlit's upper estimate, so the
    budget holds what the provider bills (here its words, at $1 per million... tokens)."""
    script, url = endpoint
    script.no_usage = True
    prices = pricing.Prices(1000.0, 1000.0, "given")  # $0.001 a token: a call costs cents
    batch = FAST if mode == "batch" else None
    budget = pricing.Budget(0.5, prices, batch=batch is not None)
    j = Judge("openai/good", api_base=url, concurrency=2)
    with pytest.raises(pricing.BudgetError, match="budget --max-cost"):
        judge.judge_pairs(
            judge_pairs(40), j, Store(str(tmp_path)), progress=False, budget=budget, batch=batch
        )
    answered = script.calls["good"] + script.batch_calls["good"]
    assert 0 < answered < 80 and budget.unmetered == answered
    prompt = j.prompt("Question 0?", "good answer 0", "other answer 0")
    billed = prices.cost(len(prompt.split()), 1, batch is not None)  # what the provider bills
    assert budget.spent >= answered * billed and budget.spent <= 0.5


def test_a_rate_limit_holds_over_every_rolling_window_from_the_first_call():
    """10 calls per window: a full bucket at the start would let 10 through, then the refill."""

    async def run() -> list[float]:
        limiter = rate_limits.Limiter(rpm=10, window_s=2.0)
        times = []
        for _ in range(25):
            async with limiter.call(1):
                times.append(time.monotonic())
        return times

    times = asyncio.run(run())
    assert max(sum(t <= s < t + 2.0 for s in times) for t in times) <= 10
    assert times[-1] - times[0] >= 4.0  # 25 calls at 10 per 2 s: two full windows waited


def test_a_token_limit_holds_over_the_window_and_a_large_call_goes_alone():
    async def run() -> float:
        limiter = rate_limits.Limiter(tpm=100, window_s=1.0)
        async with limiter.call(60):
            start = time.monotonic()
        async with limiter.call(60):  # 120 > 100: waits for the first to leave the window
            pass
        async with limiter.call(500):  # larger than the allowance: waits for an empty window
            return time.monotonic() - start

    assert 1.8 < asyncio.run(run()) < 3.0


@pytest.mark.slow
def test_judge_rpm_30_never_passes_30_calls_in_any_60_s(endpoint, tmp_path):
    script, url = endpoint
    j = Judge("openai/good", api_base=url, rpm=30)
    judge.judge_pairs(judge_pairs(18), j, Store(str(tmp_path)), progress=False)
    times = script.times
    assert len(times) == 36
    assert max(sum(t <= s < t + 60.0 for s in times) for t in times) <= 30


def test_retry_after_as_an_http_date_is_honoured(endpoint, tmp_path):
    script, url = endpoint
    script.quota_for, script.quota_header = 4.0, "date"  # from the first call on
    out = judge.judge_pairs(
        judge_pairs(4),
        Judge("openai/good", api_base=url, concurrency=4, backoff_s=0.01),
        Store(str(tmp_path)),
        progress=False,
    )
    assert (out["verdict"] != "error").all()
    assert 1 <= script.refused <= 4  # the calls in flight, once each: then they wait for it
    assert retries.parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412480 - 60) == 60


def test_a_retry_after_of_a_day_stops_judging_at_once_and_a_rerun_goes_on(endpoint, tmp_path):
    script, url = endpoint
    store = Store(str(tmp_path))
    j = Judge("openai/good", api_base=url, concurrency=2)
    judge.judge_pairs(judge_pairs(2), j, store, progress=False)  # 4 verdicts stored
    script.quota_until = time.time() + 86400  # a daily quota spent
    start = time.monotonic()
    with pytest.raises(llm.ProviderStop) as stop:
        judge.judge_pairs(judge_pairs(8), j, store, progress=False)
    assert time.monotonic() - start < 60
    assert "asks to wait 24 h" in str(stop.value) and "rerun after" in str(stop.value)
    assert script.refused <= 2 and len(store.keys("verdicts")) == 4
    script.quota_until = 0
    out = judge.judge_pairs(judge_pairs(8), j, store, progress=False)
    assert (out["verdict"] != "error").all() and len(store.keys("verdicts")) == 16
