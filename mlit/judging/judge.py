"""Side-by-side judging through litellm: both orders, strict parsing, cached verdicts.

Every (candidate, baseline, eval language, example) is shown to the judge twice, once in each
order. The judge answers with a single digit; a *win* is the candidate chosen in both orders, a
*loss* the baseline chosen in both, and a *tie* orders that disagree. A pair with a failed or
unparseable call is an ``error`` and is never folded into ties or losses.

The judge is any litellm model string (``openai/gpt-4o``, ``anthropic/...``, ``hosted_vllm/...``) or
our own Serve endpoint (``openai/<name>`` with ``api_base``). Verdicts are cached in the store by
(judge model, endpoint, template hash, parser, instruction, answer 1, answer 2); failures are not
cached and are retried on the next run. litellm's own cache is not used: its key ignores the
endpoint.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import polars as pl

from mlit.generation.answer_client import workers
from mlit.judging import judgments
from mlit.judging.pairs import Pair, Seen, judged
from mlit.judging.pairs import prompt as prompt_of
from mlit.judging.parsers import PARSERS
from mlit.plumbing import console
from mlit.providers import llm, openai_http, pricing
from mlit.providers.pricing import Budget, BudgetError
from mlit.providers.retries import PATIENCE_S
from mlit.store import segments
from mlit.store.artifacts import Store, content_key

# Judge templates by name, as alpaca_eval keeps evaluator configs; anything else is a file path.
TEMPLATES = {
    # The paper's rule (Fig. 9), in our own words: a plain preference that may be subjective, one
    # digit, no added criteria (App. E: the paper did not penalise the response language).
    "paper": "judge_paper.txt",
    # Not the paper's: asks for helpful, correct, complete answers in the request's language.
    "rubric": "judge_rubric.txt",
    "compact": "judge_compact.txt",  # the demo judge's: short enough for its 768-token context
}
DEFAULT_TEMPLATE = "paper"
# A template's placeholders: ours, or the ones the paper's Fig. 9 prints (pasted verbatim).
FIELDS = (
    ("{instruction}", "{instruction}"),
    ("{answer_1}", "{response 1}"),
    ("{answer_2}", "{response 2}"),
)


class JudgeError(RuntimeError):
    """The judge could not be used (unreachable, rejected the key, bad template)."""


# --------------------------------------------------------------------------------------------
# Configuration


@dataclass(frozen=True)
class Judge:
    model: str  # a litellm model string
    api_base: str | None = None
    api_key_env: str | None = None  # name of the variable holding the key, never the key
    template: str | None = None  # a template file; None: mlit's default
    parser: str = "digit"
    concurrency: int = 8
    timeout_s: float = 60.0
    retries: int = 4
    backoff_s: float = 0.5
    patience_s: float = PATIENCE_S  # passing failures (a restarting replica) are retried this long
    max_tokens: int = 2
    top_logprobs: int = 5
    # A reply that names no answer is asked again this many times (a sampled or overloaded judge
    # may answer properly the next time); after that it is an error, never stored.
    reasks: int = 2
    # What identifies the endpoint in cache keys when api_base is not stable (a self-hosted
    # judge on a port picked per run); defaults to api_base.
    endpoint_id: str | None = None
    # The provider's rate limits (--judge-rpm, --judge-tpm): calls wait for them, not for 429s.
    rpm: float | None = None
    tpm: float | None = None

    def __post_init__(self) -> None:
        if self.parser not in PARSERS:
            raise JudgeError(f"unknown parser {self.parser!r}; known: {', '.join(PARSERS)}")
        text = _read_template(self.template)
        for field, alias in FIELDS:
            if field not in text and alias not in text:
                raise JudgeError(
                    f"judge template {self.template_name} lacks {field} (or {alias}, as in the "
                    "paper's Fig. 9)"
                )
        # Read once: every prompt and every verdict key needs the text and its hash.
        object.__setattr__(self, "_text", text)
        object.__setattr__(self, "_hash", hashlib.sha256(text.encode()).hexdigest()[:16])

    @property
    def template_name(self) -> str:
        """The template's name (paper, rubric, compact) or its file path."""
        return self.template or DEFAULT_TEMPLATE

    def template_text(self) -> str:
        return self._text

    def template_hash(self) -> str:
        return self._hash

    def identity(self) -> dict:
        return {
            "model": self.model,
            "api_base": self.endpoint_id or self.api_base or "",
            "template": self._hash,
            "parser": self.parser,
        }

    def prompt(self, instruction: str, answer_1: str, answer_2: str) -> str:
        # str.replace, not str.format: answers may contain braces.
        return (
            self._text.replace("{instruction}", instruction)
            .replace("{answer_1}", answer_1)
            .replace("{answer_2}", answer_2)
            .replace("{response 1}", answer_1)
            .replace("{response 2}", answer_2)
        )

    def endpoint(self):
        return llm.Endpoint(
            self.model,
            self.api_base,
            self.api_key_env,
            self.timeout_s,
            self.retries,
            self.backoff_s,
            self.patience_s,
        )

    def api_key(self) -> str | None:
        """The key from the environment (None for keyless judges); a clear error when unset."""
        try:
            return None if not self.api_key_env else self.endpoint().api_key()
        except ValueError as err:
            raise JudgeError(f"the judge's {err}") from err


