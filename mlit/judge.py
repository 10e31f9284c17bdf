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
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import polars as pl

from mlit import console
from mlit.store import Store, content_key

# Judge templates by name, as alpaca_eval keeps evaluator configs; anything else is a file path.
TEMPLATES = {
    # The paper's rule (Fig. 9), in our own words: a plain preference that may be subjective, one
    # digit, no added criteria (App. E: the paper did not penalise the response language).
    "paper": "judge_paper.txt",
    # Not the paper's: asks for helpful, correct, complete answers in the request's language.
    "rubric": "judge_rubric.txt",
    # The demo judge's: short enough for a 1M-parameter model.
    "compact": "judge_compact.txt",
}
DEFAULT_TEMPLATE = "paper"


class JudgeError(RuntimeError):
    """The judge could not be used (unreachable, rejected the key, bad template)."""


# --------------------------------------------------------------------------------------------
# Parsers, looked up by name


def parse_digit(text: str | None, top_logprobs: list[tuple[str, float]] | None):
    """(choice, how): a clean '1' or '2'; otherwise the likelier of '1'/'2' in the first token's
    top log-probabilities; otherwise unparseable."""
    match = re.fullmatch(r"\s*([12])\s*[.)]?\s*", text or "")
    if match:
        return int(match.group(1)), "text"
    if top_logprobs:
        best: dict[str, float] = {}
        for token, lp in top_logprobs:
            t = token.strip()
            if t in ("1", "2"):
                best[t] = max(lp, best.get(t, float("-inf")))
        if best:
            return int(max(best, key=best.get)), "logprobs"
    return None, "unparseable"


