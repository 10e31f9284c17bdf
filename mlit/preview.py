"""The dry run: what a sweep will do and what the store already holds, before any compute."""

from __future__ import annotations

from pathlib import Path

from mlit import judge_host, protocol
from mlit.generate import generation_key
from mlit.judge import verdict_key
from mlit.plan import Plan
from mlit.store import Store

INSTRUCTION_TOKENS = 60  # a typical translated instruction, in tokens
JUDGE_TEMPLATE_TOKENS = 80


def cached(plan: Plan, store: Store) -> tuple[int, int]:
    """How many planned answers and judge calls the store already holds."""
    if plan.frame is None:
        return 0, 0
    answers = {}
    for task in plan.generation_tasks():
        hit = store.get("generations", generation_key(task, plan.sampling, plan.serving.engine))
        if hit is not None:
            answers[(task.model, task.lang, task.example_id)] = hit["response"]
    spec = plan.judge
    if spec.self_hosted and not Path(judge_host.weights(spec.model_dir)).exists():
        return len(answers), 0  # the demo judge is not built yet: nothing of it can be cached
    judge = spec.build()
    verdicts = 0
    for p in plan.judge_pairs(answers):
        if p.candidate_answer is not None and p.baseline_answer is not None and not p.is_self:
            a, b = p.candidate_answer, p.baseline_answer
            verdicts += store.get("verdicts", verdict_key(judge, p.instruction, a, b)) is not None
            verdicts += store.get("verdicts", verdict_key(judge, p.instruction, b, a)) is not None
    return len(answers), verdicts


def describe(plan: Plan, store: Store) -> str:
    """The dry-run plan: mixtures, models (new or stored), generations and judge calls."""
    exp, cfg, sp = plan.experiment, plan.config, plan.sampling
    c = plan.counts()
    stored = sum(store.has_model(k) for k in {plan.key_of[m.name] for m in plan.mixtures})
    gen_cached, calls_cached = cached(plan, store)
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
        f"generations: {c.generations} ({c.generations - gen_cached} new, {gen_cached} cached; "
        f"{len(exp.answering())} models x their eval languages x {c.eval_instructions} "
        f"instructions), up to {sp.max_tokens} new tokens each",
        f"judge calls: {c.judge_calls} ({c.judge_calls - calls_cached} new, {calls_cached} cached; "
        f"{judged} (model, language) pairs x {c.eval_instructions} instructions x 2 orders; "
        f"{c.self_comparisons} self-comparisons cost none)",
        f"estimated tokens: generation <= {(c.generations - gen_cached) * sp.max_tokens:,} new, "
        f"judge ~{(c.judge_calls - calls_cached) * (INSTRUCTION_TOKENS + 2 * sp.max_tokens + JUDGE_TEMPLATE_TOKENS):,} prompt",
    ]
    judge = plan.judge.build()
    lines.append(f"judge template: {judge.template_name} (sha256 {judge.template_hash()})")
    lines.append(protocol.render(protocol.items(plan)))
    return "\n".join(lines)
