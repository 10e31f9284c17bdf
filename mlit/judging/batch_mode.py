"""`--judge-mode batch`: the judge calls of a phase through the provider's Batch API.

The calls not in the store are handed to `mlit.providers.batch_api` (half price, resumable by batch id, under
the budget); each answer is parsed by the judge's own parser and stored as it is read, exactly as
an online verdict is. What a batch leaves without a verdict (a failed or expired request after
its rounds, an unparseable reply) goes back to the online path, which asks again; after a batch
cancelled at the provider nothing is asked (`mlit.providers.llm.ProviderStop`).
"""

from __future__ import annotations

from mlit.judging import pairs as pairs_rule
from mlit.providers import batch_api, batch_files, llm, pricing


def verdicts(
    pairs, keys, judge, stored, writer, store, budget, batch, report, progress, verdict_of, seen
):
    """Every order not stored, asked through the Batch API: key -> verdict record for those
    answered with a verdict (stored as they are read); the rest is left to the online path.
    ``verdict_of``: `mlit.judging.judge.verdict_of`, the judge's parser (passed in: judge imports this)."""
    calls = {}
    for i, (p, ks) in enumerate(zip(pairs, keys, strict=True)):
        if ks is None:
            continue
        for order, key in enumerate(ks):
            if key not in stored and key not in calls:
                sent = pricing.prompt_tokens(pairs_rule.prompt(judge, p, order))
                ref = 2 * i + order
                calls[key] = batch_files.Call(key, ref, sent, judge.max_tokens, judge.top_logprobs)
    if not calls:
        return {}

    def accept(key: str, record: dict) -> dict:
        verdict = verdict_of(judge, record)  # its cost_usd: counted by batch_api.run
        if verdict["status"] == "ok" and verdict["choice"] is not None:
            writer.put(key, verdict)  # only verdicts are results
        return verdict

    report = report if report is not None else batch_api.Report()
    got = batch_api.run(
        calls.values(),
        lambda c: _prompt(judge, pairs[c.ref // 2], c.ref % 2, seen),
        judge.endpoint(),
        store,
        budget,
        accept,
        batch,
        progress,
        report,
        seen.requests,
    )
    if report.stopped:  # a cancelled batch: its verdicts are stored, nothing more is asked
        raise llm.ProviderStop(f"judging stopped: {report.stopped}")
    # Unparseable replies and unanswered calls go online, where they are asked again.
    return {k: v for k, v in got.items() if v["status"] == "ok" and v.get("choice") is not None}


def _prompt(judge, p, order: int, seen) -> str:
    """A call's prompt, made as its batch is written, and seen as sent (`pairs.Seen`)."""
    text = pairs_rule.prompt(judge, p, order)
    seen.prompt(p, order, text)
    return text
