"""Judging through a Batch API, under a budget, through a storm of 429s: against the loopback
OpenAI-compatible server of tests/judge_server.py (files, batches, batch retrieval, file
content), with delays, a partly failed batch and an expired one."""

import os
import signal
import subprocess
import sys
import threading
import time

import pytest
from helpers import judge_pairs

from mlit.judging import judge
from mlit.judging.judge import Judge
from mlit.providers import batch_api, batch_files, pricing
from mlit.store.artifacts import Store

FAST = batch_api.BatchOptions(poll_s=0.1, max_poll_s=0.5)


def test_batch_verdicts_equal_online_ones_and_make_no_online_call(endpoint, tmp_path):
    script, url = endpoint
    j = Judge("openai/good", api_base=url)
    online = judge.judge_pairs(judge_pairs(6), j, Store(str(tmp_path / "a")), progress=False)
    assert script.calls["good"] == 12
    report = batch_api.Report()
    opts = batch_api.BatchOptions(max_requests=5, poll_s=0.1)
    batch = judge.judge_pairs(
        judge_pairs(6), j, Store(str(tmp_path / "b")), progress=False, batch=opts, report=report
    )
    assert script.calls["good"] == 12  # not one more online call
    assert script.batch_calls["good"] == 12
    assert report.submitted == 3 and len(script.batches) == 3  # split at 5 requests a batch
    assert batch["verdict"].to_list() == online["verdict"].to_list()
    assert batch["raw_1"].to_list() == online["raw_1"].to_list()
    # Stored like online verdicts: a rerun asks nothing, online or in batches.
    again = judge.judge_pairs(
        judge_pairs(6), j, Store(str(tmp_path / "b")), progress=False, batch=opts
    )
    assert again["cached_1"].all() and len(script.batches) == 3


def test_pending_calls_hold_no_prompt_each_batch_makes_its_own(endpoint, tmp_path):
    """1M calls in batches kept 1M prompts in memory (3.2 GB): a call holds its prompt's
    token estimate, and the prompts are made chunk by chunk as each batch is written."""
    script, url = endpoint
    j = Judge("openai/good", api_base=url)
    assert "prompt" not in batch_files.Call.__slots__
    made, submitted = [], []
    real_submit = batch_api.Client.submit

    def submit(self, lines, intent, window):
        submitted.append(len(made))  # prompts made when this batch went out
        return real_submit(self, lines, intent, window)

    def prompt_of(call):
        made.append(call.key)
        return j.prompt(f"Question {call.ref}?", "good answer", "other answer")

    calls = [batch_files.Call(f"k{i}", i, 30, 2) for i in range(6)]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(batch_api.Client, "submit", submit)
        got = batch_api.run(
            calls,
            prompt_of,
            j.endpoint(),
            Store(str(tmp_path)),
            pricing.Budget(None, None),
            lambda _k, r: r,
            batch_api.BatchOptions(max_requests=2, poll_s=0.05),
            progress=False,
        )
    # Each batch's prompts are made just before it goes (and the next one's first, which
    # `split` reads to know the chunk is full), never all of them first.
    assert submitted == [3, 5, 6]
    assert all(r["status"] == "ok" for r in got.values()) and len(got) == 6
    assert script.batch_calls["good"] == 6


def test_batches_split_at_the_byte_limit():
    calls = [batch_files.Call(f"k{i}", i, 200, 2) for i in range(10)]
    lines = [(c, batch_files.line(c, "x" * 600, "m")) for c in calls]
    chunks = list(batch_files.split(lines, 50_000, 2048))
    assert [len(c) for c in chunks] == [2, 2, 2, 2, 2]
    assert all(sum(len(b) for _, b in c) <= 2048 for c in chunks)


