from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlit.data import dataset
from mlit.method import experiments, languages, mixtures
from mlit.method.languages import LANGUAGE_ORDERS, SIX_TRAINING, SIX_UNSEEN

PAPER_IDS = mixtures.placeholder_ids(mixtures.PAPER_BUDGET)
SAMPLE_IDS = dataset.train_ids(dataset.sample())
SCALES = {"paper": PAPER_IDS, "sample": SAMPLE_IDS}


def _check_mixture(m: mixtures.Mixture, ids: list[str]) -> None:
    assert sum(m.counts.values()) == m.budget == len(ids)
    assigned = [ex for ex, _ in m.assignment]
    assert len(assigned) == len(set(assigned)) == m.budget  # each example exactly once
    assert set(assigned) <= set(ids)
    assert Counter(lang for _, lang in m.assignment) == Counter(m.counts)
    train = {ex for ex, _ in m.train_pairs()}
    dev = {ex for ex, _ in m.dev_pairs()}
    assert train.isdisjoint(dev) and train | dev == set(assigned)
    assert len(dev) == sum(m.dev_counts.values())
    for lang, n in m.dev_counts.items():
        assert n < m.counts[lang]  # every language keeps training examples


@pytest.mark.parametrize("scale", sorted(SCALES))
@pytest.mark.parametrize("name", experiments.NAMES)
@settings(max_examples=4, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), other=st.integers(0, 2**31 - 1))
def test_mixture_properties(name, scale, seed, other):
    ids = SCALES[scale]
    exp = experiments.get(name, seed=0)
    first = experiments.build_all(exp, ids, seed=seed, include_baselines=True)
    again = experiments.build_all(exp, ids, seed=seed, include_baselines=True)
    for m, m2 in zip(first, again, strict=True):
        _check_mixture(m, ids)
        assert m.hash == m2.hash and m.assignment == m2.assignment
    if other != seed:
        for m, m3 in zip(
            first, experiments.build_all(exp, ids, seed=other, include_baselines=True), strict=True
        ):
            assert m.hash != m3.hash
            assert (m.assignment, m.dev_ids) != (m3.assignment, m3.dev_ids)


@settings(max_examples=40, deadline=None)
@given(
    budget=st.integers(1, 5000),
    percent=st.floats(0, 100, allow_nan=False),
    k=st.integers(1, 12),
)
def test_counts_always_sum_to_the_budget(budget, percent, k):
    recipe = mixtures.fraction(percent, languages.PAPER_LANGUAGES[:k], "r")
    counts = recipe.counts(budget)
    assert sum(counts.values()) == budget
    shares = [n for lang, n in counts.items() if lang != "en"]
    assert not shares or max(shares) - min(shares) <= 1  # an even split


def test_language_count_orders_are_the_papers():
    exp = experiments.get("language_count")
    assert LANGUAGE_ORDERS == (
        ("fi", "en", "ru", "it", "sw", "ar"),
        ("sw", "it", "ar", "en", "fi", "ru"),
        ("it", "fi", "en", "ar", "ru", "sw"),
    )
    sets = {frozenset(r.languages) for r in exp.recipes}
    for order in LANGUAGE_ORDERS:
        for k in range(1, 7):
            assert frozenset(order[:k]) in sets
    assert len(exp.recipes) == 16  # 3 orders x 5 sizes + "all six" shared by the three orders
    all_six = next(r for r in exp.recipes if r.name == "count-all-six")
    assert set(all_six.languages) == set(SIX_TRAINING)
    assert all_six.meta_dict() == {"k": 6, "orders": "1,2,3"}
    assert exp.eval_languages == SIX_UNSEEN
    assert set(SIX_UNSEEN) == {"cs", "et", "he", "hi", "es", "zh"}


def test_p1_at_paper_budget_has_about_forty_multilingual_examples():
    recipe = next(r for r in experiments.get("multilingual_fraction").recipes if r.percent == 1)
    counts = recipe.counts(mixtures.PAPER_BUDGET)
    non_english = sum(n for lang, n in counts.items() if lang != "en")
    assert 36 <= non_english <= 46
    assert len(counts) == 12


def test_one_logical_mixture_has_one_hash_across_experiments():
    def by_name(exp_name):
        exp = experiments.get(exp_name)
        return {m.name: m for m in experiments.build_all(exp, PAPER_IDS, seed=3)}

    count, unseen = by_name("language_count"), by_name("unseen_languages")
    assert count["count-all-six"].hash == unseen["frac6-p100"].hash
    assert count["count-fi"].hash == by_name("monolingual")["mono-fi"].hash
    p0 = mixtures.build(mixtures.fraction(0, languages.PAPER_LANGUAGES, "p0"), PAPER_IDS, seed=3)
    assert p0.hash == by_name("monolingual")["mono-en"].hash
    assert by_name("monolingual")["mono-ru"].hash == by_name("language_similarity")["mono-ru"].hash
    # ... and different mixtures differ.
    assert len({m.hash for m in count.values()}) == len(count)


def test_bilingual_pairs_cover_every_language_once_and_follow_the_seed():
    exp = experiments.get("bilingual", seed=0)
    langs = [lang for r in exp.recipes for lang in r.languages]
    assert sorted(langs) == sorted(languages.PAPER_LANGUAGES)
    assert all(r.counts(100) == dict.fromkeys(r.languages, 50) for r in exp.recipes)
    evaluated = {lang for r, lang in exp.eval_pairs() if r is exp.recipes[0]}
    assert len(evaluated) == 10 and evaluated.isdisjoint(exp.recipes[0].languages)
    other = experiments.get("bilingual", seed=1)
    assert {r.languages for r in exp.recipes} != {r.languages for r in other.recipes}


def test_experiments_declare_baselines():
    assert experiments.get("base_model").baseline_recipes() == ()
    mono = experiments.get("language_count")
    names = {r.name for r in mono.required_recipes()}
    assert {f"mono-{lang}" for lang in SIX_UNSEEN} <= names
    assert len(names) == 16 + 6


def test_dev_set_scales_and_stays_in_the_mixtures_languages():
    m = mixtures.build(mixtures.uniform(["en", "fi"], "u"), PAPER_IDS, seed=0)
    assert sum(m.dev_counts.values()) == mixtures.PAPER_DEV_SIZE
    assert m.dev_counts == {"en": 125, "fi": 125}
    small = mixtures.build(mixtures.uniform(["en", "fi"], "u"), SAMPLE_IDS, seed=0)
    assert 1 <= len(small.dev_ids) < 10


def test_bad_inputs_get_clear_errors():
    with pytest.raises(languages.UnknownLanguageError, match="'xx'"):
        mixtures.uniform(["en", "xx"], "bad")
    with pytest.raises(mixtures.MixtureError, match="between 0 and 100, got 150"):
        mixtures.fraction(150, ["en", "fi"], "bad")
    with pytest.raises(mixtures.MixtureError, match="between 0 and 100"):
        mixtures.fraction(-1, ["en", "fi"], "bad")
    with pytest.raises(mixtures.MixtureError, match="larger than the data: only 48"):
        mixtures.build(mixtures.monolingual("en"), SAMPLE_IDS, budget=4640)
    with pytest.raises(mixtures.MixtureError, match="swallow the training set"):
        mixtures.build(mixtures.monolingual("en"), SAMPLE_IDS, dev_size=48)
    with pytest.raises(ValueError, match="unknown experiment 'nope'"):
        experiments.get("nope")
