"""`mlit data paper`: the paper's data in one command.

The stages, in order:

1. select: LIMA's single-turn pairs and OpenAssistant's English first turns (train), AlpacaFarm
   without its OpenAssistant items (eval), from the hub or local files in the published shapes
   (`mlit.data.paper_sources`); the counts beside the paper's;
2. translate every English instruction and response into each language, through the cached
   translation path (`mlit.data.translation`), every translation checked before it is written
   (`mlit.data.translation_checks`); an example is written in a language only when all its fields
   passed, and a failed text is asked again on the next run;
3. write one dataset in the format every sweep's ``--data`` takes, and a data card beside it
   (``OUT.card.json``): sources and their revisions, counts per language and split, the
   translator and its prompt's hash, each check's pass rate over every reply the dataset's texts
   got (in this run or an earlier one), the wrappers taken off, the failures.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import polars as pl

from mlit.data import dataset, paper_sources, translation, translation_checks
from mlit.method import languages

# The paper's counts (§2): what `select` reports its own counts against.
PAPER_COUNTS = {"lima": 1000, "oasst": 3640, "alpaca_farm": dataset.PAPER_EVAL_SIZE}
DEFAULT_LANGUAGES = tuple(lang for lang in languages.PAPER_LANGUAGES if lang != "en")


@dataclass(frozen=True)
class Sources:
    lima: str = paper_sources.LIMA
    oasst: str = paper_sources.OASST
    alpaca_farm: str = paper_sources.ALPACA_FARM


def select(sources: Sources) -> tuple[pl.DataFrame, dict]:
    """(the English rows, the counts of each selection beside the paper's)."""
    lima = paper_sources.lima_rows(dataset.hf_dataset(sources.lima, "train"))
    oasst, oasst_counts = paper_sources.oasst_selection(dataset.hf_dataset(sources.oasst, "train"))
    alpaca = paper_sources.alpaca_farm_rows(
        dataset.hf_dataset(sources.alpaca_farm, "eval", "alpaca_farm_evaluation")
    )
    counts = {
        "lima": len(lima),
        "oasst": len(oasst),
        "oasst_filters": oasst_counts,
        "alpaca_farm": len(alpaca),
        "paper": PAPER_COUNTS,
    }
    return dataset.from_records(lima + oasst + alpaca, "paper sources"), counts


def render_counts(counts: dict) -> str:
    f = counts["oasst_filters"]
    return "\n".join(
        [
            f"LIMA single-turn pairs:         {counts['lima']:>6,} (paper: {PAPER_COUNTS['lima']:,})",
            f"OpenAssistant first turns:      {counts['oasst']:>6,} (paper: "
            f"{PAPER_COUNTS['oasst']:,}; of {f['roots']:,} English roots, "
            f"{f['dropped_deleted_rejected_or_unfinished']:,} deleted, rejected or unfinished, "
            f"{f['dropped_without_reply']:,} without a reply)",
            f"AlpacaFarm, no OpenAssistant:   {counts['alpaca_farm']:>6,} "
            f"(paper: {PAPER_COUNTS['alpaca_farm']:,})",
        ]
    )


def revision(source: str) -> dict:
    """Where a source came from: a local file with its sha256, or a hub name (with the
    revision `datasets` resolved, where it says)."""
    path = Path(source)
    if path.is_file():
        return {
            "file": str(path.resolve()),
            "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        }
    return {"hub": source, "revision": _hub_revision(source)}


def _hub_revision(name: str) -> str | None:
    try:
        from huggingface_hub import HfApi

        return HfApi().dataset_info(name).sha
    except Exception:  # offline, or a hub that does not say: the name alone is recorded
        return None


def card(
    sources: Sources,
    counts: dict,
    langs: tuple[str, ...],
    t: translation.Translator,
    outcome: translation.Outcome,
) -> dict:
    """The data card written beside the dataset."""
    frame = outcome.frame
    per = frame.group_by("lang", "split").agg(pl.col("example_id").n_unique().alias("examples"))
    by_lang: dict[str, dict[str, int]] = {}
    for r in per.sort("lang", "split").iter_rows(named=True):
        by_lang.setdefault(r["lang"], {})[r["split"]] = r["examples"]
    # The whole dataset written: texts from the store passed the same checks (their results are
    # stored with them) and the replies refused in any run are filed, so a rerun's card shows
    # what its dataset holds, not only what the rerun asked for.
    refused = outcome.failed_ever
    replies = outcome.texts_written + sum(refused.values())
    return {
        "sources": {name: revision(src) for name, src in asdict(sources).items()},
        "selection": counts,
        "languages": list(langs),
        "examples": by_lang,
        "translator": t.identity(),
        "prompt": translation.PROMPT,
        "checks": {
            "version": translation_checks.VERSION,
            "texts_written": outcome.texts_written,
            "texts_from_the_store": outcome.cached,
            "texts_requested": outcome.calls,
            "not_written": dict(outcome.failures.group_by("check").len().rows()),
            "replies_refused": refused,
            "pass_rate": {
                c: round(1 - refused.get(c, 0) / replies, 4) if replies else None
                for c in translation_checks.CHECKS
            },
            "unwrapped": outcome.unwrapped,
            "usage_estimated": outcome.usage_estimated,
        },
        "failures": outcome.failures.to_dicts(),
    }


def write(frame: pl.DataFrame, card_: dict, out: Path) -> tuple[Path, Path]:
    path = dataset.save(frame, out)
    card_path = path.with_name(path.name + ".card.json")
    card_path.write_text(json.dumps(card_, indent=1, ensure_ascii=False) + "\n")
    return path, card_path