def test_failed_and_expired_requests_are_asked_again_never_cached_as_verdicts(endpoint, tmp_path):
    script, url = endpoint
    script.expire_batches = 1  # the first batch expires with half its requests unanswered
    script.fail_in_batch = {"Question 2?"}  # these fail in every batch: asked online at last
    store = Store(str(tmp_path))
    report = batch_api.Report()
    opts = batch_api.BatchOptions(poll_s=0.1, rounds=2)
    out = judge.judge_pairs(
        judge_pairs(4),
        Judge("openai/good", api_base=url),
        store,
        progress=False,
        batch=opts,
        report=report,
    )
    assert out["verdict"].to_list() == ["win", "loss", "win", "loss"]
    assert (out["parse_1"] != "error").all()
    assert report.expired == 1 and report.submitted == 3  # the first, then two rounds
    # Question 2's orders: one failed in the expired batch (it never reached the other), both
    # in each later round.
    assert report.failed_requests == 1 + 2 + 2
    assert script.calls["good"] == 2  # after the rounds, Question 2's two orders went online
    assert len(store.keys("verdicts")) == 8


def test_an_interrupted_run_picks_up_its_batch_and_submits_nothing_twice(endpoint, tmp_path):
    script, url = endpoint
    script.batch_delay_s = 3.0
    store = Store(str(tmp_path))
    j = Judge("openai/good", api_base=url)
    timer = threading.Timer(0.8, os.kill, (os.getpid(), signal.SIGINT))  # Ctrl-C mid-poll
    timer.start()
    with pytest.raises(KeyboardInterrupt):
        judge.judge_pairs(judge_pairs(3), j, store, progress=False, batch=FAST)
    assert len(script.batches) == 1 and script.batch_calls["good"] == 0
    report = batch_api.Report()
    out = judge.judge_pairs(judge_pairs(3), j, store, progress=False, batch=FAST, report=report)
    assert len(script.batches) == 1 and len(script.files) == 2  # input and output, once each
    assert (report.resumed, report.submitted) == (1, 0)
    assert script.batch_calls["good"] == 6 and script.calls["good"] == 0
    assert out["verdict"].to_list() == ["win", "loss", "win"]


def test_a_batch_created_just_before_an_interruption_is_found_by_its_metadata(
    endpoint, tmp_path, monkeypatch
):
    """Killed between the provider's answer and the store's record of the batch id: the rerun
    finds the batch by the intent id it carries, and does not submit it again."""
    script, url = endpoint
    store = Store(str(tmp_path))
    put = Store.put

    def lost(self, kind, key, value):
        if kind == batch_api.SUBMITTED:
            raise KeyboardInterrupt
        put(self, kind, key, value)

    monkeypatch.setattr(Store, "put", lost)
    j = Judge("openai/good", api_base=url)
    with pytest.raises(KeyboardInterrupt):
        judge.judge_pairs(judge_pairs(2), j, store, progress=False, batch=FAST)
    monkeypatch.setattr(Store, "put", put)
    assert len(script.batches) == 1
    report = batch_api.Report()
    out = judge.judge_pairs(judge_pairs(2), j, store, progress=False, batch=FAST, report=report)
    assert len(script.batches) == 1 and report.resumed == 1
    assert out["verdict"].to_list() == ["win", "loss"]


@pytest.mark.parametrize("mode", ["online", "batch"])
def test_the_budget_stops_judging_before_it_is_passed_and_a_rerun_goes_on(endpoint, tmp_path, mode):
    script, url = endpoint
    script.prompt_tokens = 2000  # each call costs $0.002 at $1 per million input tokens
    prices = pricing.Prices(1.0, 0.0, "given")
    store = Store(str(tmp_path))
    j = Judge("openai/good", api_base=url, concurrency=4)
    batch = batch_api.BatchOptions(max_requests=4, poll_s=0.1) if mode == "batch" else None
    discount = pricing.BATCH_DISCOUNT if batch else 1.0
    limit = 0.0105 * discount  # room for 5 calls
    budget = pricing.Budget(limit, prices, batch=batch is not None)
    if batch:  # a batch's share of the budget is held at the estimate: make it the real cost
        budget.scale = 2000 / pricing.prompt_tokens(j.prompt("Question 0?", "good answer 0", "x"))
    with pytest.raises(pricing.BudgetError, match="budget --max-cost"):
        judge.judge_pairs(judge_pairs(8), j, store, progress=False, budget=budget, batch=batch)
    assert budget.spent <= limit
    answered = script.calls["good"] + script.batch_calls["good"]
    assert 1 <= answered <= 5
    assert budget.spent == pytest.approx(answered * 0.002 * discount)
    assert len(store.keys("verdicts")) == answered  # what was paid for is kept
    rest = pricing.Budget(1.0, prices, batch=batch is not None)
    out = judge.judge_pairs(judge_pairs(8), j, store, progress=False, budget=rest, batch=batch)
    assert (out["verdict"] != "error").all()
    assert script.calls["good"] + script.batch_calls["good"] == 16  # nothing asked twice
    assert rest.spent == pytest.approx((16 - answered) * 0.002 * discount)


