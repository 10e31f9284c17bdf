"""The dry run: what a sweep will do and what the store already holds, before any compute."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from mlit.generation.answer_client import STORED_SCHEMA, generation_keys, task_frame
from mlit.judging import host
from mlit.judging.judge import pair_keys
from mlit.planning import estimate
from mlit.planning.plan import Plan
from mlit.store.artifacts import Store
from mlit.sweep import protocol_report

INSTRUCTION_TOKENS = 60  # a typical translated instruction, in tokens
JUDGE_TEMPLATE_TOKENS = 80


def cached(plans: Sequence[Plan], store: Store) -> list[tuple[int, int]]:
    """How many planned answers and judge calls the store already holds, for each plan: one bulk
    read of the answers and one of the verdicts' keys for all plans together (the paper's eight
    experiments share most of their 670k answers), then a join with each plan."""
    tasks = {id(p): p.generation_tasks() if p.frame is not None else [] for p in plans}
    keys = {id(p): generation_keys(tasks[id(p)], p.sampling, p.serving.engine) for p in plans}
    hits = store.record_frame(
        "generations", [k for ks in keys.values() for k in ks], STORED_SCHEMA
    ).rename({"key": "generation_key"})
    answers, verdict_keys = {}, {}
    for p in plans:
        found = task_frame(tasks[id(p)], keys[id(p)]).join(hits, on="generation_key")
        rows = found.select("model", "lang", "example_id").rows()
        answers[id(p)] = dict(zip(rows, found["response"], strict=True))
        spec = p.judge
        if p.frame is None or (
            spec.self_hosted and not Path(host.weights(spec.model_dir)).exists()
        ):
            verdict_keys[id(p)] = []  # no data, or the demo judge is not built: nothing is stored
            continue
        judge = spec.build()
        pairs = p.judge_pairs(answers[id(p)])
        verdict_keys[id(p)] = [k for ks in pair_keys(pairs, judge) if ks for k in ks]
    present = store.present("verdicts", [k for ks in verdict_keys.values() for k in ks])
    return [(len(answers[id(p)]), sum(k in present for k in verdict_keys[id(p)])) for p in plans]


def _resilience(plan) -> str:
    """How a trial survives a lost node: its checkpoints and retries."""
    comp, every = plan.compute, plan.compute.checkpoint_every
    every = plan.train.eval_every if every is None else every
    where = (
        "none: a retried trial starts from step 0"
        if not every
        else (
            f"every {every} steps into the store's checkpoints/, "
            + ("kept" if comp.keep_checkpoints else "deleted")
            + " once the model is stored"
        )
    )
    return f"checkpoints: {where}; a failed trial is retried up to {comp.max_failures} times"


def describe(plan: Plan, store: Store, held: tuple[int, int] | None = None) -> str:
    """The dry-run plan: mixtures, models (new or stored), generations and judge calls.
    ``held``: this plan's `cached` counts, when the caller read them for several plans."""
    exp, cfg, sp = plan.experiment, plan.config, plan.sampling
    c = plan.counts()
    stored = sum(store.has_model(k) for k in {plan.key_of[m.name] for m in plan.mixtures})
    gen_cached, calls_cached = held or cached([plan], store)[0]
    judged = c.comparison_units - c.self_comparisons
    lines = [
        f"{exp.name} ({exp.section}, {exp.figure}): {exp.title}",
        f"preset {cfg.preset}; base model {plan.base_model}; judge {cfg.judge or 'demo judge (Ray Serve)'}",
        f"mixtures: {len(exp.recipes)} in the experiment, {c.model_slots} with baselines "
        f"(budget {plan.mixtures[0].budget}, seed {cfg.seed})",
    ]
    for m in plan.mixtures:
        state = "stored" if store.has_model(plan.key_of[m.name]) else "new"
        counts = " ".join(f"{lang}:{n}" for lang, n in m.counts.items())
        lines.append(f"  {m.name:<24} {m.hash} {state:<6} {counts}")
    lines += [
        f"models to train: {c.distinct_models - stored} new, {stored} stored "
        f"({c.distinct_models} distinct models)",
        _resilience(plan),
        f"generations: {c.generations} ({c.generations - gen_cached} new, {gen_cached} cached; "
        f"{len(exp.answering())} models x their eval languages x {c.eval_instructions} "
        f"instructions), up to {sp.max_tokens} new tokens each",
        f"judge calls: {c.judge_calls} ({c.judge_calls - calls_cached} new, {calls_cached} cached; "
        f"{judged} (model, language) pairs x {c.eval_instructions} instructions x 2 orders; "
        f"{c.self_comparisons} self-comparisons cost none)",
        f"estimated tokens: generation <= {(c.generations - gen_cached) * sp.max_tokens:,} new, "
        f"judge ~{(c.judge_calls - calls_cached) * (INSTRUCTION_TOKENS + 2 * sp.max_tokens + JUDGE_TEMPLATE_TOKENS):,} prompt",
    ]
    lines.append(judge_cost_line(plan, c.judge_calls - calls_cached))
    judge = plan.judge.build()
    lines.append(f"judge template: {judge.template_name} (sha256 {judge.template_hash()})")
    lines.append(protocol_report.render(protocol_report.items(plan)))
    return "\n".join(lines)


def judge_cost(plan: Plan, calls: int) -> float | None:
    """The expected dollars of ``calls`` new judge calls (`mlit estimate`'s token model, answers
    at most the sampling limit; the batch discount in batch mode), or None: not priced."""
    prices = plan.judge.prices()
    if prices is None:
        return None
    tokens = estimate.judge_call_tokens(answer_cap=plan.sampling.max_tokens)
    return calls * prices.cost(tokens, 1, plan.judge.batch)


def judge_cost_line(plan: Plan, calls: int) -> str:
    spec = plan.judge
    mode = "batch (half price)" if spec.batch else "online"
    limits = [f"{n} {v:g}" for n, v in (("rpm", spec.rpm), ("tpm", spec.tpm)) if v]
    limit_text = f"; rate limits {', '.join(limits)}" if limits else ""
    budget = f"; budget --max-cost ${spec.max_cost:,.2f}" if spec.max_cost is not None else ""
    try:
        dollars = judge_cost(plan, calls)
    except ValueError as err:
        return f"judge cost: {err}"
    if dollars is None:
        what = "self-hosted, no price" if spec.self_hosted else "litellm has no price for it"
        return f"judge cost: not priced ({what}; --judge-input-price/--judge-output-price){budget}"
    return (
        f"judge cost: ~${dollars:,.2f} expected for {calls:,} new calls, {mode}, at "
        f"{spec.prices().describe()}{limit_text}{budget}"
    )
