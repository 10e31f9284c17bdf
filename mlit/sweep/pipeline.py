"""One sweep, end to end, as a list of stages:

    plan      config -> mixtures, model keys, jobs, tasks, pairs        (mlit.planning.plan)
    base      no --base-model: the demo base model, built once; the
              plan's keys and jobs then on it                           (demo_base, Plan.on_base)
    checks    what can be checked before Ray starts                     (mlit.sweep.preflight)
    train     Tune trials for the models the store lacks                (mlit.sweep.phases, mlit.training.trials)
    serve     one Ray Serve app for the models and a self-hosted judge  (mlit.sweep.phases.Serving)
    generate  every answer, through the OpenAI-compatible API           (mlit.sweep.phases, mlit.generation.answer_client)
    judge     every comparison in both orders, through litellm          (mlit.sweep.phases, mlit.judging.judge)
    report    scores, tables, figures from the run folder               (mlit.results.analysis)

Each phase reads what the previous one wrote and skips what the store already has, so a rerun
trains, generates and judges nothing twice, and a sweep stopped at any phase (Ctrl-C) continues
where it stopped. Ray Serve is only started when there is something to generate or judge. The run
folder and its files are `mlit.results.run_folder`'s.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, replace
from pathlib import Path

import polars as pl

from mlit.method import experiments
from mlit.planning.config import DEMO_NOTE, SweepConfig
from mlit.planning.plan import PLACEHOLDER_BASE, Plan, prepare
from mlit.plumbing import console
from mlit.plumbing.heartbeat import heartbeat
from mlit.providers import pricing
from mlit.results import report_page
from mlit.results.analysis import build, shares_for
from mlit.results.run_folder import RunFolder, new_run_id
from mlit.store.artifacts import Store, default_root, shared_checks
from mlit.sweep import (
    judge_check,
    phases,
    preflight,
    preview,
    protocol_report,
    protocol_run,
    tracked,
)


@dataclass(frozen=True)
class RunResult:
    run_dir: Path
    trained: int  # models trained by this run (0: all came from the store)
    generation_requests: int
    judge_calls: int
    main_table: pl.DataFrame | None
    seconds: float


def demo_base(dry_run: bool) -> str:
    """The preparation stage of a sweep without ``--base-model``: the demo base model, built on
    first use (minutes, once; cached after). A dry run builds nothing: it plans on the demo model
    when it is built, else on a placeholder name."""
    from mlit.demo import base_model  # deferred: building it imports torch

    if dry_run and not base_model.is_built(base_model.default_dir()):
        return PLACEHOLDER_BASE
    return str(base_model.build_demo_model())


def plan_sweep(cfg: SweepConfig) -> Plan:
    """The plan, on the base model made ready: the data and mixtures are read and checked first,
    so bad input fails before the demo base model is built."""
    plan = prepare(cfg)
    if cfg.base_model:
        return plan
    base = demo_base(cfg.dry_run)
    return plan if base == PLACEHOLDER_BASE else plan.on_base(base)


def run_sweep(cfg: SweepConfig) -> RunResult:
    start = time.time()
    store = Store(cfg.store or default_root())
    with heartbeat("plan"):  # may build the demo base model (minutes, once)
        plan = plan_sweep(cfg)
    plan_s = round(time.time() - start, 1)
    if cfg.dry_run:
        console.say(preview.describe(plan, store))
        return RunResult(cfg.run_dir(), 0, 0, 0, None, time.time() - start)

    preflight.preflight(plan, store)  # nothing is written and nothing started until this passes
    if cfg.download_cache_gb is not None:  # read where models are downloaded: here, the replicas
        os.environ["MLIT_DOWNLOAD_CACHE_GB"] = str(cfg.download_cache_gb)
    run = RunFolder(cfg.run_dir(), new_run_id())
    if cfg.is_demo:
        console.say(DEMO_NOTE)
    manifests = {m.name: {**m.manifest(), "model_key": plan.key_of[m.name]} for m in plan.mixtures}
    record = run.start(cfg, plan.experiment.name, manifests)
    record.phase("plan", {"seconds": plan_s})  # the demo base model's build included
    console.attach(run.path / "logs")  # library output (when quiet) from now on in the run
    tracker = tracked.start(plan, run)
    if tracker is not None:
        record.set(tracking=tracked.describe(tracker))
    try:
        result = _phases(plan, store, run, record, tracker, start)
    except BaseException as err:
        tracked.end(tracker, "KILLED" if isinstance(err, KeyboardInterrupt) else "FAILED")
        raise
    tracked.finish(tracker, plan, run)
    return result


def _phases(plan: Plan, store: Store, run: RunFolder, record, tracker, start: float) -> RunResult:
    cfg = plan.config
    record.set(
        protocol=protocol_report.as_json(protocol_report.items(plan)),
        judge_template=plan.judge.build().template_name,
    )
    if cfg.judge_check:  # the folder describes itself: its page reads this copy
        from mlit.judging import check

        run.write_frame("judge_check", check.read_result(cfg.judge_check))
    if plan.experiment.table_kind == "bilingual":
        record.set(bilingual_pairs=["+".join(r.languages) for r in plan.experiment.recipes])

    with heartbeat("train"):
        record.phase("train", phases.train(plan, store, run, tracker))
    models = plan.model_dirs(store.model_uri)  # a URI on object storage: replicas download it
    run.write_models(models)
    t = time.time()
    with heartbeat("judge model"):  # may build the demo judge (minutes, once)
        judge_weights = phases.judge_dir(plan)
    record.phase("judge_model", {"seconds": round(time.time() - t, 1)})
    with phases.Serving(plan, phases.served_models(plan, models, judge_weights)) as serve:
        with heartbeat("generate"):
            gens, summary = phases.generate_answers(plan, store, run, serve)
            record.phase("generate", summary)
        with heartbeat("judge"):
            try:
                judgments, summary = phases.judge_answers(
                    plan, store, run, serve, gens, judge_weights
                )
            except pricing.BudgetStop as stop:  # a clean stop: rc 1, nothing lost, resumable
                record.phase("judge", stop.summary)
                record.set(cost_usd={"generate": 0.0, "judge": stop.summary["cost_usd"]})
                record.finish(f"stopped: {stop.why}")
                raise phases.SweepFailed(f"{stop}\nrun folder {run.path}") from stop
            record.phase("judge", summary)
            record.set(cost_usd={"generate": 0.0, "judge": summary["cost_usd"]})
        if judge_check.source(plan):  # the judge's agreement with humans, for the page
            with heartbeat("judge check"):
                checked = judge_check.run_check(
                    plan, store, run, serve.url, judge_weights, summary["cost_usd"]
                )
                record.phase("judge_check", checked)
        record.phase("serve_start", {"seconds": serve.start_s})  # inside generate's time

    t = time.time()
    shares, source = shares_for(cfg, plan.frame)
    run.write_shares(shares, source)
    record.set(pretraining_shares=source)
    table = build(run, plan.experiment, cfg, judgments, gens, shares, source)
    record.phase("score", {"seconds": round(time.time() - t, 1)})
    # The protocol again, from what the run did: the dry run's reading of each item gives way.
    report = protocol_report.items(plan, protocol_run.observed(plan, run, record.phases))
    record.set(protocol=protocol_report.as_json(report))
    console.say(protocol_report.render_differences(report, console.is_terminal()))
    record.phase("total_s", round(time.time() - start, 1))
    failed = phases.failures(record.phases, cfg.max_error_rate)
    record.finish("failed" if failed else "ok")
    page = report_page.write(run)  # after run.json's last write: the page shows the status
    if failed:
        tracked.finish(tracker, plan, run, "FAILED")  # its tables and page are worth keeping
        raise phases.SweepFailed(
            f"the run in {run.path} has too many failures (more than {cfg.max_error_rate:.0%}; "
            "--max-error-rate):\n  " + "\n  ".join(failed) + "\nfinished work is stored; "
            "rerun to ask again for what failed"
        )

    trained = record.phases["train"]["models_trained"]
    requests = record.phases["generate"]["requests"]
    calls = record.phases["judge"]["calls"]
    console.say(
        f"done in {record.phases['total_s']} s: {trained} models trained, {requests} generation "
        f"requests, {calls} judge calls; run folder {run.path}"
    )
    console.say(f"results page: {page}")
    if cfg.is_demo:
        console.say(DEMO_NOTE)
    return RunResult(run.path, trained, requests, calls, table, time.time() - start)


def run_paper(cfg: SweepConfig) -> list[RunResult]:
    """Every experiment in turn, one run folder each, one store: shared models train once, and
    are checked once (`shared_checks`)."""
    configs = paper_configs(cfg)
    if not cfg.dry_run:  # each config checked its requirements when it was made, above
        with shared_checks():
            return [run_sweep(c) for c in configs]
    store = Store(cfg.store or default_root())
    plans = [plan_sweep(c) for c in configs]
    for plan, stored in zip(plans, preview.cached(plans, store), strict=True):
        console.say(preview.describe(plan, store, stored) + "\n")
    keys = {plan.key_of[m.name] for plan in plans for m in plan.mixtures}
    slots = sum(plan.counts().model_slots for plan in plans)
    console.say(
        f"the whole paper: {len(keys)} distinct models to train ({slots} model slots across "
        f"{len(experiments.NAMES)} experiments; the store trains each shared model once)"
    )
    return []


def paper_configs(cfg: SweepConfig) -> list[SweepConfig]:
    """One config per experiment of the paper, each with its own run folder under one root."""
    root = Path(cfg.output or "results/paper")
    return [
        # --pairs chooses the bilingual experiment's pairs; the other experiments have none.
        replace(
            cfg,
            experiment=name,
            output=str(root / name),
            pairs=cfg.pairs if name == "bilingual" else None,
        )
        for name in experiments.NAMES
    ]
