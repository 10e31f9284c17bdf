"""The dataset-wide quality report of a translated dataset (`mlit translate` prints it).

Each translation already passed `mlit.data.translation_checks` before it was written; this reads the
whole parallel dataset afterwards and flags what only the dataset shows: language-ID mismatches,
length ratios far from the rest of the language's, empty or untranslated texts, leftover prompt
text. One row per flag, with the example id.
"""

from __future__ import annotations

import math

import polars as pl

from mlit.data import dataset, translation_checks
from mlit.data.translation import PLACEHOLDER, protect


def quality_report(parallel: pl.DataFrame, source_lang: str = "en") -> pl.DataFrame:
    """Flag suspicious translations: language-ID mismatch, length-ratio outliers, empty or
    untranslated text, leftover prompt text. One row per flag, with the example id."""
    from mlit.data import langid

    src = parallel.filter(pl.col("lang") == source_lang).select(
        "example_id", pl.col("instruction").alias("src_i"), pl.col("response").alias("src_r")
    )
    other = parallel.filter(pl.col("lang") != source_lang).join(src, on="example_id", how="left")
    flags = []
    ratios: dict[str, list[tuple[str, str, float]]] = {}
    for r in other.iter_rows(named=True):
        for field, source in (("instruction", r["src_i"]), ("response", r["src_r"])):
            text = r[field]
            if source is None:
                continue
            where = {"example_id": r["example_id"], "lang": r["lang"], "field": field}
            if not text or not text.strip():
                flags.append({**where, "check": "empty", "detail": "empty translation"})
                continue
            if dataset.normalize_text(text) == dataset.normalize_text(source):
                flags.append(
                    {**where, "check": "untranslated", "detail": "identical to the source"}
                )
                continue
            leftover = [
                s
                for s in translation_checks.LEFTOVERS
                if s.lower() in text.lower() and s.lower() not in source.lower()
            ]
            if leftover or PLACEHOLDER.search(text):
                flags.append(
                    {
                        **where,
                        "check": "leftover_prompt",
                        "detail": f"contains {leftover or ['a placeholder']}",
                    }
                )
            masked, _ = protect(text)
            if len(masked) >= 20:  # language ID is unreliable on very short texts
                found, score = langid.detect(masked)
                if found != r["lang"]:
                    flags.append(
                        {
                            **where,
                            "check": "language_id",
                            "detail": f"identified as {found} ({score:.2f})",
                        }
                    )
            ratios.setdefault(r["lang"], []).append(
                (r["example_id"], field, math.log(max(len(text), 1) / max(len(source), 1)))
            )
    for lang, items in ratios.items():
        values = [v for *_, v in items]
        mean = sum(values) / len(values)
        sd = (sum((v - mean) ** 2 for v in values) / max(1, len(values) - 1)) ** 0.5
        for ex, field, v in items:
            ratio = math.exp(v)
            z = (v - mean) / sd if sd > 0 else 0.0
            if ratio < 0.25 or ratio > 4 or (len(values) >= 8 and abs(z) > 3):
                flags.append(
                    {
                        "example_id": ex,
                        "lang": lang,
                        "field": field,
                        "check": "length_ratio",
                        "detail": f"length ratio {ratio:.2f} (z={z:.1f})",
                    }
                )
    return pl.DataFrame(
        flags,
        schema={
            "example_id": pl.String,
            "lang": pl.String,
            "field": pl.String,
            "check": pl.String,
            "detail": pl.String,
        },
    ).sort("check", "example_id", "lang")
