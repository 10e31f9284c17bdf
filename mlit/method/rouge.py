"""ROUGE-L that tokenizes every script.

The common `rouge_score` tokenizer keeps only ``[a-z0-9]`` and silently turns Chinese, Hindi, Arabic
or Hebrew answers into empty token lists, which would make checkpoint selection meaningless for
half of the paper's languages. Here:

- Han, Hiragana, Katakana, Thai, Lao, Khmer and Myanmar characters are one token each: those
  scripts do not separate words with spaces, and characters are the usual unit for them;
- everything else is split into Unicode words: runs of letters, combining marks and digits, so
  Devanagari vowel signs, Arabic harakat and Hebrew niqqud stay inside their word;
- text is NFKC-normalised and case-folded first.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence

import regex

_TOKEN = regex.compile(
    r"[\p{Han}\p{Hiragana}\p{Katakana}\p{Thai}\p{Lao}\p{Khmer}\p{Myanmar}]"
    r"|[\p{L}\p{M}\p{N}]+"
)


def tokenize(text: str) -> list[str]:
    return _TOKEN.findall(unicodedata.normalize("NFKC", text).casefold())


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence (O(len(a) * len(b)) time, O(len(b)) memory)."""
    if not a or not b:
        return 0
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b, start=1):
            cur.append(prev[j - 1] + 1 if x == y else max(prev[j], cur[j - 1]))
        prev = cur
    return prev[-1]


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F1 between two texts, in [0, 1]."""
    pred, ref = tokenize(prediction), tokenize(reference)
    lcs = lcs_length(pred, ref)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(pred), lcs / len(ref)
    return 2 * precision * recall / (precision + recall)
