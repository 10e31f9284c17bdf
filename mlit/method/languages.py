"""Language registry: codes, names, families and scripts.

Every stage names languages by ISO 639-1 code. Looking a code up here is the one place that decides
whether a code is known, so a typo such as ``--languages ar,cz`` fails early with the close matches
instead of training a model on nothing.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Language:
    code: str
    name: str
    family: str
    script: str


class UnknownLanguageError(ValueError):
    """A language code that is not in the registry."""

    def __init__(self, code: str, suggestions: list[str]):
        self.code = code
        self.suggestions = suggestions
        hint = f" Did you mean: {', '.join(suggestions)}?" if suggestions else ""
        super().__init__(
            f"unknown language code {code!r}.{hint} "
            "Known codes: " + ", ".join(sorted(_REGISTRY)) + ". "
            "Add new ones with mlit.method.languages.register()."
        )


_REGISTRY: dict[str, Language] = {}


def register(code: str, name: str, family: str, script: str) -> Language:
    """Add (or replace) a language. Codes are lower-case ISO 639-1 or 639-3."""
    code = code.strip().lower()
    if not code.isascii() or not code.replace("-", "").isalpha() or not 2 <= len(code) <= 8:
        raise ValueError(f"invalid language code {code!r}: use an ISO 639 code such as 'de'")
    lang = Language(code=code, name=name, family=family, script=script)
    _REGISTRY[code] = lang
    return lang


for _row in (
    # The paper's twelve languages (§2).
    ("ar", "Arabic", "Afro-Asiatic/Semitic", "Arab"),
    ("cs", "Czech", "Indo-European/Slavic", "Latn"),
    ("en", "English", "Indo-European/Germanic", "Latn"),
    ("es", "Spanish", "Indo-European/Romance", "Latn"),
    ("et", "Estonian", "Uralic/Finnic", "Latn"),
    ("fi", "Finnish", "Uralic/Finnic", "Latn"),
    ("he", "Hebrew", "Afro-Asiatic/Semitic", "Hebr"),
    ("hi", "Hindi", "Indo-European/Indo-Aryan", "Deva"),
    ("it", "Italian", "Indo-European/Romance", "Latn"),
    ("ru", "Russian", "Indo-European/Slavic", "Cyrl"),
    ("sw", "Swahili", "Niger-Congo/Bantu", "Latn"),
    ("zh", "Chinese", "Sino-Tibetan/Sinitic", "Hans"),
    # The Slavic languages of the similarity study (§4.1) not already above.
    ("hr", "Croatian", "Indo-European/Slavic", "Latn"),
    ("pl", "Polish", "Indo-European/Slavic", "Latn"),
    ("sk", "Slovak", "Indo-European/Slavic", "Latn"),
    ("sl", "Slovene", "Indo-European/Slavic", "Latn"),
    ("sr", "Serbian", "Indo-European/Slavic", "Cyrl"),
    # A few more common ones, so that users can name them without registering.
    ("de", "German", "Indo-European/Germanic", "Latn"),
    ("fr", "French", "Indo-European/Romance", "Latn"),
    ("pt", "Portuguese", "Indo-European/Romance", "Latn"),
    ("nl", "Dutch", "Indo-European/Germanic", "Latn"),
    ("uk", "Ukrainian", "Indo-European/Slavic", "Cyrl"),
    ("bg", "Bulgarian", "Indo-European/Slavic", "Cyrl"),
    ("ja", "Japanese", "Japonic", "Jpan"),
    ("ko", "Korean", "Koreanic", "Kore"),
    ("tr", "Turkish", "Turkic", "Latn"),
    ("vi", "Vietnamese", "Austroasiatic", "Latn"),
    ("id", "Indonesian", "Austronesian", "Latn"),
    ("bn", "Bengali", "Indo-European/Indo-Aryan", "Beng"),
    ("th", "Thai", "Kra-Dai", "Thai"),
    ("fa", "Persian", "Indo-European/Iranian", "Arab"),
):
    register(*_row)

# The paper's language sets. Tuples keep the paper's order where the order matters (§3.4).
PAPER_LANGUAGES: tuple[str, ...] = (
    "ar",
    "cs",
    "en",
    "es",
    "et",
    "fi",
    "he",
    "hi",
    "it",
    "ru",
    "sw",
    "zh",
)
SIX_TRAINING: tuple[str, ...] = ("en", "ar", "fi", "it", "ru", "sw")
SIX_UNSEEN: tuple[str, ...] = ("cs", "et", "he", "hi", "es", "zh")
LANGUAGE_ORDERS: tuple[tuple[str, ...], ...] = (
    ("fi", "en", "ru", "it", "sw", "ar"),
    ("sw", "it", "ar", "en", "fi", "ru"),
    ("it", "fi", "en", "ar", "ru", "sw"),
)
SLAVIC: tuple[str, ...] = ("ru", "sr", "hr", "sl", "pl", "sk", "cs")
SAMPLE_LANGUAGES: tuple[str, ...] = tuple(sorted(set(PAPER_LANGUAGES) | set(SLAVIC)))


def get(code: str) -> Language:
    """Look a language up; an unknown code raises with the closest known codes and names."""
    key = code.strip().lower()
    if key in _REGISTRY:
        return _REGISTRY[key]
    raise UnknownLanguageError(code, _suggest(key))


def _suggest(key: str) -> list[str]:
    by_name = {lang.name.lower(): c for c, lang in _REGISTRY.items()}
    close = difflib.get_close_matches(key, list(_REGISTRY), n=4, cutoff=0.5)
    close += [by_name[n] for n in difflib.get_close_matches(key, list(by_name), n=2, cutoff=0.6)]
    # Codes sharing a first letter are the usual typo ('cz' for 'cs').
    close += [c for c in sorted(_REGISTRY) if len(key) >= 1 and c[0] == key[0] and len(c) == 2]
    return list(dict.fromkeys(close))[:5]


def parse(codes: str | Iterable[str]) -> tuple[str, ...]:
    """Parse 'ar,cs, en' or an iterable of codes into validated, de-duplicated codes (order kept)."""
    items = codes.split(",") if isinstance(codes, str) else list(codes)
    out = [get(c).code for c in items if c.strip()]
    if not out:
        raise ValueError("no language codes given")
    return tuple(dict.fromkeys(out))


def known() -> tuple[str, ...]:
    return tuple(sorted(_REGISTRY))


# Scripts by their ISO 15924 code: the name a translation prompt uses, and the prefixes of the
# Unicode character names written in it (what `script_share` counts).
SCRIPTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "Latn": ("Latin", ("LATIN",)),
    "Cyrl": ("Cyrillic", ("CYRILLIC",)),
    "Arab": ("Arabic", ("ARABIC",)),
    "Hebr": ("Hebrew", ("HEBREW",)),
    "Deva": ("Devanagari", ("DEVANAGARI",)),
    "Beng": ("Bengali", ("BENGALI",)),
    "Thai": ("Thai", ("THAI",)),
    "Hans": ("Simplified Chinese characters", ("CJK",)),
    "Jpan": ("Japanese", ("CJK", "HIRAGANA", "KATAKANA")),
    "Kore": ("Hangul", ("HANGUL", "CJK")),
}
# Languages commonly written in more than one script: a translation prompt names the script
# (Table 1 of the paper has Serbian in Cyrillic; translators often answer in Latin).
MULTI_SCRIPT = frozenset({"sr"})


def prompt_name(code: str) -> str:
    """How a translation prompt names the language: with its script where that is a choice."""
    lang = get(code)
    if lang.code in MULTI_SCRIPT and lang.script in SCRIPTS:
        return f"{lang.name}, written in {SCRIPTS[lang.script][0]} script"
    return lang.name


def script_share(text: str, script: str) -> float | None:
    """The share of a text's letters written in ``script`` (None: no letters, or a script not in
    `SCRIPTS`)."""
    import unicodedata

    if script not in SCRIPTS:
        return None
    prefixes = SCRIPTS[script][1]
    letters = [unicodedata.name(c, "") for c in text if c.isalpha()]
    if not letters:
        return None
    return sum(n.startswith(prefixes) for n in letters) / len(letters)
