"""Machine translation of an English dataset into any language, through litellm, cached and checked.

    mlit translate --source data/en.jsonl --languages ar,cs,fi --translator openai/gpt-4o-mini \\
        --api-key-env OPENAI_API_KEY --out data/parallel.jsonl

Instruction and response are translated separately. What is never translated: fenced code blocks
(```...```), inline code (`...`) and URLs. They are cut out before the call, replaced by numbered
placeholders such as ``⟦0⟧``, and put back afterwards; a reply that lost or duplicated a
placeholder is a failure, not a translation. Markdown structure (headings, lists, emphasis) stays in
the text and the prompt asks to keep it.

Every translation is stored under (translator, endpoint, prompt hash, source text, target language),
so a rerun makes no call for what is done and an interrupted run continues. Failures are reported
with their ids, never written as translations, and retried on the next run.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import polars as pl

from mlit.data import dataset, translation_cache, translation_checks
from mlit.method import languages
from mlit.providers import llm, openai_http, pricing, rate_limits
from mlit.store.artifacts import Store

PROMPT = (
    "Translate the following text from English into {language}. Keep the markdown formatting, "
    "line breaks and every placeholder such as ⟦0⟧ exactly as they are. Reply with the "
    "translation only.\n\n<<<\n{text}\n>>>"
)
_PROTECTED = re.compile(r"```.*?```|`[^`\n]+`|https?://[^\s)>\]]+", re.S)
PLACEHOLDER = re.compile(r"⟦(\d+)⟧")


@dataclass(frozen=True)
class Translator:
    endpoint: llm.Endpoint
    concurrency: int = 8
    max_tokens: int = 2048
    limiter: rate_limits.Limiter | None = None  # --rpm / --tpm

    def identity(self) -> dict:
        prompt_sha = hashlib.sha256(PROMPT.encode()).hexdigest()[:16]
        return {
            "model": self.endpoint.model,
            "api_base": self.endpoint.api_base or "",
            "prompt": prompt_sha,
        }


def protect(text: str) -> tuple[str, list[str]]:
    """Replace code and URLs by ⟦n⟧ placeholders; returns the text and the protected spans."""
    spans: list[str] = []

    def keep(match: re.Match) -> str:
        spans.append(match.group(0))
        return f"⟦{len(spans) - 1}⟧"

    return _PROTECTED.sub(keep, text), spans


def restore(text: str, spans: list[str]) -> str:
    """The translation with its code and URLs put back. Each placeholder must come back once and
    in the source's order: a URL and a code span that traded places would put the code where
    the link was."""
    found = [int(n) for n in PLACEHOLDER.findall(text)]
    if found != list(range(len(spans))):
        expected = "".join(f"⟦{i}⟧" for i in range(len(spans))) or "none"
        got = "".join(f"⟦{i}⟧" for i in found) or "none"
        raise ValueError(
            f"placeholders changed in translation: expected {expected} in order, got {got}"
        )
    return PLACEHOLDER.sub(lambda m: spans[int(m.group(1))], text)


def translation_key(t: Translator, text: str, lang: str) -> str:
    # The language as the prompt names it (with its script, for Serbian) is part of the request:
    # an answer to the plain name is not reused for the one that names the script.
    named = languages.prompt_name(lang)
    target = lang if named == languages.get(lang).name else f"{lang}:{named}"
    return translation_cache.key(t.identity(), text, target)


def prompt_for(text: str, lang: str) -> str:
    """The request for one (masked) text: into the language as `languages.prompt_name` names it."""
    return PROMPT.format(language=languages.prompt_name(lang), text=text)


def _request(t: Translator, text: str, lang: str) -> tuple[str, str, list[str], str]:
    """(key, masked text, protected spans, prompt) of one text into one language."""
    masked, spans = protect(text)
    return translation_key(t, text, lang), masked, spans, prompt_for(masked, lang)


def reply_tokens(t: Translator, masked: str) -> int:
    """The reply a call is expected to take, for the budget: twice the text's estimated tokens
    (most languages take more tokens than English), at most ``max_tokens``."""
    return min(t.max_tokens, 2 * pricing.prompt_tokens(masked))


async def _translate_one(t: Translator, text: str, lang: str, run: _Run) -> dict:
    key, masked, spans, prompt = _request(t, text, lang)
    hit = run.stored.get(key)
    if hit is not None:
        return {**hit, "status": "ok", "cached": True}
    result = run.fresh.get(key)  # answered by a batch this run
    if result is None:
        async with run.sem:
            sent = pricing.prompt_tokens(prompt)
            estimate = run.budget.estimate(sent, reply_tokens(t, masked))
            if run.stop or not run.budget.hold(estimate):
                error = f"not sent: {run.stop or run.budget.stopped}"
                check = "provider" if run.stop else "budget"
                return {"status": "error", "check": check, "error": error, "cached": False}
            async with run.limiter.call(rate_limits.tokens(prompt, t.max_tokens)):
                result = await llm.complete(t.endpoint, prompt, t.max_tokens, client=run.client)
            result["cost_usd"] = run.budget.settle(estimate, result, sent, t.max_tokens)
            if result.get("wait_s") is not None and run.stop is None:
                run.stop = result["error"]  # a quota spent: nothing more is sent this run
    if result["status"] != "ok":
        return {"status": "error", "check": "call", "error": result["error"], "cached": False}
    out, unwrapped, failed = verify(masked, spans, result, lang, t.max_tokens)
    if failed is not None:  # never written, never cached: asked again on the next run
        run.failures.put(*translation_cache.failure(key, lang, failed.check, str(failed), out))
        return {"status": "error", "check": failed.check, "error": str(failed), "cached": False}
    usage_estimated = bool(result.get("usage_estimated"))
    record = translation_cache.record(out, result["cost_usd"], unwrapped, usage_estimated)
    run.writer.put(key, record)
    return {**record, "status": "ok", "cached": False}


def verify(masked: str, spans: list[str], result: dict, lang: str, max_tokens: int):
    """(the translation with code and URLs put back, the wrappers taken off, the first check it
    failed or None) of one reply (`mlit.data.translation_checks`)."""
    reply = result["text"] or ""
    if result.get("finish_reason") == "length":
        why = f"the provider cut the reply off at its token limit ({max_tokens}; finish_reason length)"
        return reply, [], translation_checks.Failed("cut_off", why)
    reply, unwrapped = translation_checks.unwrap(masked, reply)
    failed = translation_checks.check(masked, reply, lang)
    if failed is not None:
        return reply, unwrapped, failed
    try:
        return restore(reply, spans), unwrapped, None
    except ValueError as err:
        return reply, unwrapped, translation_checks.Failed("placeholders", str(err))


@dataclass
class _Run:
    """What every call of one translation run shares."""

    stored: dict
    writer: object
    budget: pricing.Budget
    fresh: dict  # key -> reply, from batches
    failures: object  # the writer of replies that failed a check (`translation_cache.FAILURES`)
    sem: asyncio.Semaphore | None = None
    stop: str | None = None  # why nothing more is sent (a provider's long wait, a cancelled batch)
    client: object = None  # the run's `openai_http.Session`
    limiter: rate_limits.Limiter = field(default_factory=rate_limits.Limiter)  # --rpm / --tpm


@dataclass(frozen=True)
class Outcome:
    frame: pl.DataFrame  # the parallel dataset: the source rows plus every complete translation
    failures: pl.DataFrame  # example_id, lang, field, error
    calls: int  # translations requested from the endpoint this run
    cached: int
    cost_usd: float = 0.0
    stopped: str | None = None  # why calls were not sent (the budget, the provider), or None
    budget_stop: bool = False  # stopped by --max-cost (a larger one goes on)
    texts_written: int = 0  # translated texts in the dataset, from the store or this run
    unwrapped: dict = field(default_factory=dict)  # wrapper -> texts it was taken off
    usage_estimated: int = 0  # texts whose reply had no usage (charged at the estimate)
    failed_ever: dict = field(default_factory=dict)  # check -> replies it refused, any run


def _jobs(source: pl.DataFrame, langs: Sequence[str]) -> list[tuple[dict, str, str]]:
    return [
        (row, lang, field)
        for row in source.iter_rows(named=True)
        for lang in langs
        for field in ("instruction", "response")
        if row[field]
    ]


async def _run(
    source: pl.DataFrame, langs: Sequence[str], t: Translator, run: _Run, progress: bool
) -> Outcome:
    from tqdm import tqdm

    run.sem = asyncio.Semaphore(t.concurrency)
    jobs = _jobs(source, langs)
    bar = tqdm(total=len(jobs), desc="translating", unit="text", disable=None if progress else True)

    async def one(row, lang, field):
        result = await _translate_one(t, row[field], lang, run)
        bar.update(1)
        bar.set_postfix_str(run.budget.progress(), refresh=False)
        return row, lang, field, result

    async with openai_http.Session() as run.client:  # one session for every call of the run
        results = await asyncio.gather(*(one(*j) for j in jobs))
    bar.close()
    texts: dict[tuple[str, str], dict] = {}
    failures = []
    calls = cached = estimated = 0
    unwrapped: dict[str, int] = {}
    for row, lang, field_, r in results:
        calls += not r["cached"]
        cached += r["cached"]
        if r["status"] == "ok":
            texts.setdefault((row["example_id"], lang), {})[field_] = r["text"]
            for wrap in (r.get("checks") or {}).get("unwrapped", []):
                unwrapped[wrap] = unwrapped.get(wrap, 0) + 1
            estimated += bool(r.get("usage_estimated"))
        else:
            failures.append(
                {
                    "example_id": row["example_id"],
                    "lang": lang,
                    "field": field_,
                    "check": r["check"],
                    "error": r["error"],
                }
            )
    failed = {(f["example_id"], f["lang"]) for f in failures}
    rows = [dict(r) for r in source.iter_rows(named=True)]
    for row in source.iter_rows(named=True):
        for lang in langs:
            if (row["example_id"], lang) in failed:
                continue  # a half-translated example is not written
            got = texts.get((row["example_id"], lang), {})
            rows.append(
                {
                    **row,
                    "lang": lang,
                    "instruction": got.get("instruction", row["instruction"]),
                    "response": got.get("response") if row["response"] else row["response"],
                }
            )
    frame = dataset.from_records(rows, "translation")
    fail_frame = pl.DataFrame(
        failures,
        schema={
            "example_id": pl.String,
            "lang": pl.String,
            "field": pl.String,
            "check": pl.String,
            "error": pl.String,
        },
    )
    spent = round(run.budget.spent, 6)
    written = sum(len(v) for k, v in texts.items() if k not in failed)
    stopped = run.stop or run.budget.stopped
    budget_stop = run.stop is None and run.budget.stopped is not None
    return Outcome(
        frame, fail_frame, calls, cached, spent, stopped, budget_stop, written, unwrapped, estimated
    )


def translate(
    source: pl.DataFrame,
    langs: Sequence[str],
    t: Translator,
    store: Store,
    progress: bool = True,
    budget: pricing.Budget | None = None,
    batch=None,  # batch_api.BatchOptions: through the provider's Batch API first
) -> Outcome:
    """Translate every English row into ``langs``; returns the parallel dataset and failures.
    No call is sent that could pass ``budget``; in batch mode what the batches leave unanswered
    is asked online."""
    langs = [lang for lang in languages.parse(langs) if lang != "en"]
    english = source.filter(pl.col("lang") == "en")
    if english.height == 0:
        raise dataset.DataError("the source has no English rows to translate")
    keys = _keys(english, langs, t)
    stored = store.records(translation_cache.KIND, keys)  # one bulk read of the store
    budget = budget or pricing.Budget(None, None)
    with (
        store.writer(translation_cache.KIND) as writer,
        store.writer(translation_cache.FAILURES) as failures,
    ):
        run = _Run(stored, writer, budget, {}, failures)
        run.limiter = t.limiter or run.limiter
        if batch is not None:
            run.fresh = _batch(english, langs, t, store, run, batch, progress)
        outcome = asyncio.run(_run(english, langs, t, run, progress))
    return replace(outcome, failed_ever=translation_cache.failures_of(store, set(keys)))


def _batch(english, langs, t: Translator, store: Store, run: _Run, opts, progress) -> dict:
    """The texts not stored, through the Batch API: key -> reply; checked and written by the
    online path's `_translate_one`, as a reply it got itself."""
    from mlit.providers import batch_api, batch_files

    calls, jobs = {}, _jobs(english, langs)
    for i, (row, lang, f) in enumerate(jobs):
        key, masked, _spans, prompt = _request(t, row[f], lang)
        if key not in run.stored and key not in calls:
            sent, reply = pricing.prompt_tokens(prompt), reply_tokens(t, masked)
            calls[key] = batch_files.Call(key, i, sent, t.max_tokens, None, reply)
    if not calls:
        return {}

    def prompt_of(call) -> str:
        row, lang, f = jobs[call.ref]
        return _request(t, row[f], lang)[3]

    report = batch_api.Report()
    got = batch_api.run(
        calls.values(), prompt_of, t.endpoint, store, run.budget, lambda _k, r: r, opts,
        progress, report,
    )  # fmt: skip
    run.stop = report.stopped  # a cancelled batch: what it answered is written, nothing is sent
    return {k: v for k, v in got.items() if v["status"] == "ok"}


