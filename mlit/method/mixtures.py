"""Training mixtures: which example goes to which language.

A *recipe* says how a fixed budget of examples is shared between languages ("10% split evenly over
12 languages, the rest English"). *Building* a recipe over a list of example ids with a seed gives a
`Mixture`: every example id of the budget assigned to exactly one language, a dev set held out of
it, and a manifest with a hash of the assignment.

Rules (documented because results depend on them):

- **Multilingual share.** ``m = floor(P/100 * budget + 1/2)`` examples (round half up) are split
  evenly over the recipe's languages; the base language (English) gets the other ``budget - m``.
- **Even splits** use the largest-remainder method; ties go to the language whose code sorts first.
  Counts therefore always add up to the budget exactly.
- **Assignment.** The ids are ordered by ``sha256(f"{seed}:{id}")``; the first ``budget`` of them are
  used, and languages take consecutive blocks of that order, languages sorted by code. The assignment
  depends on nothing but (ids, counts, seed): the recipe's name, the experiment and the order in
  which languages were listed play no part. That is what makes "all six" of §3.4 and P=100 over the
  six languages of §3.3 the same mixture with the same hash, so the store trains it once.
- **Dev set.** ``dev_size`` examples are held out, split over languages in proportion to their counts
  (largest remainder), never taking a language's last training example; within a language, dev
  examples are the first by ``sha256(f"dev:{seed}:{id}")``.
- **Hash.** sha256 of the sorted (example_id, lang, role) triples. The seed and the name are not
  hashed themselves; the seed enters through the assignment.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction

from mlit.method import languages

PAPER_BUDGET = 4640  # 1,000 LIMA + 3,640 OpenAssistant pairs
PAPER_DEV_SIZE = 250


class MixtureError(ValueError):
    """A recipe or a build request that cannot give a valid mixture."""


@dataclass(frozen=True)
class Recipe:
    """How a budget is shared: ``percent`` of it evenly over ``languages``, the rest to ``base``."""

    name: str
    languages: tuple[str, ...]
    percent: float = 100.0
    base: str = "en"
    # Free-form labels used by tables (P, number of languages, order, ...), as sorted pairs.
    meta: tuple[tuple[str, str | int | float], ...] = ()

    def __post_init__(self) -> None:
        if not self.languages:
            raise MixtureError(f"recipe {self.name!r}: no languages")
        object.__setattr__(self, "languages", languages.parse(self.languages))
        object.__setattr__(self, "base", languages.get(self.base).code)
        if not isinstance(self.percent, int | float) or not 0 <= self.percent <= 100:
            raise MixtureError(
                f"recipe {self.name!r}: the multilingual percentage P must be between 0 and 100, "
                f"got {self.percent!r}"
            )

    def counts(self, budget: int) -> dict[str, int]:
        """Examples per language for a budget; the counts add up to the budget exactly."""
        if budget < 1:
            raise MixtureError(f"budget must be a positive number of examples, got {budget}")
        multilingual = math.floor(Fraction(str(self.percent)) * budget / 100 + Fraction(1, 2))
        shares = largest_remainder(multilingual, {lang: 1 for lang in self.languages})
        counts = dict(shares)
        counts[self.base] = counts.get(self.base, 0) + budget - multilingual
        return {lang: n for lang, n in sorted(counts.items()) if n > 0}

    def meta_dict(self) -> dict[str, str | int | float]:
        return dict(self.meta)


def monolingual(lang: str, **meta: str | int | float) -> Recipe:
    code = languages.get(lang).code
    return Recipe(f"mono-{code}", (code,), 100.0, code, _meta(meta))


def uniform(langs: Sequence[str], name: str, **meta: str | int | float) -> Recipe:
    codes = languages.parse(langs)
    return Recipe(name, codes, 100.0, codes[0], _meta(meta))


def fraction(
    percent: float, langs: Sequence[str], name: str, base: str = "en", **meta: str | int | float
) -> Recipe:
    return Recipe(name, languages.parse(langs), percent, base, _meta({"percent": percent, **meta}))


def _meta(meta: dict) -> tuple[tuple[str, str | int | float], ...]:
    return tuple(sorted(meta.items()))


def largest_remainder(total: int, weights: dict[str, int | float]) -> dict[str, int]:
    """Split ``total`` in proportion to ``weights``; remainders go largest first, ties by key."""
    if total < 0:
        raise MixtureError(f"cannot split a negative total ({total})")
    weight_sum = sum(Fraction(str(w)) for w in weights.values())
    if weight_sum <= 0:
        raise MixtureError("weights must add up to more than zero")
    exact = {k: Fraction(total) * Fraction(str(w)) / weight_sum for k, w in weights.items()}
    out = {k: math.floor(v) for k, v in exact.items()}
    left = total - sum(out.values())
    for k in sorted(exact, key=lambda k: (-(exact[k] - out[k]), k))[:left]:
        out[k] += 1
    return out


def bilingual_pairs(
    langs: Sequence[str], seed: int, keep: Sequence[tuple[str, str]] = ()
) -> list[tuple[str, str]]:
    """Split languages into pairs: the ``keep`` pairs as given, the rest at random (seeded,
    order-independent)."""
    codes = sorted(languages.parse(langs))
    kept = [tuple(sorted(languages.parse(p))) for p in keep if set(p) <= set(codes)]
    rest = [c for c in codes if not any(c in p for p in kept)]
    if len(rest) % 2:
        raise MixtureError(f"need an even number of languages to pair, got {len(rest)}")
    ordered = sorted(rest, key=lambda c: _digest(f"pairs:{seed}:{c}"))
    return kept + [tuple(sorted(ordered[i : i + 2])) for i in range(0, len(ordered), 2)]


def parse_pairs(specs: Sequence[str]) -> list[tuple[str, str]]:
    """'es-en' (or 'es+en') -> ('en', 'es'); every language in at most one pair."""
    pairs, seen = [], set()
    for spec in specs:
        parts = tuple(p for p in spec.replace("+", "-").split("-") if p)
        if len(parts) != 2 or parts[0] == parts[1]:
            raise MixtureError(f"--pairs {spec!r}: give two different languages, e.g. 'es-en'")
        pair = tuple(sorted(languages.parse(parts)))
        if seen & set(pair):
            raise MixtureError(f"--pairs: {', '.join(sorted(seen & set(pair)))} in two pairs")
        seen |= set(pair)
        pairs.append(pair)
    return pairs


# --------------------------------------------------------------------------------------------
# Building


@dataclass(frozen=True)
class Mixture:
    name: str
    seed: int
    budget: int
    counts: dict[str, int]  # per language, dev included
    dev_counts: dict[str, int]
    assignment: tuple[tuple[str, str], ...]  # (example_id, lang), sorted by example id
    dev_ids: frozenset[str]
    hash: str
    recipe: Recipe = field(repr=False)

    @property
    def languages(self) -> tuple[str, ...]:
        return tuple(sorted(self.counts))

    def train_pairs(self) -> list[tuple[str, str]]:
        return [(ex, lang) for ex, lang in self.assignment if ex not in self.dev_ids]

    def dev_pairs(self) -> list[tuple[str, str]]:
        return [(ex, lang) for ex, lang in self.assignment if ex in self.dev_ids]

    def manifest(self) -> dict:
        """What a run folder and the store record: enough to rebuild and check the mixture."""
        return {
            "name": self.name,
            "hash": self.hash,
            "seed": self.seed,
            "budget": self.budget,
            "counts": self.counts,
            "dev_counts": self.dev_counts,
            "recipe": {
                "languages": list(self.recipe.languages),
                "percent": self.recipe.percent,
                "base": self.recipe.base,
                "meta": self.recipe.meta_dict(),
            },
            "rules": "mlit.mixtures v1 (round-half-up share, largest remainder, sha256 order)",
        }


def default_dev_size(budget: int) -> int:
    """250 at paper scale (§3), about one example in twelve on small data, at least one."""
    return min(PAPER_DEV_SIZE, max(1, budget // 12))


def build(
    recipe: Recipe,
    example_ids: Iterable[str],
    budget: int | None = None,
    seed: int = 0,
    dev_size: int | None = None,
) -> Mixture:
    """Assign ``budget`` of the given example ids to languages following ``recipe``."""
    ids = sorted(set(example_ids))
    budget = len(ids) if budget is None else budget
    if budget > len(ids):
        raise MixtureError(
            f"budget of {budget} examples is larger than the data: only {len(ids)} training "
            "example ids are available"
        )
    counts = recipe.counts(budget)
    dev_size = default_dev_size(budget) if dev_size is None else dev_size
    dev_counts = _dev_counts(recipe.name, counts, dev_size)

    order = sorted(ids, key=lambda ex: _digest(f"{seed}:{ex}"))[:budget]
    assignment: list[tuple[str, str]] = []
    dev: set[str] = set()
    start = 0
    for lang, n in counts.items():  # counts are sorted by language code
        block = order[start : start + n]
        start += n
        assignment += [(ex, lang) for ex in block]
        by_dev_order = sorted(block, key=lambda ex: _digest(f"dev:{seed}:{ex}"))
        dev.update(by_dev_order[: dev_counts.get(lang, 0)])
    assignment.sort()
    triples = [[ex, lang, "dev" if ex in dev else "train"] for ex, lang in assignment]
    digest = hashlib.sha256(json.dumps(triples, separators=(",", ":")).encode()).hexdigest()
    return Mixture(
        name=recipe.name,
        seed=seed,
        budget=budget,
        counts=counts,
        dev_counts=dev_counts,
        assignment=tuple(assignment),
        dev_ids=frozenset(dev),
        hash=digest[:16],
        recipe=recipe,
    )


def _dev_counts(name: str, counts: dict[str, int], dev_size: int) -> dict[str, int]:
    budget = sum(counts.values())
    room = {lang: max(0, n - 1) for lang, n in counts.items()}  # keep >= 1 training example each
    if dev_size < 0:
        raise MixtureError(f"dev set size must be zero or more, got {dev_size}")
    if dev_size > sum(room.values()):
        raise MixtureError(
            f"mixture {name!r}: a dev set of {dev_size} examples would swallow the training set "
            f"(budget {budget}, counts {counts}); lower the dev size or raise the budget"
        )
    out = largest_remainder(dev_size, counts) if dev_size else dict.fromkeys(counts, 0)
    # Move any excess over a language's room to the languages with room left, largest first.
    excess = sum(max(0, out[lang] - room[lang]) for lang in out)
    out = {lang: min(out[lang], room[lang]) for lang in out}
    for lang in sorted(out, key=lambda lang: (-(room[lang] - out[lang]), lang)):
        give = min(excess, room[lang] - out[lang])
        out[lang] += give
        excess -= give
    return {lang: n for lang, n in out.items() if n}


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def placeholder_ids(n: int) -> list[str]:
    """Stand-in example ids for planning at a given budget without data (e.g. the paper's 4,640)."""
    return [f"ex-{i:05d}" for i in range(n)]


def materialize(mixture: Mixture, frame) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """The mixture's (instruction, response) pairs from a dataset: (training, dev).

    Fails with the missing (example_id, lang) pairs named when the dataset lacks a translation the
    mixture assigned.
    """
    import polars as pl

    train_rows = frame.filter(pl.col("split") == "train")
    wanted = pl.DataFrame(
        {
            "example_id": [ex for ex, _ in mixture.assignment],
            "lang": [lang for _, lang in mixture.assignment],
            "role": ["dev" if ex in mixture.dev_ids else "train" for ex, _ in mixture.assignment],
        }
    )
    joined = wanted.join(train_rows, on=["example_id", "lang"], how="left").sort("example_id")
    missing = joined.filter(pl.col("instruction").is_null() | pl.col("response").is_null())
    if missing.height:
        pairs = [f"{e}[{lang}]" for e, lang in missing.select("example_id", "lang").head(8).rows()]
        raise MixtureError(
            f"mixture {mixture.name!r}: the dataset lacks {missing.height} assigned training "
            f"row(s), e.g. {', '.join(pairs)}"
        )
    pick = lambda role: [  # noqa: E731
        (i, r)
        for i, r in joined.filter(pl.col("role") == role).select("instruction", "response").rows()
    ]
    return pick("train"), pick("dev")
