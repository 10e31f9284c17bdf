"""The sweep's own judge check (`--judge-check-data`): the judge of the run, on its evaluation
languages, against a preference set (`mlit.judging.check`), written into the run folder as
``judge_check.parquet`` for the results page. The demo checks its judge on the bundled sample.
"""

from __future__ import annotations

import time
from dataclasses import replace

import polars as pl

from mlit.judging import check
from mlit.planning.plan import Plan
from mlit.plumbing import console
from mlit.providers import pricing
from mlit.results.run_folder import RunFolder
from mlit.store.artifacts import Store

PER_LANGUAGE = 50  # pairs per evaluation language: an interval of about ±0.1 on agreement


def source(plan: Plan) -> str | None:
    """The preference set this sweep checks its judge on, if any: ``--judge-check-data``, or
    the bundled sample for the demo judge in a demo (a default never spends money on a paid
    judge, nor checks a judge the user brought; nor when ``--judge-check`` gives a result)."""
    cfg = plan.config
    if cfg.judge_check_data:
        return cfg.judge_check_data
    demo_judge = plan.judge.self_hosted and plan.judge.model_dir is None
    return check.SAMPLE if cfg.is_demo and demo_judge and not cfg.judge_check else None


def run_check(plan: Plan, store: Store, run: RunFolder, judge_url, judge_weights) -> dict:
    """Check the sweep's judge on its evaluation languages; the result goes into the run folder
    (its page shows it beside the scores). ``judge_url``: the served judge's URL, asked for only
    when a self-hosted judge has calls to make. A check that fails is said and recorded; the
    run's scores and report go on without it."""
    from mlit.judging.judge import JudgeError
    from mlit.providers import llm

    try:
        return _check(plan, store, run, judge_url, judge_weights)
    except (check.CheckError, JudgeError, pricing.BudgetError, llm.ProviderStop) as err:
        console.warn(f"[judge check] not done: {err}")
        return {"seconds": 0.0, "error": str(err)}


def _check(plan: Plan, store: Store, run: RunFolder, judge_url, judge_weights) -> dict:
    start = time.time()
    frame = check.load(source(plan))
    langs = [lang for lang in plan.experiment.eval_languages if lang in set(frame["language"])]
    if not langs:
        console.say(f"[judge check] {source(plan)} has none of this run's evaluation languages")
        return {"seconds": 0.0, "languages": 0}
    frame = check.select(frame, langs, PER_LANGUAGE, plan.config.seed)
    j = plan.judge.build(judge_weights)
    if plan.judge.self_hosted:
        j = replace(j, api_base=f"{judge_url()}/v1")
    budget = pricing.Budget(plan.judge.max_cost, plan.judge.prices())
    by_language, _, table = check.run(frame, j, store, budget, plan.config.n_boot, False)
    run.write_frame("judge_check", by_language)
    chance = by_language.filter(pl.col("within_chance"))["language"].to_list()
    if chance:
        console.say(
            f"[judge check] the judge is within noise of chance in {', '.join(chance)}: its "
            "scores there are marked on the results page"
        )
    return {
        "seconds": round(time.time() - start, 1),
        "languages": by_language.height,
        "pairs": int(by_language["pairs"].sum()),
        "calls": int(sum((~table[f"cached_{i}"].fill_null(True)).sum() for i in (1, 2))),
        "within_chance": ",".join(chance) or None,
    }