def test_a_storm_of_429s_loses_no_verdict(endpoint, tmp_path):
    """Half of the calls refused with Retry-After for 30 s: every call still gets its verdict,
    and the gate sends less while the storm lasts."""
    script, url = endpoint
    script.retry_after = 3
    script.limited_until = time.monotonic() + 30
    out = judge.judge_pairs(
        judge_pairs(32),
        Judge("openai/good", api_base=url, concurrency=32),
        Store(str(tmp_path)),
        progress=False,
    )
    assert script.limited_calls > 20
    assert (out["verdict"] != "error").all() and out.height == 32
    assert script.times[-1] - script.times[0] >= 25  # it outlasted the storm


def test_prices_come_from_litellm_or_the_user():
    known = pricing.prices_for("openai/gpt-4o-mini")
    assert known is not None and known.input_per_m > 0 and "litellm" in known.source
    assert pricing.prices_for("openai/not-a-model") is None
    given = pricing.prices_for("openai/not-a-model", 2.5, 10)
    assert given.cost(1_000_000, 0, batch=True) == pytest.approx(1.25)
    with pytest.raises(pricing.BudgetError, match=r"\$3.00, over the budget"):
        pricing.check_plan(3.0, 2.0, "judging")


SWEEP = """
import sys
from mlit.cli import flags
from mlit.sweep import pipeline
from mlit.generation.answer_client import SamplingParams
from mlit.planning.config import SweepConfig
cfg = SweepConfig(
    experiment="language_count", base_model=sys.argv[1], languages=("fi", "en", "cs"),
    output=sys.argv[3], store=sys.argv[4], max_steps=4, workers=1, n_boot=50,
    sampling=SamplingParams(max_tokens=12, seed=0), judge="openai/good",
    judge_api_base=sys.argv[2], judge_mode="batch", judge_batch_poll=0.5)
flags.command(cfg, pipeline.run_sweep).main([], standalone_mode=True)
"""


@pytest.mark.slow
def test_ctrl_c_on_a_sweep_with_a_batch_in_flight_then_a_rerun_submits_nothing_twice(
    endpoint, tiny_base, tmp_path
):
    """The acceptance run: a sweep in batch mode, Ctrl-C once its batch is submitted (the batch
    never finishes while it runs), then the same command again: it picks the batch up."""
    script, url = endpoint
    script.batch_delay_s = 3600
    path = tmp_path / "sweep.py"
    path.write_text(SWEEP)
    args = [sys.executable, str(path), str(tiny_base), url, str(tmp_path / "run")]
    args.append(str(tmp_path / "store"))
    first = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 900
    while not script.batches and first.poll() is None and time.monotonic() < deadline:
        time.sleep(1)
    assert len(script.batches) == 1, first.communicate()[1][-2000:]
    first.send_signal(signal.SIGINT)
    _out, err = first.communicate(timeout=120)
    assert first.returncode == 130, err[-2000:]
    script.batch_delay_s = 0  # the provider finishes the batch
    again = subprocess.run(args, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr[-2000:]
    assert (
        "[batch] resumed batch-0 (64 calls) submitted by an earlier run"
        in again.stdout + again.stderr
    )
    assert len(script.batches) == 1 and script.batch_calls["good"] == 64
    assert script.calls["good"] == 2  # the two runs' probes: no online judge call
