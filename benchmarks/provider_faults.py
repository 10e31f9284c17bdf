"""A paid API's faults, measured: what reaches the data, the budget and the clock (issue 50).

    python benchmarks/provider_faults.py       # writes benchmarks/results/provider_faults.json
    python benchmarks/provider_faults.py --quick   # without the 60-s rate-limit window

Each case runs mlit's own judge or translator against the loopback provider of
tests/judge_server.py made to misbehave as real ones do, and records what came out: verdicts
that differ from an online run, dollars counted against dollars billed, calls in any 60 s
window, refusals met, seconds until a phase stopped, translations refused or unwrapped.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import time
from pathlib import Path

import host

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
OUT = Path(__file__).parent / "results" / "provider_faults.json"


def _server():
    from judge_server import Script, start

    script = Script()
    server, url = start(script)
    return script, server, url


def _store():
    from mlit.store.artifacts import Store

    return Store(tempfile.mkdtemp(prefix="mlit-faults-"))


def conflicting_duplicates() -> dict:
    from helpers import judge_pairs

    from mlit.judging import judge
    from mlit.providers import batch_api

    script, server, url = _server()
    j = judge.Judge("openai/good", api_base=url)
    online = judge.judge_pairs(judge_pairs(16), j, _store(), progress=False)
    script.conflicting_duplicates, script.unknown_ids = True, 3
    report = batch_api.Report()
    opts = batch_api.BatchOptions(poll_s=0.1, max_poll_s=0.5)
    out = judge.judge_pairs(judge_pairs(16), j, _store(), progress=False, batch=opts, report=report)
    server.shutdown()
    differ = sum(a != b for a, b in zip(out["verdict"], online["verdict"], strict=True))
    return {
        "pairs": 16,
        "calls": 32,
        "verdicts_differing_from_online": differ,
        "conflicting_answers_refused": report.conflicting,
        "unknown_ids_ignored": report.unknown_ids,
        "asked_online_at_last": script.calls["good"] - 32,
    }


def budget(with_usage: bool, limit: float = 0.5) -> dict:
    from helpers import judge_pairs

    from mlit.judging import judge
    from mlit.providers import pricing

    script, server, url = _server()
    script.no_usage = not with_usage
    prices = pricing.Prices(1000.0, 1000.0, "given")
    b = pricing.Budget(limit, prices)
    j = judge.Judge("openai/good", api_base=url, concurrency=2)
    with contextlib.suppress(pricing.BudgetError):  # it stops before passing the budget
        judge.judge_pairs(judge_pairs(40), j, _store(), progress=False, budget=b)
    server.shutdown()
    answered = script.calls["good"]
    prompt = j.prompt("Question 0?", "good answer 0", "other answer 0")
    billed = answered * prices.cost(len(prompt.split()), 1, False)  # the provider's own count
    return {
        "usage_in_replies": with_usage,
        "max_cost": limit,
        "calls_answered": answered,
        "mlit_counted_usd": round(b.spent, 4),
        "provider_billed_usd": round(billed, 4),
        "replies_without_usage": b.unmetered,
        "held": b.spent <= limit and billed <= limit,
    }


def rate_limit(rpm: int = 30, calls: int = 40) -> dict:
    from helpers import judge_pairs

    from mlit.judging import judge

    script, server, url = _server()
    start = time.monotonic()
    j = judge.Judge("openai/good", api_base=url, rpm=rpm)
    judge.judge_pairs(judge_pairs(calls // 2), j, _store(), progress=False)
    took = time.monotonic() - start
    server.shutdown()
    times = script.times
    most = max(sum(t <= s < t + 60.0 for s in times) for t in times)
    return {"rpm": rpm, "calls": len(times), "most_in_any_60_s": most, "seconds": round(took, 1)}


def retry_after(header: str, seconds: float) -> dict:
    from helpers import judge_pairs

    from mlit.judging import judge
    from mlit.providers import llm

    script, server, url = _server()
    if seconds >= 86400:
        script.day_quota_after = 8
    else:
        script.quota_for = seconds
    script.quota_header = header
    j = judge.Judge("openai/good", api_base=url, concurrency=4, backoff_s=0.01)
    start, outcome = time.monotonic(), "ok"
    try:
        judge.judge_pairs(judge_pairs(8), j, _store(), progress=False)
    except llm.ProviderStop as stop:
        outcome = str(stop)
    server.shutdown()
    return {
        "retry_after": f"{seconds:g} s as {'an HTTP date' if header == 'date' else 'seconds'}",
        "refusals": script.refused,
        "calls": sum(script.calls.values()),
        "seconds": round(time.monotonic() - start, 1),
        "outcome": outcome[:160],
    }


def translation_faults() -> dict:
    from mlit.data import translation
    from mlit.providers import llm

    sys.path.insert(0, str(ROOT / "tests" / "data"))
    from test_translation_faults import SOURCE

    _, server, url = _server()
    out = {}
    for model, lang in [
        ("translate-cut", "fi"),
        ("translate-pt", "es"),
        ("translate-et", "fi"),
        ("translate-preamble", "es"),
        ("translate-swap", "fi"),
    ]:
        t = translation.Translator(llm.Endpoint(f"openai/{model}", url, retries=1, patience_s=0))
        got = translation.translate(SOURCE, [lang], t, _store(), progress=False)
        out[f"{model} into {lang}"] = {
            "texts": got.calls,
            "refused": dict(got.failures.group_by("check").len().rows()),
            "written": got.texts_written,
            "unwrapped": got.unwrapped,
        }
    server.shutdown()
    return out


def sample_false_refusals() -> dict:
    from mlit.data import close_languages, translation_checks

    checked, refused = close_languages.sample_refusals(translation_checks.MIN_LETTERS)
    return {"texts": checked, "refused_as_a_close_language": len(refused)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="skip the 60-s rate-limit window")
    args = parser.parse_args()
    results = {
        "machine": host.describe(),
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "conflicting_duplicates": conflicting_duplicates(),
        "budget_with_usage": budget(True),
        "budget_without_usage": budget(False),
        "retry_after_http_date": retry_after("date", 4.0),
        "retry_after_a_day": retry_after("seconds", 86400),
        "translation": translation_faults(),
        "sample_false_refusals": sample_false_refusals(),
    }
    if not args.quick:
        results["rate_limit"] = rate_limit()
    print(json.dumps(results, indent=1, ensure_ascii=False))
    OUT.write_text(json.dumps(results, indent=1, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
