"""The direct path to OpenAI-compatible endpoints (issue 49): the same verdicts, keys, costs and
translations as litellm's path on the same provider, and the same handling of its failures."""

import asyncio
import time

import pytest
from helpers import judge_pairs

from mlit.judging import judge
from mlit.judging.judge import Judge
from mlit.providers import llm, openai_http, pricing
from mlit.store.artifacts import Store

COLUMNS = ("verdict", "raw_1", "raw_2", "parse_1", "parse_2", "error")


def _judged(url, tmp_path, name, direct, monkeypatch):
    monkeypatch.setattr(llm, "DIRECT", direct)
    store = Store(str(tmp_path / name))
    budget = pricing.Budget(None, pricing.Prices(2.5, 10.0, "given"))
    j = Judge("openai/chatty", api_base=url, concurrency=4)  # its digit from log-probabilities
    frame = judge.judge_pairs(judge_pairs(12), j, store, progress=False, budget=budget)
    return frame, store.records("verdicts"), budget.spent


def test_the_direct_path_gives_litellms_verdicts_keys_and_costs(endpoint, tmp_path, monkeypatch):
    script, url = endpoint
    via_litellm, stored_l, spent_l = _judged(url, tmp_path, "l", False, monkeypatch)
    direct, stored_d, spent_d = _judged(url, tmp_path, "d", True, monkeypatch)
    assert script.calls["chatty"] == 48
    assert direct.select(COLUMNS).equals(via_litellm.select(COLUMNS))
    assert stored_d.keys() == stored_l.keys() and spent_d == pytest.approx(spent_l) and spent_d > 0
    for key, verdict in stored_d.items():
        for field in ("raw", "choice", "parse", "prompt_tokens", "completion_tokens", "cost_usd"):
            assert verdict[field] == stored_l[key][field], (field, verdict, stored_l[key])


def _ask(url, model, **kw):
    async def run():
        async with openai_http.Session() as client:
            e = llm.Endpoint(f"openai/{model}", url, backoff_s=0.01, patience_s=0, **kw)
            return await llm.complete(e, "Answer 1: good Answer 2: bad", 2, client=client)

    return asyncio.run(run())


def test_the_direct_path_honours_retry_after_and_stops_on_fatal_answers(endpoint):
    script, url = endpoint
    script.fail_first["good"], script.retry_after = 2, 1
    assert _ask(url, "good", retries=5)["text"] == "1"
    gaps = [b - a for a, b in zip(script.times, script.times[1:], strict=False)]
    assert len(gaps) == 2 and min(gaps) >= 0.9
    refused = _ask(url, "bad-key")
    assert refused["fatal_status"] == 401 and "rejected the API key" in refused["error"]
    start = time.monotonic()
    slow = _ask(url, "slow", timeout_s=0.3, retries=0)
    assert "timed out at" in slow["error"] and time.monotonic() - start < 5
    script.quota_until = time.time() + 86400
    assert _ask(url, "good")["wait_s"] > 86000  # a day's quota: the phase stops


def test_an_endpoint_that_is_down_is_named(tmp_path):
    down = _ask("http://127.0.0.1:9/v1", "good", retries=0)
    assert down["status"] == "error" and "unreachable at http://127.0.0.1:9/v1" in down["error"]


def test_only_openai_compatible_endpoints_go_direct():
    assert openai_http.base_of("openai/gpt-4o", None) == "https://api.openai.com/v1"
    assert openai_http.base_of("openai/judge", "http://h:8000/v1/") == "http://h:8000/v1"
    assert openai_http.base_of("hosted_vllm/m", "http://h/v1") == "http://h/v1"
    assert openai_http.base_of("anthropic/claude-3-5-sonnet", None) is None
    assert openai_http.base_of("gpt-4o", None) is None  # litellm decides what a bare name is
