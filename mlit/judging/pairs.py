"""What the judge compares: a pair of answers to one instruction, shown in both orders, and what
the judge phase saw itself send (for the protocol report).

The paper shows each pair twice, once in each order, so that a judge's taste for the first (or
the second) position cancels out. `Pair.orders` is the one place the orders are made; `Seen`
reads them back from the prompts that were sent, never from the rule that made them.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field

# A pair's answers are told apart in a prompt only when each occurs there once and neither
# holds the other: a short answer ("1") may also be in the template's own words.
_DISTINCT_CHARS = 8


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

    def orders(self) -> tuple[tuple[str, str], tuple[str, str]]:
        """The answers as the judge sees them, (Answer 1, Answer 2), in both orders: the
        candidate first, then the baseline first (the paper's guard against position bias)."""
        return (
            (self.candidate_answer, self.baseline_answer),
            (self.baseline_answer, self.candidate_answer),
        )


def judged(p: Pair) -> bool:
    """A pair the judge is asked about: not a self-comparison, and both answers exist."""
    return not p.is_self and p.candidate_answer is not None and p.baseline_answer is not None


def prompt(judge, p: Pair, order: int) -> str:
    """The judge's prompt for ``p`` in its order ``order`` (0: the candidate first)."""
    return judge.prompt(p.instruction, *p.orders()[order])


@dataclass
class Seen:
    """What a judge phase sent, read from the requests themselves: their decoding
    (`mlit.providers.openai_http.decoding_of`) and, per call, where the candidate's answer stood in the
    prompt."""

    requests: Counter = field(default_factory=Counter)  # decoding -> calls sent
    positions: Counter = field(default_factory=Counter)  # per call: the candidate's place

    def prompt(self, p: Pair, order: int, text: str) -> None:
        """One prompt sent for ``p`` in ``order``: was the candidate's answer first in order 0
        and second in order 1?"""
        a, b = p.candidate_answer or "", p.baseline_answer or ""
        told = (
            min(len(a), len(b)) >= _DISTINCT_CHARS
            and a not in b
            and b not in a
            and text.count(a) == 1
            and text.count(b) == 1
        )
        if not told:
            self.positions["not told apart"] += 1
            return
        first = text.index(a) < text.index(b)
        self.positions["swapped" if first == (order == 0) else "same order twice"] += 1

    def as_dict(self) -> dict:
        return {"requests": dict(self.requests), "candidate_positions": dict(self.positions)}


def template_sha256(text: str) -> str:
    """A judge template's fingerprint: runs of whitespace count as one space (the paper's
    Fig. 9 is compared by it, `mlit/paper/protocol.json`)."""
    return hashlib.sha256(" ".join(text.split()).encode("utf-8")).hexdigest()
