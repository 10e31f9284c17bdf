"""One sweep, end to end: data -> mixtures -> train (Tune) -> serve -> generate -> judge -> scores.

Each phase reads what the previous one wrote and skips what the store already has, so a rerun
trains, generates and judges nothing twice, and a sweep stopped at any phase (Ctrl-C) continues
where it stopped. Ray Serve is only started when there is something to generate or judge.

The run folder (``results/<experiment>`` or ``--output``) describes itself:

    run.json                resolved config, provenance (git sha, versions), per-phase summary
    mixtures/<name>.json    manifest of every mixture (baselines included)
    models.json             served name -> model directory (`mlit serve RUN_DIR` serves them)
    train.parquet           the training phase: mixture, model key, path, dev ROUGE-L, status
    generations.parquet     every answer (or error)
    judgments.parquet       every side-by-side verdict, both orders' raw output
    scores.parquet          IF scores with bootstrap intervals
    tables/*.csv|md         the table behind each figure, order consistency, response language
    figures/*.png           the figures

`mlit report RUN_DIR` rebuilds scores, tables and figures from these files alone.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import polars as pl

from mlit import data, experiments, languages, mixtures
from mlit.generate import SamplingParams

DEMO_NOTE = (
    "DEMO RUN: tiny models trained on the bundled sample; the numbers show the pipeline at work, "
    "not the paper's findings."
)
PAPER_EVAL_SIZE = 617


@dataclass(frozen=True)
class SweepConfig:
    experiment: str
    preset: str = "demo"  # demo | paper
    base_model: str | None = None  # HF hub name or directory; None: the demo base model
    judge: str | None = None  # litellm model string; None: the demo judge on Ray Serve
    judge_api_base: str | None = None
    judge_api_key_env: str | None = None
    judge_prompt: str | None = None
    judge_model_dir: str | None = None  # an HF judge to self-host on Serve (default: demo judge)
    judge_concurrency: int = 32
    data: str = "sample"
    languages: tuple[str, ...] | None = None
    output: str | None = None
    store: str | None = None
    workers: int | None = None  # None: 1 for the demo (trials run side by side), 2 otherwise
    gpus_per_worker: float = 0.0
    zero_stage: int = 2
    lora_rank: int = 0
    seed: int = 0
    budget: int | None = None
    max_steps: int | None = None
    generation_concurrency: int = 64
    sampling: SamplingParams | None = None  # None: the preset's
    serve_port: int | None = None  # None: a free port
    pretraining_shares: str | None = None  # JSON {lang: share} for §4.2
    n_boot: int = 1000
    dry_run: bool = False
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.preset not in ("demo", "paper"):
            raise ValueError(f"--preset must be 'demo' or 'paper', got {self.preset!r}")
        if self.preset == "paper" and not self.dry_run and not (self.base_model and self.judge):
            raise ValueError("--preset paper needs --base-model and --judge")
        experiments.get(self.experiment)  # fails early on an unknown experiment
        if self.languages is not None:
            object.__setattr__(self, "languages", languages.parse(self.languages))

    @property
    def is_demo(self) -> bool:
        return self.preset == "demo"

    def run_dir(self) -> Path:
        return Path(self.output or Path("results") / self.experiment)

    def sampling_params(self) -> SamplingParams:
        if self.sampling is not None:
            return self.sampling
        if self.is_demo:
            return SamplingParams(temperature=0.7, top_p=0.9, max_tokens=48, seed=self.seed)
        return SamplingParams(seed=self.seed)  # the paper's: p=0.9, T=0.7, 512 tokens


@dataclass
class Plan:
    cfg: SweepConfig
    experiment: experiments.Experiment
    frame: pl.DataFrame | None  # None: planning without data (paper scale, dry run)
    built: list[mixtures.Mixture]
    jobs: list  # sweep.ModelJob, one per distinct model
    key_of: dict[str, str]  # recipe name -> model key
    base_model: str
    eval_ids: list[str]
    train_config: object


def _train_config(cfg: SweepConfig):
    from mlit.train import TrainConfig

    make = TrainConfig.demo if cfg.is_demo else TrainConfig.paper
    overrides: dict = {"zero_stage": cfg.zero_stage, "lora_rank": cfg.lora_rank, "seed": cfg.seed}
    if cfg.max_steps:
        overrides["max_steps"] = cfg.max_steps
    return make(**overrides)


def _experiment(cfg: SweepConfig) -> experiments.Experiment:
    exp = experiments.get(cfg.experiment, cfg.seed)
    return exp.restricted(cfg.languages) if cfg.languages else exp


def _load_frame(cfg: SweepConfig, exp: experiments.Experiment) -> pl.DataFrame | None:
    if cfg.dry_run and cfg.preset == "paper" and cfg.data == "sample":
        return None  # plan at the paper's scale with placeholder ids
    frame = data.open_source(cfg.data)
    frame = frame.filter(pl.col("lang").is_in(sorted(exp.all_languages())))
    report = data.validate(frame, sorted(exp.all_languages()))
    if not report.ok:
        raise data.DataError(
            f"dataset {cfg.data!r} cannot be used for {exp.name}:\n{report.summary()}\n"
            "(translate missing languages with `mlit translate`)"
        )
    return frame


def prepare(cfg: SweepConfig) -> Plan:
    """Everything that can be decided before any compute: mixtures, jobs, model keys."""
    from mlit import sweep

    exp = _experiment(cfg)
    frame = _load_frame(cfg, exp)
    if frame is None:
        ids = mixtures.placeholder_ids(cfg.budget or mixtures.PAPER_BUDGET)
        eval_ids = [f"eval-{i:04d}" for i in range(PAPER_EVAL_SIZE)]
    else:
        ids, eval_ids = data.train_ids(frame), data.eval_ids(frame)
    built = experiments.build_all(exp, ids, cfg.budget, cfg.seed, None, include_baselines=True)
    from mlit import demo

    if cfg.base_model:
        base = cfg.base_model
    elif cfg.dry_run and not demo.is_built(demo.default_dir()):
        base = "mlit-demo-base"  # planning only: a dry run does not build the demo model
    else:
        base = str(demo.build_demo_model())  # cached: returns at once once built
    tc = _train_config(cfg)
    base_id = sweep.base_model_id(base)
    key_of = {m.name: sweep.model_key(base_id, m, tc) for m in built}
    jobs = sweep.plan_jobs(base, built, frame, tc) if frame is not None else []
    return Plan(cfg, exp, frame, built, jobs, key_of, base, eval_ids, tc)


# --------------------------------------------------------------------------------------------
# What a sweep will do


def _baseline_name(exp: experiments.Experiment, lang: str) -> str:
    return "base" if exp.baseline == "base" else f"mono-{lang}"


def generation_models(plan: Plan) -> dict[str, set[str]]:
    """Served name -> eval languages it must answer (candidates and baselines)."""
    need: dict[str, set[str]] = {}
    for recipe, lang in plan.experiment.eval_pairs():
        need.setdefault(recipe.name, set()).add(lang)
        need.setdefault(_baseline_name(plan.experiment, lang), set()).add(lang)
    return need


def _cached(plan: Plan, store, need: dict[str, set[str]]) -> tuple[int, int]:
    """How many planned answers and judge calls the store already holds (dry runs)."""
    from mlit import generate, judge, judge_model

    if plan.frame is None:
        return 0, 0
    params = plan.cfg.sampling_params()
    evals = plan.frame.filter(pl.col("split") == "eval")
    answers: dict[tuple[str, str, str], str] = {}
    for name, langs in need.items():
        key = plan.key_of.get(name, name)
        for ex, lang, instruction in evals.select("example_id", "lang", "instruction").rows():
            if lang in langs:
                task = generate.Task(name, key, ex, lang, instruction)
                hit = store.get("generations", generate.generation_key(task, params))
                if hit is not None:
                    answers[(name, lang, ex)] = hit["response"]
    judge_dir = plan.cfg.judge_model_dir or str(judge_model.default_dir())
    if plan.cfg.judge is None and not Path(judge_dir).exists():
        return len(answers), 0  # the demo judge is not built yet: nothing of it can be cached
    j = _judge_for(plan, judge_dir)
    verdicts = 0
    for recipe, lang in plan.experiment.eval_pairs():
        base = _baseline_name(plan.experiment, lang)
        for ex, instruction in (
            evals.filter(pl.col("lang") == lang).select("example_id", "instruction").rows()
        ):
            a, b = answers.get((recipe.name, lang, ex)), answers.get((base, lang, ex))
            if (
                a is not None
                and b is not None
                and plan.key_of.get(recipe.name) != plan.key_of.get(base)
            ):
                verdicts += (
                    store.get("verdicts", judge.verdict_key(j, instruction, a, b)) is not None
                )
                verdicts += (
                    store.get("verdicts", judge.verdict_key(j, instruction, b, a)) is not None
                )
    return len(answers), verdicts


def describe(plan: Plan, store) -> str:
    """The dry-run plan: mixtures, models (new or stored), generations and judge calls."""
    exp, cfg = plan.experiment, plan.cfg
    distinct = dict.fromkeys(plan.key_of.values())
    stored = sum(store.has_model(k) for k in distinct)
    need = generation_models(plan)
    n_eval = len(plan.eval_ids)
    generations = sum(len(langs) for langs in need.values()) * n_eval
    pairs = [(r, lang) for r, lang in exp.eval_pairs()]
    self_pairs = sum(plan.key_of.get(r.name) == plan.key_of.get(_baseline_name(exp, lang))
                     for r, lang in pairs)  # fmt: skip
    judge_calls = 2 * (len(pairs) - self_pairs) * n_eval
    sp = cfg.sampling_params()
    gen_cached, calls_cached = _cached(plan, store, need)
    instr_tokens = 60  # a typical translated instruction, in tokens
    lines = [
        f"{exp.name} ({exp.section}, {exp.figure}): {exp.title}",
        f"preset {cfg.preset}; base model {plan.base_model}; judge {cfg.judge or 'demo judge (Ray Serve)'}",
        f"mixtures: {len(exp.recipes)} in the experiment, {len(plan.built)} with baselines "
        f"(budget {plan.built[0].budget}, seed {cfg.seed})",
    ]
    for m in plan.built:
        state = "stored" if store.has_model(plan.key_of[m.name]) else "new"
        counts = " ".join(f"{lang}:{n}" for lang, n in m.counts.items())
        lines.append(f"  {m.name:<24} {m.hash} {state:<6} {counts}")
    lines += [
        f"models to train: {len(distinct) - stored} new, {stored} stored "
        f"({len(distinct)} distinct models)",
        f"generations: {generations} ({generations - gen_cached} new, {gen_cached} cached; "
        f"{len(need)} models x their eval languages x {n_eval} instructions), up to "
        f"{sp.max_tokens} new tokens each",
        f"judge calls: {judge_calls} ({judge_calls - calls_cached} new, {calls_cached} cached; "
        f"{len(pairs) - self_pairs} (model, language) pairs x {n_eval} instructions x 2 orders; "
        f"{self_pairs} self-comparisons cost none)",
        f"estimated tokens: generation <= {(generations - gen_cached) * sp.max_tokens:,} new, "
        f"judge ~{(judge_calls - calls_cached) * (instr_tokens + 2 * sp.max_tokens + 80):,} prompt",
    ]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Running


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def provenance() -> dict:
    from mlit.train import versions

    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                             check=True, cwd=Path(__file__).parent).stdout.strip()  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        sha = None
    return {"git_sha": sha, "versions": versions(), "python": sys.version.split()[0],
            "command": sys.argv, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}  # fmt: skip


def _write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=1, ensure_ascii=False, default=str))
    tmp.replace(path)


def _say(message: str) -> None:
    print(message, flush=True)


@dataclass(frozen=True)
class RunResult:
    run_dir: Path
    trained: int  # models trained by this run (0: all came from the store)
    generation_requests: int
    judge_calls: int
    main_table: pl.DataFrame | None
    seconds: float


def run_sweep(cfg: SweepConfig) -> RunResult:
    from mlit.store import Store, default_root

    start = time.time()
    store = Store(cfg.store or default_root())
    plan = prepare(cfg)
    if cfg.dry_run:
        _say(describe(plan, store))
        return RunResult(cfg.run_dir(), 0, 0, 0, None, time.time() - start)
    run = cfg.run_dir()
    run.mkdir(parents=True, exist_ok=True)
    if cfg.is_demo:
        _say(DEMO_NOTE)
    meta = {"config": asdict(cfg), "experiment": plan.experiment.name,
            "provenance": provenance(), "demo": cfg.is_demo, "phases": {}}  # fmt: skip
    for m in plan.built:
        _write_json(
            run / "mixtures" / f"{m.name}.json", {**m.manifest(), "model_key": plan.key_of[m.name]}
        )
    _write_json(run / "run.json", meta)

    trained = _train(plan, store, run, meta)
    models = _models_json(plan, store, run)
    gens, requests, judgments, calls = _serve_generate_judge(plan, store, run, models, meta)
    table = _score(plan, run, judgments, gens, meta)
    meta["phases"]["total_s"] = round(time.time() - start, 1)
    _write_json(run / "run.json", meta)
    _say(f"done in {meta['phases']['total_s']} s: {trained} models trained, {requests} generation "
         f"requests, {calls} judge calls; run folder {run}")  # fmt: skip
    if cfg.is_demo:
        _say(DEMO_NOTE)
    return RunResult(run, trained, requests, calls, table, time.time() - start)


def run_paper(cfg: SweepConfig) -> list[RunResult]:
    """Every experiment in turn, one run folder each, one store: shared models train once."""
    from mlit.store import Store, default_root

    root = Path(cfg.output or "results/paper")
    if cfg.dry_run:
        store = Store(cfg.store or default_root())
        keys: dict[str, str] = {}
        total = 0
        for name in experiments.NAMES:
            plan = prepare(replace(cfg, experiment=name, output=str(root / name)))
            _say(describe(plan, store) + "\n")
            keys.update({k: n for n, k in plan.key_of.items()})
            total += len(plan.key_of)
        _say(
            f"the whole paper: {len(keys)} distinct models to train ({total} model slots across "
            f"{len(experiments.NAMES)} experiments; the store trains each shared model once)"
        )
        return []
    return [run_sweep(replace(cfg, experiment=name, output=str(root / name)))
            for name in experiments.NAMES]  # fmt: skip


def _train(plan: Plan, store, run: Path, meta: dict) -> int:
    from mlit import sweep

    t = time.time()
    from mlit import serving

    if serving.stop_if_running():  # Serve replicas must not hold the CPUs/GPUs trials need
        _say("[train] took the running Serve app down first: trials need its CPUs/GPUs")
    compute = sweep.Compute(
        workers=plan.cfg.workers or (1 if plan.cfg.is_demo else 2),
        gpus_per_worker=plan.cfg.gpus_per_worker,
        storage_path=str((run / "ray").resolve()),
        # The demo's models train in seconds; its trials each take a share of them so the
        # start-up of a trial is paid a few times, not 22 times (see sweep.Compute).
        models_per_trial=None if plan.cfg.is_demo else 1,
    )
    result = sweep.train_phase(plan.jobs, store, compute, plan.experiment.name)
    result.table().write_parquet(run / "train.parquet")
    if result.failed:
        raise RuntimeError(
            f"{len(result.failed)} model(s) failed to train (see the Tune logs under {run / 'ray'}); "
            "the others are stored and will not be retrained"
        )
    meta["phases"]["train"] = {"models_trained": len(result.launched),
                               "seconds": round(time.time() - t, 1)}  # fmt: skip
    _say(f"[train] {len(result.launched)} trained, {len(plan.jobs) - len(result.launched)} "
         f"already stored ({time.time() - t:.0f} s)")  # fmt: skip
    return len(result.launched)


def _models_json(plan: Plan, store, run: Path) -> dict[str, dict]:
    models = {}
    for m in plan.built:
        key = plan.key_of[m.name]
        models[m.name] = {"path": str(store.local_model_dir(key)), "model_key": key,
                          "mixture": m.name, "mixture_hash": m.hash}  # fmt: skip
    if plan.experiment.baseline == "base":
        from mlit import sweep

        models["base"] = {"path": plan.base_model, "model_key": sweep.base_model_id(plan.base_model),
                          "mixture": None}  # fmt: skip
    _write_json(run / "models.json", models)
    return models


def _judge_for(plan: Plan, judge_path: str | None):
    from mlit import sweep
    from mlit.judge import Judge

    cfg = plan.cfg
    if cfg.judge:
        return Judge(cfg.judge, api_base=cfg.judge_api_base, api_key_env=cfg.judge_api_key_env,
                     template=cfg.judge_prompt, concurrency=cfg.judge_concurrency)  # fmt: skip
    # The demo judge is served by our own app on a port chosen per run: its verdict keys name the
    # judge's weights instead, so a rerun finds them whatever the port.
    from mlit import judge_model

    template = cfg.judge_prompt or judge_model.template_path()
    return Judge("openai/mlit-judge", template=template, concurrency=cfg.judge_concurrency,
                 endpoint_id=f"mlit-serve:{sweep.base_model_id(judge_path)}")  # fmt: skip


def _serve_generate_judge(plan: Plan, store, run: Path, models: dict, meta: dict):
    from mlit import generate, judge, serving

    cfg = plan.cfg
    exp = plan.experiment
    need = generation_models(plan)
    evals = plan.frame.filter(pl.col("split") == "eval")
    tasks = []
    for name, langs in sorted(need.items()):
        for ex, lang, instruction in evals.select("example_id", "lang", "instruction").rows():
            if lang in langs:
                tasks.append(generate.Task(name, models[name]["model_key"], ex, lang, instruction))
    params = cfg.sampling_params()
    pending = [
        t for t in tasks if store.get("generations", generate.generation_key(t, params)) is None
    ]

    url = None
    judge_path = None
    if cfg.judge is None:
        from mlit import judge_model

        judge_path = cfg.judge_model_dir or str(judge_model.build_demo_judge())
    serve_models = {name: info["path"] for name, info in models.items() if name in need}
    if judge_path:
        serve_models["mlit-judge"] = judge_path
    started = False

    def ensure_serving() -> str:
        nonlocal url, started
        if not started:
            port = cfg.serve_port or _free_port()
            url = serving.start(serving.ServeConfig(models=serve_models, port=port,
                                                    max_batch_size=32, max_models_per_replica=32))  # fmt: skip
            started = True
            _say(f"[serve] {len(serve_models)} models at {url}/v1")
        return url

    try:
        t = time.time()
        client_url = ensure_serving() if pending else "http://unused"
        client = generate.Client(client_url, concurrency=cfg.generation_concurrency)
        gens = generate.generate(tasks, client, store, params, run / "generations.parquet")
        requests = int((~gens["cached"]).sum())
        meta["phases"]["generate"] = {"answers": gens.height, "requests": requests,
                                      "errors": int((gens["status"] == "error").sum()),
                                      "seconds": round(time.time() - t, 1)}  # fmt: skip
        _say(f"[generate] {gens.height} answers, {requests} requested, "
             f"{gens.height - requests} from the store ({time.time() - t:.0f} s)")  # fmt: skip
        failed = gens.filter(pl.col("status") == "error")
        if failed.height:
            _say(f"[generate] {failed.height} answers failed and will be retried on the next run: "
                 f"{failed['error'][0]}")  # fmt: skip

        t = time.time()
        answer = {(r["model"], r["lang"], r["example_id"]): r["response"]
                  for r in gens.filter(pl.col("status") == "ok").iter_rows(named=True)}  # fmt: skip
        pairs = []
        for recipe, lang in exp.eval_pairs():
            base = _baseline_name(exp, lang)
            for ex, lg, instruction in (
                evals.filter(pl.col("lang") == lang)
                .select("example_id", "lang", "instruction")
                .rows()
            ):
                pairs.append(judge.Pair(recipe.name, base, lg, ex, instruction,
                                        answer.get((recipe.name, lg, ex)), answer.get((base, lg, ex)),
                                        models[recipe.name]["model_key"], models[base]["model_key"]))  # fmt: skip
        j = _judge_for(plan, judge_path)
        uncached = [p for p in pairs if not p.is_self and p.candidate_answer and p.baseline_answer
                    and (store.get("verdicts", judge.verdict_key(j, p.instruction, p.candidate_answer, p.baseline_answer)) is None
                         or store.get("verdicts", judge.verdict_key(j, p.instruction, p.baseline_answer, p.candidate_answer)) is None)]  # fmt: skip
        if uncached and cfg.judge is None:
            j = replace(j, api_base=f"{ensure_serving()}/v1")
        judgments = judge.judge_pairs(pairs, j, store, run / "judgments.parquet")
        calls = int(
            (~judgments["cached_1"].fill_null(True)).sum()
            + (~judgments["cached_2"].fill_null(True)).sum()
        )
        meta["phases"]["judge"] = {"pairs": judgments.height, "calls": calls,
                                   "errors": int((judgments["verdict"] == "error").sum()),
                                   "cost_usd": float(judgments["cost_usd"].fill_null(0).sum()),
                                   "seconds": round(time.time() - t, 1)}  # fmt: skip
        _say(f"[judge] {judgments.height} pairs, {calls} judge calls ({time.time() - t:.0f} s)")
        summary = judge.error_summary(judgments)
        if summary:
            _say(f"[judge] {summary}")
    finally:
        if started:
            serving.stop()
    return gens, requests, judgments, calls


def _score(plan: Plan, run: Path, judgments: pl.DataFrame, gens: pl.DataFrame, meta: dict):
    t = time.time()
    table = build_report(run, plan.experiment, judgments, gens, plan.cfg)
    meta["phases"]["score"] = {"seconds": round(time.time() - t, 1)}
    return table


def _shares(cfg_shares: str | None, frame: pl.DataFrame | None) -> dict[str, float]:
    if cfg_shares:
        return {k: float(v) for k, v in json.loads(Path(cfg_shares).read_text()).items()}
    if frame is None:
        return {}
    # Demo: each language's share of the demo pretraining text, in characters.
    train = frame.filter(pl.col("split") == "train")
    chars = train.group_by("lang").agg(n=(pl.col("instruction").str.len_chars()
                                          + pl.col("response").str.len_chars()).sum())  # fmt: skip
    total = chars["n"].sum()
    return {lang: n / total for lang, n in chars.rows()}


def build_report(
    run: Path, exp, judgments: pl.DataFrame, gens: pl.DataFrame | None, cfg
) -> pl.DataFrame:
    """Scores, tables and figures from judgments (and generations for Appendix E)."""
    from mlit import langid, plots, scores

    n_boot = getattr(cfg, "n_boot", 1000)
    s = scores.score(judgments, n_boot=n_boot, seed=getattr(cfg, "seed", 0))
    s.table.write_parquet(run / "scores.parquet")
    frame = None
    try:
        frame = data.open_source(cfg.data) if getattr(cfg, "data", None) else None
    except data.DataError:
        frame = None
    shares = _shares(getattr(cfg, "pretraining_shares", None), frame)
    tables = scores.tables_for(s, exp, shares)
    tables["order_consistency"] = scores.order_consistency(judgments)
    if gens is not None and gens.height:
        tables["appE_response_language"] = langid.response_language(gens)
    scores.write_tables(tables, run / "tables")
    note = plots.NOTE_DEMO if getattr(cfg, "preset", "demo") == "demo" else None
    figures = plots.figures_for({k: v for k, v in tables.items() if k.startswith("fig")}, exp,
                                run / "figures", note)  # fmt: skip
    main_stem = next(k for k in tables if k.startswith("fig"))
    main = tables[main_stem]
    _say(f"\n{exp.figure} — {exp.title}\n")
    _say(scores.to_markdown(main.select([c for c in main.columns if "ci_" not in c])))
    _say(f"tables:  {run / 'tables'}  ({len(tables)} tables)")
    _say("figures: " + ", ".join(str(p) for p in figures))
    return main


def report(run_dir: str | Path) -> pl.DataFrame:
    """Rebuild every table and figure of a run from its files alone."""
    run = Path(run_dir)
    meta_path = run / "run.json"
    if not meta_path.exists():
        raise FileNotFoundError(f"{run}: no run.json (is this a run folder of mlit?)")
    meta = json.loads(meta_path.read_text())
    cfg_dict = meta["config"]
    cfg_dict["languages"] = tuple(cfg_dict["languages"]) if cfg_dict.get("languages") else None
    cfg_dict["sampling"] = (
        SamplingParams(**cfg_dict["sampling"]) if cfg_dict.get("sampling") else None
    )
    cfg = SweepConfig(**cfg_dict)
    exp = _experiment(cfg)
    judgments = pl.read_parquet(run / "judgments.parquet")
    gens_path = run / "generations.parquet"
    gens = pl.read_parquet(gens_path) if gens_path.exists() else None
    return build_report(run, exp, judgments, gens, cfg)
