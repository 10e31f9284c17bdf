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


def pairs(plan: Plan, data: str) -> pl.DataFrame:
    """The pairs the sweep checks its judge on: ``data``'s in the run's evaluation languages,
    at most `PER_LANGUAGE` each (empty when it has none of them)."""
    frame = check.load(data)
    langs = [lang for lang in plan.experiment.eval_languages if lang in set(frame["language"])]
    return check.select(frame, langs, PER_LANGUAGE, plan.config.seed) if langs else frame.clear()


def cost(plan: Plan, store: Store) -> float:
    """The check's cost at most, for the sweep's preflight budget: 0 without a check, for a
    self-hosted judge, or for a hub set (read when the run gets there, priced then against
    what judging left of --max-cost)."""
    from mlit.judging.judge import stored_verdicts

    data = source(plan)
    if data is None or not check.is_local(data) or plan.judge.self_hosted:
        return 0.0
    chosen = check.pairs_of(pairs(plan, data))
    j = plan.judge.build()
    stored = stored_verdicts(chosen, j, store)[1]
    return check.estimate(chosen, j, stored, pricing.Budget(None, plan.judge.prices()))[1]


def run_check(
    plan: Plan, store: Store, run: RunFolder, judge_url, judge_weights, spent: float = 0.0
) -> dict:
    """Check the sweep's judge on its evaluation languages; the result goes into the run folder
    (its page shows it beside the scores). ``judge_url``: the served judge's URL, asked for only
    when a self-hosted judge has calls to make; ``spent``: what judging spent of --max-cost,
    which the check may not pass with it. A check that fails is said and recorded; the run's
    scores and report go on without it."""
    from mlit.judging.judge import JudgeError
    from mlit.providers import llm

    try:
        return _check(plan, store, run, judge_url, judge_weights, spent)
    except (check.CheckError, JudgeError, pricing.BudgetError, llm.ProviderStop) as err:
        console.warn(f"[judge check] not done: {err}")
        return {"seconds": 0.0, "error": str(err)}


def _check(plan: Plan, store: Store, run: RunFolder, judge_url, judge_weights, spent) -> dict:
    start = time.time()
    frame = pairs(plan, source(plan))
    if frame.is_empty():
        console.say(f"[judge check] {source(plan)} has none of this run's evaluation languages")
        return {"seconds": 0.0, "languages": 0}
    j = plan.judge.build(judge_weights)
    if plan.judge.self_hosted:
        j = replace(j, api_base=f"{judge_url()}/v1")
    left = None if plan.judge.max_cost is None else max(plan.judge.max_cost - spent, 0.0)
    budget = pricing.Budget(left, plan.judge.prices())
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
