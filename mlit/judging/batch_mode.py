"""`--judge-mode batch`: the judge calls of a phase through the provider's Batch API.

The calls not in the store are handed to `mlit.providers.batch_api` (half price, resumable by batch id, under
the budget); each answer is parsed by the judge's own parser and stored as it is read, exactly as
an online verdict is. What a batch leaves without a verdict (a failed or expired request after
its rounds, an unparseable reply) goes back to the online path, which asks again; after a batch
cancelled at the provider nothing is asked (`mlit.providers.llm.ProviderStop`).
"""

from __future__ import annotations

from mlit.providers import batch_api, batch_files, llm


def verdicts(
    pairs, keys, judge, stored, writer, store, budget, batch, report, progress, verdict_of
):
    """Every order not stored, asked through the Batch API: key -> verdict record for those
    answered with a verdict (stored as they are read); the rest is left to the online path.
    ``verdict_of``: `mlit.judging.judge.verdict_of`, the judge's parser (passed in: judge imports this)."""
    calls = {}
    for p, ks in zip(pairs, keys, strict=True):
        if ks is None:
            continue
        orders = ((p.candidate_answer, p.baseline_answer), (p.baseline_answer, p.candidate_answer))
        for key, (a, b) in zip(ks, orders, strict=True):
            if key not in stored and key not in calls:
                prompt = judge.prompt(p.instruction, a, b)
                calls[key] = batch_files.Call(key, prompt, judge.max_tokens, judge.top_logprobs)
    if not calls:
        return {}

    def accept(key: str, record: dict) -> dict:
        verdict = verdict_of(judge, record)  # its cost_usd: counted by batch_api.run
        if verdict["status"] == "ok" and verdict["choice"] is not None:
            writer.put(key, verdict)  # only verdicts are results
        return verdict

    report = report if report is not None else batch_api.Report()
    got = batch_api.run(
        calls.values(), judge.endpoint(), store, budget, accept, batch, progress, report
    )
    if report.stopped:  # a cancelled batch: its verdicts are stored, nothing more is asked
        raise llm.ProviderStop(f"judging stopped: {report.stopped}")
    # Unparseable replies and unanswered calls go online, where they are asked again.
    return {k: v for k, v in got.items() if v["status"] == "ok" and v.get("choice") is not None}