def _keys(english: pl.DataFrame, langs: Sequence[str], t: Translator) -> list[str]:
    """The store key of every text to translate, in `_jobs` order."""
    return [translation_key(t, row[field], lang) for row, lang, field in _jobs(english, langs)]


def dry_run(
    source: pl.DataFrame,
    langs: Sequence[str],
    t: Translator,
    store: Store,
    prices: tuple[float, float] | None = None,
) -> dict:
    """Calls, tokens and cost a translation would take (texts already stored cost nothing);
    ``prices``: dollars per million input and output tokens (default: litellm's price map)."""
    langs = [lang for lang in languages.parse(langs) if lang != "en"]
    english = source.filter(pl.col("lang") == "en")
    calls = chars = 0
    keys = _keys(english, langs, t)
    stored = store.records(translation_cache.KIND, keys)
    for (row, _lang, f), key in zip(_jobs(english, langs), keys, strict=True):
        if key not in stored:
            calls += 1
            chars += len(row[f])
    prompt_tokens = math.ceil(chars / 4) + calls * 45  # ~4 characters a token, plus the prompt
    completion_tokens = math.ceil(chars / 4 * 1.3)  # most languages take more tokens than English
    return {
        "texts": calls + len(stored),
        "calls": calls,
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "cost_usd": cost_usd(t.endpoint.model, prompt_tokens, completion_tokens, prices),
    }


def cost_usd(
    model: str, prompt_tokens: int, completion_tokens: int, prices: tuple[float, float] | None
) -> float | None:
    """Dollars for these tokens: at ``prices`` (per million input, output), or litellm's price
    for the model (`pricing.prices_for`, the one owner of prices); None when neither is known."""
    priced = pricing.prices_for(model, *(prices or (None, None)))
    return None if priced is None else priced.cost(prompt_tokens, completion_tokens, batch=False)


def write(frame: pl.DataFrame, out: str | Path) -> Path:
    return dataset.save(frame, out)