def _read_template(template: str | None) -> str:
    name = template or DEFAULT_TEMPLATE
    if name in TEMPLATES:
        return (resources.files("mlit.judging") / "templates" / TEMPLATES[name]).read_text("utf-8")
    path = Path(name)
    if not path.exists():
        raise JudgeError(
            f"judge template {path}: no such file (or name one of: {', '.join(TEMPLATES)})"
        )
    return path.read_text("utf-8")


def verdict_key(judge: Judge, instruction: str, answer_1: str, answer_2: str) -> str:
    return content_key("verdict", judge.identity(), instruction, answer_1, answer_2)


def pair_keys(pairs: Sequence[Pair], judge: Judge) -> list[tuple[str, str] | None]:
    """The verdict keys of both orders of each pair (None: not judged), the strings of
    `verdict_key` built about 3x faster: the judge's part of the JSON is serialised once."""
    head = json.dumps(
        ["verdict", judge.identity()], sort_keys=True, ensure_ascii=False, separators=(",", ":")
    )[:-1]

    def key(instruction: str, a: str, b: str) -> str:
        blob = ",".join((head, *(json.dumps(x, ensure_ascii=False) for x in (instruction, a, b))))
        return hashlib.sha256(f"{blob}]".encode()).hexdigest()[:24]

    return [
        tuple(key(p.instruction, a, b) for a, b in p.orders()) if judged(p) else None for p in pairs
    ]


# --------------------------------------------------------------------------------------------
# Calls


async def call_judge(judge: Judge, prompt: str, throttled=None, client=None, seen=None) -> dict:
    """One judge call (greedy, a few tokens, top log-probabilities) through `mlit.providers.llm`, parsed.

    Returns a record with ``status`` "ok" (raw text, parsed choice, usage, cost) or "error".
    """
    result = await llm.complete(
        judge.endpoint(),
        prompt,
        judge.max_tokens,
        judge.top_logprobs,
        throttled,
        client,
        None if seen is None else seen.requests,
    )
    return verdict_of(judge, result)


def verdict_of(judge: Judge, result: dict) -> dict:
    """A reply (online or from a batch) as a verdict record: the parser's choice and the usage."""
    if result["status"] != "ok":
        return {**result, "error": f"judge: {result['error']}"}
    verdict, how = PARSERS[judge.parser](result["text"], result["top_logprobs"])
    keep = ("finish_reason", "prompt_tokens", "completion_tokens", "cost_usd", "latency_s")
    return {
        "status": "ok",
        "raw": result["text"],
        "choice": verdict,
        "parse": how,
        **{k: result[k] for k in keep},
    }


# --------------------------------------------------------------------------------------------
# Pairs -> judgments


def cached(doc: str) -> dict:
    """A stored verdict's record, as a row of the judgments table takes it."""
    return {**segments.decode(doc), "cached": True}


def stored_verdicts(pairs: Sequence[Pair], judge: Judge, store: Store):
    """(`pair_keys`, key -> stored verdict as its JSON document, decoded when used) for both
    orders of every judged pair: one bulk read of the store, not one read per call."""
    keys = pair_keys(pairs, judge)
    return keys, store.raw_records("verdicts", [k for ks in keys if ks for k in ks])


def asked(keys, stored) -> int:
    """How many judge calls the store does not hold among `pair_keys` ``keys``."""
    return sum(k not in stored for ks in keys if ks for k in ks)


