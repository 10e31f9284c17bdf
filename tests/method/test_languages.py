import pytest

from mlit.method import languages
from mlit.method.languages import PAPER_LANGUAGES, SAMPLE_LANGUAGES, SLAVIC


def test_registry_covers_the_papers_languages():
    assert len(PAPER_LANGUAGES) == 12
    assert set(SLAVIC) == {"ru", "sr", "hr", "sl", "pl", "sk", "cs"}
    assert len(SAMPLE_LANGUAGES) == 17
    for code in SAMPLE_LANGUAGES:
        lang = languages.get(code)
        assert lang.name and lang.family and lang.script
    assert languages.get("sr").script == "Cyrl"
    assert languages.get("he").family.startswith("Afro-Asiatic")


def test_unknown_code_names_it_and_lists_close_matches():
    with pytest.raises(languages.UnknownLanguageError) as err:
        languages.get("cz")
    message = str(err.value)
    assert "'cz'" in message
    assert "cs" in err.value.suggestions
    assert "Did you mean" in message


def test_names_suggest_their_code():
    with pytest.raises(languages.UnknownLanguageError) as err:
        languages.get("swahili")
    assert "sw" in err.value.suggestions


def test_parse_validates_dedupes_and_keeps_order():
    assert languages.parse("fi, en,ru,fi") == ("fi", "en", "ru")
    with pytest.raises(languages.UnknownLanguageError):
        languages.parse("en,xx")
    with pytest.raises(ValueError, match="no language"):
        languages.parse(" , ")


def test_users_can_register_more_languages():
    languages.register("eu", "Basque", "isolate", "Latn")
    assert languages.get("EU").name == "Basque"
    with pytest.raises(ValueError, match="invalid language code"):
        languages.register("e u!", "x", "y", "z")
