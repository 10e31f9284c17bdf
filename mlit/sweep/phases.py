"""The compute phases of a sweep: train, then serve + generate + judge. Each takes its part of the
plan, skips what the store already holds, writes its table into the run folder and returns a summary
that goes into run.json. Scores come after, from the run folder (`mlit.results.analysis`).
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field, replace

import polars as pl

from mlit.generation import answer_client, chat
from mlit.judging import host, judge
from mlit.judging import pairs as pairs_rule
from mlit.judging.judgments import error_summary
from mlit.method import hyperparameters
from mlit.planning.plan import Plan
from mlit.plumbing import console
from mlit.plumbing.heartbeat import every
from mlit.plumbing.ports import free_port
from mlit.providers import batch_api, llm, pricing
from mlit.results.run_folder import RunFolder
from mlit.store.artifacts import Store
from mlit.training.trials import train_phase


class TrainingFailed(RuntimeError):
    """Some models did not train; the others are stored."""


class SweepFailed(RuntimeError):
    """The run finished, but too much of its generation or judging failed to call it a success."""


def failures(phases: dict, max_error_rate: float) -> list[str]:
    """The phases whose share of failures is above the threshold, as lines for the user."""
    out = []
    gen, jud = phases.get("generate", {}), phases.get("judge", {})
    if gen.get("answers") and gen["errors"] / gen["answers"] > max_error_rate:
        out.append(
            f"generation: {gen['errors']} of {gen['answers']} answers failed; first: "
            f"{gen.get('first_error')}"
        )
    judged = jud.get("pairs", 0) - jud.get("self_comparisons", 0)
    if judged and jud["errors"] / judged > max_error_rate:
        out.append(
            f"judging: {jud['errors']} of {judged} pairs have no verdict ({jud['calls']} "
            f"calls requested, {jud['answered']} answered, {jud['failed_calls']} failed); "
            f"first: {jud.get('first_error')}"
        )
    return out


@dataclass
class Phase:
    """What a phase did, for run.json and the closing line."""

    summary: dict = field(default_factory=dict)
    started: float = field(default_factory=time.time)

    def done(self, **values) -> dict:
        self.summary.update(values, seconds=round(time.time() - self.started, 1))
        return self.summary


# --------------------------------------------------------------------------------------------
# Train


@contextmanager
def _training_bar(plan: Plan, store: Store, poll_s: float = 2.0):
    """A bar of models trained, drawn on a terminal while the trials run, and one line per
    attempt that went on after a failure: the store is the one place that knows, so a thread
    asks it every few seconds."""
    from tqdm import tqdm

    from mlit.training import checkpoints, trials

    todo = [j.key for j in plan.jobs if not store.has_model(j.key)]
    waiting = {j.key: j for j in plan.jobs if j.key in todo}
    said: dict[str, int] = {}

    def resumptions() -> None:
        for key, job in list(waiting.items()):
            info = store.model_info(key)
            if info is not None:  # stored (its checkpoints are gone): its record says the rest
                del waiting[key]
                tried = [{"attempt": info.get("attempts", 1), **info}]
            else:
                tried = checkpoints.attempts(trials.checkpointing(job, store.root, plan.compute))
            for a in tried:
                number = a.get("attempt", 1)
                if number > max(1, said.get(key, 1)):
                    said[key] = number
                    step = a.get("resumed_from_step", 0)
                    console.say(
                        f"[train] {job.name}: attempt {number} "
                        + (f"resumed from step {step}" if step else "started from step 0")
                        + (
                            f" ({len(a['damaged'])} damaged checkpoint(s) skipped)"
                            if a.get("damaged")
                            else ""
                        )
                    )

    bar = tqdm(
        total=len(todo),
        desc="training",
        unit="model",
        file=console.bar_stream(),
        disable=None if todo else True,
    )

    def update() -> None:
        bar.n = sum(store.has_model(k) for k in todo)
        bar.refresh()
        resumptions()

    try:
        with every(poll_s, update):
            yield
    finally:
        update()
        bar.close()


def train(plan: Plan, store: Store, run: RunFolder, tracker=None) -> dict:
    """Every model of the plan that the store lacks, as Tune trials (logged live to tracker)."""
    phase = Phase()
    ray = sys.modules.get("ray")
    # Only a Ray this process is connected to can hold a Serve app of ours; importing Serve to
    # ask costs 3 s, a rerun with every model stored skips it.
    connected = ray is not None and ray.is_initialized()
    if connected and any(not store.valid_model(job.key) for job in plan.jobs):
        from mlit.serving import app as serving

        if serving.stop_if_running():  # Serve replicas must not hold the CPUs/GPUs trials need
            console.say("[train] took the running Serve app down first: trials need its CPUs/GPUs")
    with _training_bar(plan, store):
        result = train_phase(plan.jobs, store, plan.compute, plan.experiment.name, tracker)
    run.write_frame("train", result.table())
    if result.failed:
        raise TrainingFailed(
            f"{len(result.failed)} model(s) failed to train (first: {result.first_error}; the "
            f"Tune logs are under {run.ray_storage}); the others are stored and will not be "
            "retrained"
        )
    trained = len(result.launched)
    reached = {r["dropout_settings"] or "" for r in result.rows if r["status"] == "trained"} - {""}
    if any(r["status"] == "trained" and not r["dropout_settings"] for r in result.rows):
        console.say(
            f"[train] warning: the base model's config has no dropout setting, so dropout "
            f"{plan.train.dropout} reached nothing (see train.parquet)"
        )
    elif reached and all(hyperparameters.attention_only(s.split(",")) for s in reached):
        console.say(
            f"[train] note: dropout {plan.train.dropout} reached only attention "
            f"({', '.join(sorted(reached))}; --dropout-scope config); the paper's reaches hidden "
            "states too (--dropout-scope all)"
        )
    console.say(
        f"[train] {trained} trained, {len(plan.jobs) - trained} already stored "
        f"({time.time() - phase.started:.0f} s)"
    )
    done = [r for r in result.rows if r["status"] == "trained"]
    return phase.done(
        models_trained=trained,
        models_resumed=sum(bool(r["resumed_from_step"]) for r in done),
        attempts=sum(r["attempts"] or 1 for r in done),
    )


# --------------------------------------------------------------------------------------------
# Serve: one app for the models and a self-hosted judge, started only when needed


class Serving:
    """The Serve app of a sweep as a context: started on first use, always torn down on exit."""

    def __init__(self, plan: Plan, models: dict[str, str]):
        self.plan, self.models, self._url = plan, models, None
        self.start_s = 0.0  # seconds Serve took to start (0: never started)
        self.shards, self.lanes = 1, None  # model-server shards, and each model's shard

    def url(self) -> str:
        if self._url is None:
            # Deferred: Ray Serve is heavy; a fully cached rerun skips it.
            from mlit.serving import app as serving

            spec = self.plan.serving
            start = time.time()
            gpus = serving.cluster_gpus() if spec.gpus_per_replica else 0.0
            cfg = serving.ServeConfig(
                models=self.models,
                port=spec.port or free_port(),
                max_batch_size=spec.max_batch_size,
                max_models_per_replica=spec.models_at_once,
                engine=spec.engine,
                num_gpus=spec.gpus_per_replica,
                shards=serving.shards_for(spec.gpus_per_replica, gpus, len(self.models)),
            )
            self._url = serving.start(cfg)
            self.start_s = round(time.time() - start, 1)
            self.shards, self.lanes = cfg.shards, cfg.shard_of()
            on = f", {cfg.shards} shards on {cfg.shards:g} GPUs" if cfg.num_gpus else ""
            console.say(f"[serve] {len(self.models)} models at {self._url}/v1{on}")
        return self._url

    def __enter__(self) -> Serving:
        return self

    def __exit__(self, *exc) -> None:
        if self._url is not None:
            from mlit.serving import app as serving

            serving.stop()


def judge_dir(plan: Plan) -> str | None:
    """The self-hosted judge's weights (built on first use for the demo judge), or None."""
    if not plan.judge.self_hosted:
        return None
    if plan.judge.model_dir:
        return plan.judge.model_dir
    from mlit.demo import judge_model  # deferred: building the demo judge imports torch

    return str(judge_model.build_demo_judge())


