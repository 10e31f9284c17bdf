"""Each experiment of the paper as data: its mixtures, evaluation languages and baseline rule.

An IF score compares a model with a *baseline* on one evaluation language. The paper's rule is the
model tuned monolingually on that language (``baseline="monolingual"``); Appendix F compares against
the untuned base model instead (``baseline="base"``). The baseline models an experiment needs are
listed by `Experiment.required_recipes`, so a sweep trains them too (once, through the store).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from mlit.method import languages, mixtures
from mlit.method.languages import LANGUAGE_ORDERS, PAPER_LANGUAGES, SIX_TRAINING, SIX_UNSEEN, SLAVIC
from mlit.method.mixtures import Recipe

PERCENTS: tuple[int, ...] = (1, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100)
BASE = "base"  # the served name of the untuned base model (Appendix F's baseline)
BASELINE_MONOLINGUAL, BASELINE_BASE = "monolingual", "base"  # what `Experiment.baseline` takes


def monolingual_name(lang: str) -> str:
    """The served name of the model tuned on ``lang`` alone."""
    return mixtures.monolingual(lang).name


@dataclass(frozen=True)
class Experiment:
    name: str
    title: str
    section: str
    figure: str
    recipes: tuple[Recipe, ...]
    eval_languages: tuple[str, ...]
    baseline: str = BASELINE_MONOLINGUAL  # or BASELINE_BASE
    # Bilingual tuning (§3.4) evaluates each model only on languages it was not tuned on.
    exclude_training_languages: bool = False
    # Models scored as candidates for comparison only (Fig. 6 sets each pair against the two
    # monolingual models of its languages).
    references: tuple[Recipe, ...] = ()
    # Which table (and figure) its scores make: matrix | fraction | count | bilingual | pretraining.
    table_kind: str = "matrix"

    @property
    def scores_against_base(self) -> bool:
        """Scores against the untuned base model (App. F), not the monolingual models: the base
        model is then one more served model, and no baseline is trained."""
        return self.baseline == BASELINE_BASE

    def baseline_for(self, lang: str) -> str:
        """The model an answer in ``lang`` is compared against (the IF score's reference)."""
        return BASE if self.scores_against_base else monolingual_name(lang)

    def answering(self) -> dict[str, set[str]]:
        """Served name -> the evaluation languages it must answer (candidates and baselines)."""
        need: dict[str, set[str]] = {}
        for recipe, lang in self.eval_pairs():
            need.setdefault(recipe.name, set()).add(lang)
            need.setdefault(self.baseline_for(lang), set()).add(lang)
        return need

    def comparisons(self) -> list[tuple[str, str, str]]:
        """(candidate, baseline, eval language): every side-by-side comparison the scores need."""
        return [(r.name, self.baseline_for(lang), lang) for r, lang in self.eval_pairs()]

    @property
    def table_stem(self) -> str:
        """File stem of its main table and figure, e.g. ``fig5_language_count``."""
        return f"{self.figure.lower().replace('. ', '').replace(' ', '')}_{self.name}"

    def eval_pairs(self) -> list[tuple[Recipe, str]]:
        """(model recipe, eval language) pairs that generation and judging cover."""
        out = []
        for recipe in (*self.recipes, *self.references):
            for lang in self.eval_languages:
                if self.exclude_training_languages and lang in recipe.languages:
                    continue
                out.append((recipe, lang))
        return out

    def baseline_recipes(self) -> tuple[Recipe, ...]:
        if self.scores_against_base:
            return ()
        return tuple(mixtures.monolingual(lang) for lang in self.eval_languages)

    def required_recipes(self) -> tuple[Recipe, ...]:
        """The experiment's mixtures plus the baseline models its scores need, without repeats."""
        seen: dict[str, Recipe] = {}
        for recipe in (*self.recipes, *self.references, *self.baseline_recipes()):
            seen.setdefault(recipe.name, recipe)
        return tuple(seen.values())

    def restricted(self, langs: tuple[str, ...]) -> Experiment:
        """The same experiment over fewer languages: recipes whose languages all lie in ``langs``,
        and only those evaluation languages. Used by reduced demo runs."""
        keep = set(languages.parse(langs))
        inside = lambda r: set(r.languages) | {r.base} <= keep  # noqa: E731
        recipes = tuple(r for r in self.recipes if inside(r))
        evals = tuple(lang for lang in self.eval_languages if lang in keep)
        if not recipes or not evals:
            raise ValueError(
                f"experiment {self.name!r} has no mixture or eval language left within "
                f"{sorted(keep)}; its languages are {sorted(self.all_languages())}"
            )
        shown = ", ".join(sorted(keep & self.all_languages()))
        return replace(
            self,
            # The paper's title names its languages; a reduced run says which ones it kept.
            title=f"{self.title} (this run: {shown} only)",
            recipes=recipes,
            eval_languages=evals,
            references=tuple(r for r in self.references if inside(r)),
        )

    def all_languages(self) -> set[str]:
        langs = set(self.eval_languages)
        for r in self.recipes:
            langs |= set(r.languages) | {r.base}
        return langs


def _mono(langs: tuple[str, ...]) -> tuple[Recipe, ...]:
    return tuple(mixtures.monolingual(lang) for lang in langs)


def _monolingual(seed: int) -> Experiment:
    return Experiment(
        "monolingual",
        "Monolingual tuning in each of 12 languages",
        "§3.1",
        "Fig. 1",
        _mono(PAPER_LANGUAGES),
        PAPER_LANGUAGES,
    )


def _fraction_recipes(langs: tuple[str, ...], tag: str) -> tuple[Recipe, ...]:
    return tuple(mixtures.fraction(p, langs, f"{tag}-p{p:03d}") for p in PERCENTS)


def _multilingual_fraction(seed: int) -> Experiment:
    return Experiment(
        "multilingual_fraction",
        "P% of the examples spread evenly over 12 languages, the rest English",
        "§3.2",
        "Fig. 3",
        _fraction_recipes(PAPER_LANGUAGES, "frac12"),
        PAPER_LANGUAGES,
        table_kind="fraction",
    )


def _unseen_languages(seed: int) -> Experiment:
    return Experiment(
        "unseen_languages",
        "P% spread over 6 languages (en ar fi it ru sw), 6 languages unseen",
        "§3.3",
        "Fig. 4",
        _fraction_recipes(SIX_TRAINING, "frac6"),
        PAPER_LANGUAGES,
        table_kind="fraction",
    )


def _language_count(seed: int) -> Experiment:
    by_set: dict[frozenset[str], tuple[tuple[str, ...], int, list[int]]] = {}
    for order_no, order in enumerate(LANGUAGE_ORDERS, start=1):
        for k in range(1, len(order) + 1):
            subset = order[:k]
            entry = by_set.setdefault(frozenset(subset), (subset, k, []))
            entry[2].append(order_no)
    recipes = []
    for subset, k, orders in by_set.values():
        name = "count-all-six" if k == len(SIX_TRAINING) else "count-" + "-".join(subset)
        recipes.append(mixtures.uniform(subset, name, k=k, orders=",".join(str(o) for o in orders)))
    return Experiment(
        "language_count",
        "1 to 6 tuning languages along three orders; scores on the 6 unseen languages",
        "§3.4",
        "Fig. 5",
        tuple(recipes),
        SIX_UNSEEN,
        table_kind="count",
    )


# The one pair the paper names (Fig. 6, top left); the rest are paired at random by seed.
NAMED_PAIR = ("es", "en")


def _bilingual(seed: int, pairs: tuple[str, ...] | None = None) -> Experiment:
    if pairs:
        pairs = mixtures.parse_pairs(pairs)
    else:
        pairs = mixtures.bilingual_pairs(PAPER_LANGUAGES, seed, keep=[NAMED_PAIR])
    recipes = tuple(mixtures.uniform(pair, f"bi-{pair[0]}-{pair[1]}") for pair in pairs)
    return Experiment(
        "bilingual",
        "Random language pairs, 50/50; each scored on the other 10 languages",
        "§3.4",
        "Fig. 6",
        recipes,
        PAPER_LANGUAGES,
        exclude_training_languages=True,
        references=_mono(PAPER_LANGUAGES),
        table_kind="bilingual",
    )


def _language_similarity(seed: int) -> Experiment:
    return Experiment(
        "language_similarity",
        "Monolingual tuning in 7 Slavic languages, a 7x7 matrix",
        "§4.1",
        "Fig. 7",
        _mono(SLAVIC),
        SLAVIC,
    )


def _pretraining_fraction(seed: int) -> Experiment:
    return Experiment(
        "pretraining_fraction",
        "Cross-lingual score of each monolingual model against its pretraining share",
        "§4.2",
        "Fig. 8",
        _mono(PAPER_LANGUAGES),
        PAPER_LANGUAGES,
        table_kind="pretraining",
    )


def _base_model(seed: int) -> Experiment:
    return Experiment(
        "base_model",
        "Monolingual models scored against the untuned base model",
        "App. F",
        "Fig. 10",
        _mono(PAPER_LANGUAGES),
        PAPER_LANGUAGES,
        baseline=BASELINE_BASE,
    )


_BUILDERS: dict[str, Callable[[int], Experiment]] = {
    "monolingual": _monolingual,
    "multilingual_fraction": _multilingual_fraction,
    "unseen_languages": _unseen_languages,
    "language_count": _language_count,
    "bilingual": _bilingual,
    "language_similarity": _language_similarity,
    "pretraining_fraction": _pretraining_fraction,
    "base_model": _base_model,
}
NAMES: tuple[str, ...] = tuple(_BUILDERS)


def get(name: str, seed: int = 0, pairs: tuple[str, ...] | None = None) -> Experiment:
    """An experiment by name; ``pairs`` ('es-en', ...) chooses the bilingual experiment's pairs."""
    key = name.strip().lower().replace("-", "_")
    if key not in _BUILDERS:
        raise ValueError(f"unknown experiment {name!r}; choose one of: {', '.join(NAMES)}")
    if pairs and key != "bilingual":
        raise ValueError(f"--pairs is for the bilingual experiment, not {key}")
    return _bilingual(seed, pairs) if key == "bilingual" else _BUILDERS[key](seed)


def build_all(
    experiment: Experiment,
    example_ids: list[str],
    budget: int | None = None,
    seed: int = 0,
    dev_size: int | None = None,
    include_baselines: bool = False,
) -> list[mixtures.Mixture]:
    recipes = experiment.required_recipes() if include_baselines else experiment.recipes
    return [mixtures.build(r, example_ids, budget, seed, dev_size) for r in recipes]
