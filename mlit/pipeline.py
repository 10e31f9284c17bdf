"""One sweep, end to end, as a list of stages:

    plan      config -> mixtures, model keys, jobs, tasks, pairs        (mlit.plan)
    train     Tune trials for the models the store lacks                (mlit.phases, mlit.trials)
    serve     one Ray Serve app for the models and a self-hosted judge  (mlit.phases.Serving)
    generate  every answer, through the OpenAI-compatible API           (mlit.phases, mlit.generate)
    judge     every comparison in both orders, through litellm          (mlit.phases, mlit.judge)
    report    scores, tables, figures from the run folder               (mlit.report)

Each phase reads what the previous one wrote and skips what the store already has, so a rerun
trains, generates and judges nothing twice, and a sweep stopped at any phase (Ctrl-C) continues
where it stopped. Ray Serve is only started when there is something to generate or judge. The run
folder and its files are `mlit.run_folder`'s.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path

import polars as pl

from mlit import checks, console, experiments, phases, preview, protocol, results_page
from mlit.config import SweepConfig
from mlit.plan import Plan, prepare
from mlit.report import DEMO_NOTE, build, shares_for
from mlit.report import rebuild as report
from mlit.run_folder import RunFolder
from mlit.store import Store, default_root

__all__ = [
    "RunResult",
    "SweepConfig",
    "describe",
    "prepare",
    "replace",
    "report",
    "run_paper",
    "run_sweep",
]


def describe(plan: Plan, store: Store) -> str:
    return preview.describe(plan, store)


@dataclass(frozen=True)
class RunResult:
    run_dir: Path
    trained: int  # models trained by this run (0: all came from the store)
    generation_requests: int
    judge_calls: int
    main_table: pl.DataFrame | None
    seconds: float


def check_runnable(cfg: SweepConfig) -> None:
    """What a real run needs beyond a plan (a dry run plans the paper without them)."""
    if cfg.preset == "paper" and not (cfg.base_model and cfg.judge):
        raise ValueError("--preset paper needs --base-model and --judge")
    pretraining = experiments.get(cfg.experiment).table_kind == "pretraining"
    if cfg.preset == "paper" and pretraining and not cfg.pretraining_shares:
        raise ValueError(
            "--preset paper correlates with the base model's pretraining data (§4.2): pass "
            '--pretraining-shares FILE, a JSON object of document shares, e.g. {"ar": 0.011, '
            "\"cs\": 0.006, ...}; the demo's character-share proxy is not the paper's statistic"
        )


def run_sweep(cfg: SweepConfig) -> RunResult:
    start = time.time()
    store = Store(cfg.store or default_root())
    if not cfg.dry_run:
        check_runnable(cfg)
    with phases.heartbeat("plan"):  # may build the demo base model (minutes, once)
        plan = prepare(cfg)
    plan_s = round(time.time() - start, 1)
    if cfg.dry_run:
        console.say(describe(plan, store))
        return RunResult(cfg.run_dir(), 0, 0, 0, None, time.time() - start)

    checks.preflight(plan, store)  # nothing is written and nothing started until this passes
    run = RunFolder(cfg.run_dir())
    if cfg.is_demo:
        console.say(DEMO_NOTE)
    manifests = {m.name: {**m.manifest(), "model_key": plan.key_of[m.name]} for m in plan.mixtures}
    meta = run.start(cfg, plan.experiment.name, manifests)
    meta["phases"]["plan"] = {"seconds": plan_s}  # the demo base model's build included
    console.attach(run.path / "logs")  # library output (when quiet) from now on in the run
    meta["protocol"] = protocol.as_json(protocol.items(plan))
    meta["judge_template"] = plan.judge.build().template_name
    if plan.experiment.table_kind == "bilingual":
        meta["bilingual_pairs"] = ["+".join(r.languages) for r in plan.experiment.recipes]

    with phases.heartbeat("train"):
        meta["phases"]["train"] = phases.train(plan, store, run)
    models = plan.model_dirs(store.local_model_dir)
    run.write_models(models)
    t = time.time()
    with phases.heartbeat("judge model"):  # may build the demo judge (minutes, once)
        judge_weights = phases.judge_dir(plan)
    meta["phases"]["judge_model"] = {"seconds": round(time.time() - t, 1)}
    with phases.Serving(plan, phases.served_models(plan, models, judge_weights)) as serve:
        with phases.heartbeat("generate"):
            gens, meta["phases"]["generate"] = phases.generate_answers(plan, store, run, serve)
        with phases.heartbeat("judge"):
            judgments, meta["phases"]["judge"] = phases.judge_answers(
                plan, store, run, serve, gens, judge_weights
            )
        meta["phases"]["serve_start"] = {"seconds": serve.start_s}  # inside generate's time

    t = time.time()
    shares, source = shares_for(cfg, plan.frame)
    run.write_shares(shares, source)
    meta["pretraining_shares"] = source
    table = build(run, plan.experiment, cfg, judgments, gens, shares, source)
    meta["phases"]["score"] = {"seconds": round(time.time() - t, 1)}
    meta["phases"]["total_s"] = round(time.time() - start, 1)
    failed = phases.failures(meta["phases"], cfg.max_error_rate)
    meta["status"] = "failed" if failed else "ok"
    run.write_meta(meta)
    page = results_page.write(run)  # after run.json's last write: the page shows the status
    if failed:
        raise phases.SweepFailed(
            f"the run in {run.path} has too many failures (more than {cfg.max_error_rate:.0%}; "
            "--max-error-rate):\n  " + "\n  ".join(failed) + "\nfinished work is stored; "
            "rerun to ask again for what failed"
        )

    trained = meta["phases"]["train"]["models_trained"]
    requests = meta["phases"]["generate"]["requests"]
    calls = meta["phases"]["judge"]["calls"]
    console.say(
        f"done in {meta['phases']['total_s']} s: {trained} models trained, {requests} generation "
        f"requests, {calls} judge calls; run folder {run.path}"
    )
    console.say(f"results page: {page}")
    if cfg.is_demo:
        console.say(DEMO_NOTE)
    return RunResult(run.path, trained, requests, calls, table, time.time() - start)


def run_paper(cfg: SweepConfig) -> list[RunResult]:
    """Every experiment in turn, one run folder each, one store: shared models train once."""
    root = Path(cfg.output or "results/paper")
    configs = [
        # --pairs chooses the bilingual experiment's pairs; the other experiments have none.
        replace(
            cfg,
            experiment=name,
            output=str(root / name),
            pairs=cfg.pairs if name == "bilingual" else None,
        )
        for name in experiments.NAMES
    ]
    if not cfg.dry_run:
        for c in configs:  # every experiment's requirements before the first one starts
            check_runnable(c)
        return [run_sweep(c) for c in configs]
    store = Store(cfg.store or default_root())
    keys: set[str] = set()
    slots = 0
    for c in configs:
        plan = prepare(c)
        console.say(describe(plan, store) + "\n")
        keys |= {plan.key_of[m.name] for m in plan.mixtures}
        slots += plan.counts().model_slots
    console.say(
        f"the whole paper: {len(keys)} distinct models to train ({slots} model slots across "
        f"{len(experiments.NAMES)} experiments; the store trains each shared model once)"
    )
    return []