def served_models(plan: Plan, models: dict[str, dict], judge_weights: str | None) -> dict[str, str]:
    need = plan.experiment.answering()
    served = {name: info["path"] for name, info in models.items() if name in need}
    if judge_weights:
        served[host.JUDGE_NAME] = judge_weights
    return served


# --------------------------------------------------------------------------------------------
# Generate


def prompt_cut(plan: Plan):
    """The instruction cut of training (`Plan.prompt_limit`), or None when there is none or the
    base model's tokenizer is out of reach (then the server sees whole instructions, and says)."""
    try:
        return chat.instruction_cutter(plan.base_model, plan.prompt_limit)
    except (OSError, ValueError, ImportError) as err:
        console.warn(
            f"[generate] the tokenizer of {plan.base_model} could not be read "
            f"({type(err).__name__}); instructions are sent uncut"
        )
        return None


def cut_as_run(plan: Plan, cut) -> str:
    """How instructions were given to the models, as the protocol report reads it."""
    if plan.prompt_limit is None or cut is not None:
        return f"cut at {plan.prompt_limit} tokens" if cut is not None else "not cut"
    return f"not cut (the tokenizer of {plan.base_model} could not be read)"


def generate_answers(plan: Plan, store: Store, run: RunFolder, serve: Serving):
    """Every answer of the plan: from the store, or asked of the served models."""
    phase = Phase()
    cut = prompt_cut(plan)
    tasks = plan.generation_tasks(cut)
    engine = plan.serving.engine
    stored = answer_client.stored_answers(tasks, plan.sampling, store, engine)
    pending = len(tasks) - stored[1].height
    url = serve.url() if pending else "http://unused"
    client = answer_client.Client(
        url,
        # Each shard keeps the concurrency one server gets: all of them answer at once.
        concurrency=plan.config.generation_concurrency * serve.shards,
        engine=engine,
        lanes=serve.lanes,
    )
    sent = Counter()
    gens = answer_client.generate(
        tasks, client, store, plan.sampling, run.saver("generations"), stored=stored, sent=sent
    )
    requests = int((~gens["cached"]).sum())
    errors = int((gens["status"] == "error").sum())
    first = gens.filter(pl.col("status") == "error")["error"][0] if errors else None
    console.say(
        f"[generate] {gens.height} answers: {requests} requested ({requests - errors} answered, "
        f"{errors} failed), {gens.height - requests} from the store "
        f"({time.time() - phase.started:.0f} s)"
    )
    if errors:
        console.say(
            f"[generate] {errors} answers failed; nothing of them is stored and they are asked "
            f"again on the next run. First: {first}"
        )
    return gens, phase.done(
        answers=gens.height,
        requests=requests,
        answered=requests - errors,
        errors=errors,
        first_error=first,
        # What was sent, for the protocol report: the decoding of the request bodies, and how
        # the instructions were cut.
        sampling_sent=dict(sent),
        instructions=cut_as_run(plan, cut),
    )