PARSERS: dict[str, Callable] = {"digit": parse_digit}


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
    max_tokens: int = 2
    top_logprobs: int = 5
    # A reply that names no answer is asked again this many times (a sampled or overloaded judge
    # may answer properly the next time); after that it is an error, never stored.
    reasks: int = 2
    # What identifies the endpoint in cache keys when api_base is not stable (a self-hosted
    # judge on a port picked per run); defaults to api_base.
    endpoint_id: str | None = None

    def __post_init__(self) -> None:
        if self.parser not in PARSERS:
            raise JudgeError(f"unknown parser {self.parser!r}; known: {', '.join(PARSERS)}")
        text = _read_template(self.template)
        for field in ("{instruction}", "{answer_1}", "{answer_2}"):
            if field not in text:
                raise JudgeError(f"judge template {self.template_name} lacks {field}")
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
        )

    def endpoint(self):
        from mlit import llm

        return llm.Endpoint(
            self.model,
            self.api_base,
            self.api_key_env,
            self.timeout_s,
            self.retries,
            self.backoff_s,
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
        return (resources.files("mlit") / "templates" / TEMPLATES[name]).read_text("utf-8")
    path = Path(name)
    if not path.exists():
        raise JudgeError(
            f"judge template {path}: no such file (or name one of: {', '.join(TEMPLATES)})"
        )
    return path.read_text("utf-8")


@dataclass(frozen=True)
class Pair:
    """One side-by-side comparison of a candidate's answer with a baseline's."""

    candidate: str
    baseline: str
    eval_lang: str
    example_id: str
    instruction: str
    candidate_answer: str | None  # None: the generation failed
    baseline_answer: str | None
    candidate_key: str = ""
    baseline_key: str = ""

    @property
    def is_self(self) -> bool:
        return bool(self.candidate_key) and self.candidate_key == self.baseline_key


def verdict_key(judge: Judge, instruction: str, answer_1: str, answer_2: str) -> str:
    return content_key("verdict", judge.identity(), instruction, answer_1, answer_2)


# --------------------------------------------------------------------------------------------
# Calls


async def call_judge(judge: Judge, prompt: str) -> dict:
    """One judge call (greedy, a few tokens, top log-probabilities) through `mlit.llm`, parsed.

    Returns a record with ``status`` "ok" (raw text, parsed choice, usage, cost) or "error".
    """
    from mlit import llm

    result = await llm.complete(judge.endpoint(), prompt, judge.max_tokens, judge.top_logprobs)
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


JUDGMENT_COLUMNS = {
    "candidate": pl.String,
    "baseline": pl.String,
    "eval_lang": pl.String,
    "example_id": pl.String,
    "verdict": pl.String,  # win | tie | loss | error
    "self_comparison": pl.Boolean,
    "raw_1": pl.String,  # judge output with the candidate as Answer 1
    "raw_2": pl.String,  # judge output with the candidate as Answer 2
    "parse_1": pl.String,  # text | logprobs | unparseable | error | cached-... | self
    "parse_2": pl.String,
    "choice_1": pl.Int64,
    "choice_2": pl.Int64,
    "cached_1": pl.Boolean,
    "cached_2": pl.Boolean,
    "error": pl.String,
    "latency_s": pl.Float64,
    "cost_usd": pl.Float64,
    "prompt_tokens": pl.Int64,
    "completion_tokens": pl.Int64,
    "judge": pl.String,
}


def pair_verdict(choice_1: int | None, choice_2: int | None) -> str:
    """Order 1 shows the candidate as Answer 1, order 2 as Answer 2."""
    if choice_1 is None or choice_2 is None:
        return "error"
    picked = (choice_1 == 1) + (choice_2 == 2)
    return {2: "win", 1: "tie", 0: "loss"}[picked]


async def _judge_all(pairs, judge, store, progress) -> list[dict]:
    from tqdm import tqdm

    from mlit import llm

    gate = llm.Gate(judge.concurrency)
    calls = sum(
        2
        for p in pairs
        if not p.is_self and p.candidate_answer is not None and p.baseline_answer is not None
    )
    bar = tqdm(
        total=calls,
        desc="judging",
        unit="call",
        disable=None if progress else True,
        file=console.bar_stream(),
    )

    async def order(instruction: str, a: str, b: str) -> dict:
        key = verdict_key(judge, instruction, a, b)
        hit = store.get("verdicts", key)
        if hit is not None:
            bar.update(1)
            return {**hit, "cached": True}
        try:
            async with gate:
                for _ in range(judge.reasks + 1):
                    result = await call_judge(judge, judge.prompt(instruction, a, b))
                    gate.answered(result)
                    if result["status"] != "ok" or result["choice"] is not None:
                        break
        except llm.Stopped as stop:
            return {
                "status": "error",
                "error": f"not sent: the judge refused ({stop})",
                "cached": False,
            }
        bar.update(1)
        if result["status"] == "ok" and result["choice"] is not None:
            store.put("verdicts", key, result)  # only verdicts are results
        elif result["status"] == "ok":
            tries = judge.reasks + 1
            result = {
                **result,
                "status": "error",
                "error": f"unparseable judge reply after {tries} tries: {result['raw']!r:.80}",
            }
        return {**result, "cached": False}

    async def one(p: Pair) -> dict:
        row = {
            "candidate": p.candidate,
            "baseline": p.baseline,
            "eval_lang": p.eval_lang,
            "example_id": p.example_id,
            "judge": judge.model,
            "self_comparison": p.is_self,
        }
        if p.is_self:
            return {**row, "verdict": "tie", "parse_1": "self", "parse_2": "self", "cost_usd": 0.0}
        # An empty answer is an answer (the model said nothing) and is judged; only a missing
        # one (its generation failed) makes the pair an error.
        if p.candidate_answer is None or p.baseline_answer is None:
            return {**row, "verdict": "error", "error": "an answer is missing (generation failed)"}
        r1, r2 = await asyncio.gather(
            order(p.instruction, p.candidate_answer, p.baseline_answer),
            order(p.instruction, p.baseline_answer, p.candidate_answer),
        )
        errors = [r["error"] for r in (r1, r2) if r["status"] != "ok"]
        c1, c2 = r1.get("choice"), r2.get("choice")
        return {
            **row,
            "verdict": "error" if errors else pair_verdict(c1, c2),
            "raw_1": r1.get("raw"),
            "raw_2": r2.get("raw"),
            "parse_1": r1.get("parse", "error"),
            "parse_2": r2.get("parse", "error"),
            "choice_1": c1,
            "choice_2": c2,
            "cached_1": r1["cached"],
            "cached_2": r2["cached"],
            "error": "; ".join(errors) or None,
            "latency_s": sum(r.get("latency_s") or 0 for r in (r1, r2)),
            "cost_usd": sum(r.get("cost_usd") or 0 for r in (r1, r2)),
            "prompt_tokens": sum(r.get("prompt_tokens") or 0 for r in (r1, r2)),
            "completion_tokens": sum(r.get("completion_tokens") or 0 for r in (r1, r2)),
        }

    rows = await asyncio.gather(*(one(p) for p in pairs))
    bar.close()
    return list(rows), gate


def judge_pairs(
    pairs: Sequence[Pair],
    judge: Judge,
    store: Store,
    save: Callable[[pl.DataFrame], object] | None = None,
    progress: bool = True,
) -> pl.DataFrame:
    """Judge every pair in both orders; returns the judgments table (and hands it to ``save``).
    A fatal answer from the judge (401, 403, 404) stops judging at once: `JudgeError`."""
    rows, gate = asyncio.run(_judge_all(list(pairs), judge, store, progress))
    frame = pl.DataFrame(
        [{c: r.get(c) for c in JUDGMENT_COLUMNS} for r in rows], schema=JUDGMENT_COLUMNS
    ).sort("candidate", "baseline", "eval_lang", "example_id")
    if save is not None:
        save(frame)
    if gate.stopped:  # what was answered is stored; nothing after the refusal was sent
        raise JudgeError(
            f"the judge {judge.model} refused a call ({gate.stopped.removeprefix('judge: ')}); "
            f"judging stopped after {gate.sent} calls, the rest were not sent. Verdicts so far "
            "are stored: fix the judge (--judge, --judge-api-key-env) and rerun"
        )
    return frame


def error_summary(judgments: pl.DataFrame) -> str | None:
    """A one-paragraph account of failed pairs, or None when there are none."""
    errors = judgments.filter(pl.col("verdict") == "error")
    if errors.height == 0:
        return None
    first = errors["error"].drop_nulls().head(1).to_list()
    return (
        f"{errors.height} of {judgments.height} pairs have no verdict (judge errors or "
        f"unparseable replies); they are excluded from scores, nothing of them is stored, and "
        f"they are asked again on the next run. First error: {first[0] if first else 'unknown'}"
    )
