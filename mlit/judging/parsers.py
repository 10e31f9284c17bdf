"""The judge's parsers, looked up by name (a judge is a template and a parser, as alpaca_eval
keeps its evaluator configs): what a reply's text, or its first token's log-probabilities, say
about which answer won."""

from __future__ import annotations

import re
from collections.abc import Callable


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
