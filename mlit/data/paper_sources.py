"""The paper's English sources: LIMA and OpenAssistant first turns (train), AlpacaFarm (eval).

Each loader takes the records of a Hugging Face dataset (`mlit.data.dataset.hf_dataset`: a hub name or a
local file shaped like it) and returns mlit's five-column rows, applying the paper's selection.
"""

from __future__ import annotations

from collections.abc import Iterable

import polars as pl

from mlit.data.dataset import from_records, hf_dataset


def lima_rows(records: Iterable[dict]) -> list[dict]:
    """LIMA's training file -> English train rows.

    LIMA's 1,030 training rows hold 1,000 single-turn pairs and 30 multi-turn dialogues; the paper
    uses the 1,000 pairs, so only rows with exactly one instruction and one reply are kept.
    """
    out = []
    for i, rec in enumerate(records):
        turns = rec.get("conversations") or []
        if len(turns) != 2:
            continue
        out.append(_row(f"lima-{i:04d}", "train", turns[0], turns[1]))
    return out


def oasst_rows(messages: Iterable[dict], lang: str = "en") -> list[dict]:
    """OpenAssistant message table -> the first prompt and first reply of each conversation tree
    (`oasst_selection` without its counts)."""
    return oasst_selection(messages, lang)[0]


def _usable(m: dict) -> bool:
    # Deleted messages and those reviewers rejected are not part of the released conversations;
    # a tree that is not "ready_for_export" was never finished.
    return (
        not m.get("deleted", False)
        and m.get("review_result", True) is not False
        and m.get("tree_state", "ready_for_export") == "ready_for_export"
    )


def oasst_selection(messages: Iterable[dict], lang: str = "en") -> tuple[list[dict], dict]:
    """(rows, counts): each English conversation root of the train split with its first reply.

    The paper keeps 3,640 first turns without saying how it picked them. mlit's rule: a root
    prompt in ``lang`` that is not deleted, not rejected by review and in a finished tree
    (`_usable`), with its best-ranked usable assistant reply (rank 0 is the reply rankers
    preferred; an unranked reply comes after ranked ones, then by message id). The counts say
    how many roots each filter dropped, so a run can report how close it lands to 3,640.
    """
    messages = list(messages)
    english = [
        m
        for m in messages
        if m.get("parent_id") is None and m.get("role") == "prompter" and m.get("lang") == lang
    ]
    roots = {m["message_id"]: m for m in english if _usable(m)}
    best: dict[str, tuple[tuple, dict]] = {}
    for m in messages:
        parent = m.get("parent_id")
        if parent in roots and m.get("role") == "assistant" and _usable(m):
            rank = m.get("rank")
            sort_key = (rank is None, rank if rank is not None else 0, m["message_id"])
            if parent not in best or sort_key < best[parent][0]:
                best[parent] = (sort_key, m)
    out = []
    for root_id, root in roots.items():
        if root_id in best:
            reply = best[root_id][1]
            tree = root.get("message_tree_id", root_id)
            out.append(_row(f"oasst-{tree}", "train", root["text"], reply["text"]))
    counts = {
        "roots": len(english),
        "dropped_deleted_rejected_or_unfinished": len(english) - len(roots),
        "dropped_without_reply": len(roots) - len(out),
        "kept": len(out),
    }
    return sorted(out, key=lambda r: r["example_id"]), counts


def alpaca_farm_rows(records: Iterable[dict]) -> list[dict]:
    """AlpacaFarm evaluation set -> English eval rows, without its OpenAssistant-sourced items.

    AlpacaFarm's 805 items come from five sources; the paper drops the 188 taken from
    OpenAssistant (they could overlap with training data) and keeps 617.
    """
    out = []
    for i, rec in enumerate(records):
        if rec.get("dataset") == "oasst":
            continue
        instruction = rec["instruction"].strip()
        if rec.get("input"):
            instruction = f"{instruction}\n\n{rec['input'].strip()}"
        out.append(_row(f"alpacafarm-{i:04d}", "eval", instruction, rec.get("output")))
    return out


def _row(example_id: str, split_name: str, instruction: str, response: str | None) -> dict:
    return {
        "example_id": example_id,
        "lang": "en",
        "split": split_name,
        "instruction": instruction.strip(),
        "response": response.strip() if response else response,
    }


LIMA = "GAIR/lima"
OASST = "OpenAssistant/oasst1"
ALPACA_FARM = "tatsu-lab/alpaca_farm"


def load_paper_sources(
    lima: str = LIMA, oasst: str = OASST, alpaca_farm: str = ALPACA_FARM
) -> pl.DataFrame:
    """The paper's English data: LIMA + OpenAssistant (train) and AlpacaFarm (eval).

    Each argument is a hub name or a local file shaped like that dataset.
    """
    rows = lima_rows(hf_dataset(lima, "train"))
    rows += oasst_rows(hf_dataset(oasst, "train"))
    rows += alpaca_farm_rows(hf_dataset(alpaca_farm, "eval", "alpaca_farm_evaluation"))
    return from_records(rows, "paper sources")
