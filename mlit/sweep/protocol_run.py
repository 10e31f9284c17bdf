"""What a run did, read for the protocol report from its own records: the trainer's arguments
and schedule as they ran (rank 0's `mlit.training.trainer_arguments.as_run`, in ``train.parquet``), the
decoding of the bodies the clients sent and the prompts' order (``run.json``'s phases), the
instructions in ``generations.parquet`` and ``judgments.parquet``, and the averages of the tables
as written. An item the run did not exercise (every model from an older store, every answer
cached) has no reading here: the dry run's stands, and says so.
"""

from __future__ import annotations

import json

import polars as pl

from mlit.planning.plan import Plan
from mlit.results.run_folder import RunFolder
from mlit.sweep.protocol_readings import (
    Reading,
    baseline_text,
    counts_text,
    instructions_text,
    judge_decoding_text,
    judge_rule,
    order_text,
    sampling_text,
    shares_text,
)


def observed(plan: Plan, run: RunFolder, phases: dict) -> dict[str, Reading]:
    """Each item as the run did it (``phases``: run.json's phase summaries)."""
    out = {}
    out.update(_training(run))
    out.update(_sent(plan, phases))
    out.update(_tables_seen(plan, run))
    return out


def _training(run: RunFolder) -> dict[str, Reading]:
    """From rank 0's record of each model trained (stored models keep the record of their own
    training run)."""
    if not run.has_frame("train"):
        return {}
    frame = run.frame("train")
    if "as_run" not in frame.columns:
        return {}
    records = [json.loads(r) for r in frame["as_run"].drop_nulls().to_list()]
    if not records:
        return {}
    note = f"as {len(records)} model(s) trained"
    missing = frame.height - len(records)
    if missing:
        note += f"; {missing} stored before mlit recorded it"
    schedules = sorted({r["schedule"] for r in records})
    return {
        "training steps": Reading(counts_text(r["steps"] for r in records), note=note),
        "learning rate": Reading("; ".join(schedules), note=note),
        "batch": Reading(counts_text(r["batch"] for r in records), note=note),
        "training examples per mixture": _fewer(
            records, "trained_rows", "train_rows", "training rows trained", note
        )
        or Reading(counts_text(r["train_rows"] + r["dev_rows"] for r in records), note=note),
        "dev set per mixture": _fewer(
            records, "dev_scored", "dev_rows", "dev examples scored", note
        )
        or Reading(counts_text(r["dev_rows"] for r in records), note=note),
    }


def _fewer(records, used: str, given: str, what: str, note: str) -> Reading | None:
    """Training that used fewer rows than it was handed (a cap or a filter inside it)."""
    short = [r for r in records if r[used] is not None and r[used] < r[given]]
    if not short:
        return None
    r = short[0]
    return Reading(f"{r[used]} of {r[given]} {what}", "differs", note)


def _sent(plan: Plan, phases: dict) -> dict[str, Reading]:
    """What the generation client and the judge sent (the phases' records of it)."""
    out = {}
    generate = phases.get("generate") or {}
    if generate.get("sampling_sent"):
        total = sum(generate["sampling_sent"].values())
        out["sampling"] = Reading(
            sampling_text(generate["sampling_sent"]), note=f"read from {total} requests sent"
        )
    if generate.get("instructions"):
        out["inference inputs"] = Reading(generate["instructions"])
    sent = (phases.get("judge") or {}).get("sent") or {}
    if not sent:
        return out
    judge = plan.judge.build()  # once: a self-hosted judge's identity hashes its weights
    if sent.get("template_sha256"):
        out["judge rule"] = judge_rule(sent["template_sha256"], judge)
    seen = sent.get("seen") or {}
    if seen.get("requests"):
        total = sum(seen["requests"].values())
        out["judge decoding"] = Reading(
            judge_decoding_text(seen["requests"], judge.parser),
            note=f"read from {total} calls sent",
        )
    if seen.get("candidate_positions"):
        out["order swap"] = order_text(seen["candidate_positions"])
    return out


def _tables_seen(plan: Plan, run: RunFolder) -> dict[str, Reading]:
    """The instructions answered and judged, the baselines judged against, and the tables as
    written beside the run's scores."""
    from mlit.sweep import protocol_tables

    out = {}
    exp = plan.experiment
    if run.has_frame("generations") and run.has_frame("judgments"):
        gens = run.frame("generations").select("model", "lang", "example_id")
        judged = run.frame("judgments").filter(~pl.col("self_comparison"))
        pairs = judged.select("candidate", "eval_lang", "example_id")
        out["evaluation instructions per language"] = Reading(
            instructions_text(gens.rows(), pairs.rows()),
            note="read from generations.parquet and judgments.parquet",
        )
        compared = set(judged.select("baseline", "eval_lang").unique().rows())
        out["baseline"] = Reading(baseline_text(plan, compared), note="read from judgments.parquet")
    if run.has_frame("scores"):
        cells = protocol_tables.cells_of(run.frame("scores"))
        text, ok = protocol_tables.averages(exp, run.tables, cells)
        out["averages"] = Reading(text, "ok" if ok else "differs", "read from the tables written")
        if exp.table_kind == "pretraining":
            shares = run.shares()
            documents = shares is not None and not shares[1].startswith("proxy")
            english = protocol_tables.english_in_correlation(run.tables, exp)
            out["§4.2 shares"] = shares_text(documents, english)
    return out