async def _judge_all(pairs, keys, judge, stored, writer, progress, budget, fresh, seen) -> list:
    from tqdm import tqdm

    from mlit.providers import rate_limits

    gate = llm.Gate(judge.concurrency)
    limiter = rate_limits.Limiter(judge.rpm, judge.tpm)
    calls = 2 * sum(judged(p) for p in pairs)
    bar = tqdm(
        total=calls,
        desc="judging",
        unit="call",
        disable=None if progress else True,
        file=console.bar_stream(),
    )

    async def order(key: str, p: Pair, index: int) -> dict:
        prompt = prompt_of(judge, p, index)
        seen.prompt(p, index, prompt)  # the order as sent, for the protocol report
        sent = pricing.prompt_tokens(prompt)
        try:
            async with gate:
                for _ in range(judge.reasks + 1):
                    estimate = budget.estimate(sent, judge.max_tokens)
                    if not budget.hold(estimate):
                        return _not_sent(budget.stopped)
                    async with limiter.call(rate_limits.tokens(prompt, judge.max_tokens)):
                        result = await call_judge(judge, prompt, gate.throttle, client, seen)
                    result["cost_usd"] = budget.settle(estimate, result, sent, judge.max_tokens)
                    gate.answered(result)
                    if result["status"] != "ok" or result["choice"] is not None:
                        break
        except llm.Stopped as stop:
            return _not_sent(f"the judge refused ({stop})")
        bar.update(1)
        bar.set_postfix_str(budget.progress(), refresh=False)
        if result["status"] == "ok" and result["choice"] is not None:
            writer.put(key, result)  # only verdicts are results
        elif result["status"] == "ok":
            why = f"unparseable judge reply after {judge.reasks + 1} tries: {result['raw']!r:.80}"
            result = {**result, "status": "error", "error": why}
        return {**result, "cached": False}

    async def either(key: str, p: Pair, index: int) -> dict:
        if key in fresh:  # answered by a batch this run: not copied (1M of them)
            bar.update(1)
            record = fresh[key]  # kept: two pairs may share a key (answers alike)
            record["cached"] = False
            return record
        hit = stored.get(key)
        return cached(hit) if hit is not None else await order(key, p, index)

    async def ask(p: Pair, k1: str, k2: str) -> dict:
        r1, r2 = await asyncio.gather(either(k1, p, 0), either(k2, p, 1))
        return judgments.row(judge.model, p, r1, r2)

    # Pairs with both orders stored become rows at once: a rerun of the paper's 618k pairs does
    # not schedule 618k coroutines to find out that nothing is to be asked.
    rows, asking = [], []
    for p, ks in zip(pairs, keys, strict=True):
        if ks is None:
            rows.append(judgments.row(judge.model, p, None, None))
        elif ks[0] in stored and ks[1] in stored:
            rows.append(judgments.row(judge.model, p, cached(stored[ks[0]]), cached(stored[ks[1]])))
            bar.update(2)
        else:
            asking.append((p, *ks))

    async def one(p: Pair, k1: str, k2: str) -> None:
        rows.append(await ask(p, k1, k2))

    async with openai_http.Session() as client:  # one session for every call of the phase
        await workers(judge.concurrency, asking, one)
    bar.close()
    return rows, gate


def _not_sent(why: str) -> dict:
    return {"status": "error", "error": f"not sent: {why}", "cached": False}


def judge_pairs(
    pairs: Sequence[Pair],
    judge: Judge,
    store: Store,
    save: Callable[[pl.DataFrame], object] | None = None,
    progress: bool = True,
    stored: tuple[list, dict[str, str]] | None = None,
    budget: Budget | None = None,
    batch=None,  # batch_api.BatchOptions: through the Batch API
    report=None,  # batch_api.Report, filled in batch mode
    seen: Seen | None = None,
) -> pl.DataFrame:
    """Judge every pair in both orders; returns the judgments table (and hands it to ``save``).
    ``batch``: through the Batch API first, the rest online. ``budget``: no call is sent that
    could pass it (`BudgetError` once the rest is saved). A fatal answer (401, 403, 404) stops
    judging at once: `JudgeError`. ``stored``: `stored_verdicts`, when the caller has it.
    ``seen``: filled with what was sent (`mlit.judging.pairs.Seen`)."""
    pairs = list(pairs)
    keys, stored = stored or stored_verdicts(pairs, judge, store)
    budget = budget or Budget(None, None)
    seen = seen if seen is not None else Seen()
    with store.writer("verdicts") as writer:
        fresh = {}
        if batch is not None:
            from mlit.judging import batch_mode

            args = (pairs, keys, judge, stored, writer, store, budget, batch, report, progress)
            fresh = batch_mode.verdicts(*args, verdict_of, seen)
        rows, gate = asyncio.run(
            _judge_all(pairs, keys, judge, stored, writer, progress, budget, fresh, seen)
        )
        fresh.clear()  # in the rows now: a batch phase's records go before the table is made
    frame = pl.from_dicts(rows, schema=judgments.JUDGMENT_COLUMNS).sort(
        "candidate", "baseline", "eval_lang", "example_id"
    )
    if save is not None:
        save(frame)
    if gate.wait_s is not None:  # a quota spent: a rerun after the wait goes on
        raise llm.ProviderStop(
            f"judging stopped after {gate.sent} calls: {gate.stopped}. Verdicts so far are stored"
        )
    if gate.stopped:  # what was answered is stored; nothing after the refusal was sent
        raise JudgeError(
            f"the judge {judge.model} refused a call ({gate.stopped.removeprefix('judge: ')}); "
            f"judging stopped after {gate.sent} calls, the rest were not sent. Verdicts so far "
            "are stored: fix the judge (--judge, --judge-api-key-env) and rerun"
        )
    if budget.stopped:
        raise BudgetError(
            f"judging stopped: {budget.stopped}. ${budget.spent:.4f} spent; verdicts so far are "
            "stored and the run resumes where it stopped: rerun with a larger --max-cost"
        )
    return frame
