import pytest
from helpers import mean_rouge_l

from mlit.method.rouge import lcs_length, rouge_l, tokenize


def test_chinese_is_scored_per_character():
    assert tokenize("我爱北京") == ["我", "爱", "北", "京"]
    assert rouge_l("我爱北京", "我爱上海") == pytest.approx(0.5)


def test_hindi_keeps_vowel_signs_inside_words():
    assert tokenize("मैं घर जा रहा हूँ") == ["मैं", "घर", "जा", "रहा", "हूँ"]
    assert rouge_l("मैं घर जा रहा हूँ", "मैं स्कूल जा रहा हूँ") == pytest.approx(0.8)


def test_arabic_and_hebrew():
    assert rouge_l("أنا أحب القراءة", "أنا أحب الكتابة") == pytest.approx(2 / 3)
    # Hebrew with niqqud on one side: NFKC keeps the marks inside the word token.
    assert tokenize("שָׁלוֹם עולם") == ["שָׁלוֹם", "עולם"]
    assert rouge_l("אני אוהב לקרוא ספרים", "אני אוהב ספרים") == pytest.approx(2 * 0.75 * 1 / 1.75)


def test_latin_case_and_punctuation_are_ignored():
    assert rouge_l("The cat, sat!", "the cat sat") == 1.0
    assert rouge_l("", "anything") == 0.0


def test_lcs_and_mean():
    assert lcs_length(list("ABCBDAB"), list("BDCABA")) == 4
    assert mean_rouge_l(["a b", "x"], ["a b", "y"]) == pytest.approx(0.5)
    with pytest.raises(ValueError):
        mean_rouge_l(["a"], [])
