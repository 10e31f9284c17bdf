"""The translations the store holds, each with the checks it passed, and the replies that failed.

A translation is stored only after it passed `mlit.data.translation_checks`, under a key that
names the version of those checks (`translation_checks.VERSION`): what older checks let through
(a cut-off text, Portuguese written as Spanish, a preamble) is never taken for a translation
that passed today's. A text stored under an older version is asked again once (a cut-off
cannot be seen in a stored text: the provider's finish reason was not kept). Every reply that failed a check is filed too (``translation_failures``,
an error record, never a translation), so a data card describes every text of its dataset,
those from the store included, not just those asked in its own run.
"""

from __future__ import annotations

import hashlib
import time

from mlit.data import translation_checks
from mlit.store.artifacts import Store, content_key

KIND, FAILURES = "translations", "translation_failures"


def key(identity: dict, text: str, target: str) -> str:
    """A text's key: the request (translator, prompt, text, target) and the checks' version."""
    return content_key(
        "translation", identity, text, target, {"checks": translation_checks.VERSION}
    )


def record(text: str, cost_usd: float, unwrapped: list[str], usage_estimated: bool) -> dict:
    """A translation as it is stored: its text and the checks it passed."""
    return {
        "text": text,
        "cost_usd": cost_usd,
        "checks": {
            "version": translation_checks.VERSION,
            "passed": list(translation_checks.CHECKS),
            "unwrapped": unwrapped,  # wrappers taken off the reply (`unwrap`)
        },
        "usage_estimated": usage_estimated,
    }


def failure(key: str, lang: str, check: str, error: str, reply: str | None) -> tuple[str, dict]:
    """(record key, record) of one reply that failed a check: one per distinct reply."""
    digest = hashlib.sha256((reply or "").encode()).hexdigest()[:12]
    return f"{key}.{check}.{digest}", {
        "translation_key": key,
        "lang": lang,
        "check": check,
        "error": error[:500],
        "at": time.time(),
    }


def failures_of(store: Store, translation_keys: set[str]) -> dict[str, int]:
    """check -> replies that failed it, among every failure filed for these texts."""
    counts: dict[str, int] = {}
    for rec in store.records(FAILURES).values():
        if rec.get("translation_key") in translation_keys:
            counts[rec["check"]] = counts.get(rec["check"], 0) + 1
    return counts