# --------------------------------------------------------------------------------------------
# Judge


def judge_answers(
    plan: Plan,
    store: Store,
    run: RunFolder,
    serve: Serving,
    gens: pl.DataFrame,
    judge_weights: str | None,
):
    """Every comparison of the plan, both orders: from the store, or asked of the judge."""
    phase = Phase()
    ok = gens.filter(pl.col("status") == "ok")
    answers = {
        (r["model"], r["lang"], r["example_id"]): r["response"] for r in ok.iter_rows(named=True)
    }
    # The judge reads each instruction as the models were given it (cut as training cuts).
    pairs = plan.judge_pairs(answers, prompt_cut(plan))
    j = plan.judge.build(judge_weights)
    stored = judge.stored_verdicts(pairs, j, store)
    if plan.judge.self_hosted and judge.asked(*stored):  # our judge is started only if needed
        j = replace(j, api_base=f"{serve.url()}/v1")
    budget = pricing.Budget(plan.judge.max_cost, plan.judge.prices(), batch=plan.judge.batch)
    report = batch_api.Report(plan.judge.mode)
    seen = pairs_rule.Seen()
    # What the judge that ran was told and sent, for the protocol report (`run.json`).
    sent = {"template_sha256": pairs_rule.template_sha256(j.template_text()), "seen": seen}
    try:
        judgments = judge.judge_pairs(
            pairs,
            j,
            store,
            run.saver("judgments"),
            stored=stored,
            budget=budget,
            batch=plan.judge.batch_options(),
            report=report,
            seen=seen,
        )
    except (pricing.BudgetError, llm.ProviderStop) as err:  # what was judged is kept
        why = "budget" if isinstance(err, pricing.BudgetError) else "provider"
        _say_unmetered(budget)
        summary = phase.done(
            cost_usd=round(budget.spent, 6),
            stopped=budget.stopped or str(err),
            calls_without_usage=budget.unmetered,
            **report.as_dict(),
            sent={**sent, "seen": seen.as_dict()},
        )
        raise pricing.BudgetStop(str(err), summary, why) from err
    _say_unmetered(budget)
    asked = [(~judgments[f"cached_{i}"].fill_null(True)) for i in (1, 2)]
    failed = [
        asked[i - 1] & judgments[f"parse_{i}"].is_in(["error", "unparseable"]) for i in (1, 2)
    ]
    calls = int(asked[0].sum() + asked[1].sum())
    failed_calls = int(failed[0].sum() + failed[1].sum())
    errors = judgments.filter(pl.col("verdict") == "error")
    answered = f"{calls - failed_calls} answered, {failed_calls} failed"
    took = f"{time.time() - phase.started:.0f} s"
    console.say(
        f"[judge] {judgments.height} pairs, {calls} judge calls requested ({answered}) ({took})"
    )
    summary = error_summary(judgments)
    if summary:
        console.say(f"[judge] {summary}")
    return judgments, phase.done(
        pairs=judgments.height,
        self_comparisons=int(judgments["self_comparison"].sum()),
        calls=calls,
        answered=calls - failed_calls,
        failed_calls=failed_calls,
        errors=errors.height,
        first_error=errors["error"][0] if errors.height else None,
        cost_usd=round(budget.spent, 6),
        calls_without_usage=budget.unmetered,
        **report.as_dict(),
        sent={**sent, "seen": seen.as_dict()},
    )


def _say_unmetered(budget: pricing.Budget) -> None:
    if budget.unmetered:
        console.say(
            f"[judge] {budget.unmetered} replies came without usage: each was charged at mlit's "
            "upper estimate of the tokens sent and received, so the budget still holds"
        )
