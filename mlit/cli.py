"""The `mlit` command line. Each command is a thin shell over one module's functions."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from mlit import console, data, experiments, human_commands, languages, mixtures, model_commands

app = typer.Typer(
    help="Multilingual instruction tuning sweeps: data, mixtures, training, serving, judging.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Inspect and validate parallel datasets.", no_args_is_help=True)
app.add_typer(data_app, name="data")
app.add_typer(human_commands.human_app, name="human")
app.command("demo-model")(model_commands.demo_model_cmd)
app.command("serve")(model_commands.serve_cmd)
app.command("demo-judge")(model_commands.demo_judge_cmd)


def _load(source: str):
    try:
        return data.open_source(source)
    except data.DataError as err:
        console.fail(str(err))


@data_app.command("validate")
def data_validate(
    path: str = typer.Argument(
        ..., help="A .jsonl/.parquet file or folder, 'hf:NAME', or 'sample'."
    ),
    languages_: str = typer.Option(
        None, "--languages", help="Languages every example must have (default: all present)."
    ),
    limit: int = typer.Option(10, help="How many problems to list per kind."),
) -> None:
    """Check a parallel dataset: missing languages, duplicates, empty texts, eval leakage."""
    frame = _load(path)
    try:
        report = data.validate(frame, languages_)
    except (languages.UnknownLanguageError, data.DataError) as err:
        console.fail(str(err))
    typer.echo(report.summary(limit))
    if not report.ok:
        raise typer.Exit(1)


@app.command("mixtures")
def mixtures_cmd(
    experiment: str = typer.Argument(..., help=f"One of: {', '.join(experiments.NAMES)}."),
    budget: int = typer.Option(
        None, help="Examples per mixture (default: every training example of --data)."
    ),
    seed: int = typer.Option(0, help="Seed of the assignment and the dev set."),
    data_source: str = typer.Option(
        "sample",
        "--data",
        help="Dataset whose training ids are assigned: 'sample', a path, or 'none' for "
        "placeholder ids (needs --budget; e.g. --budget 4640 for the paper's scale).",
    ),
    dev_size: int = typer.Option(None, help="Dev examples held out per mixture."),
    baselines: bool = typer.Option(False, help="Also list the baseline models scores need."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Print every mixture of an experiment: counts per language and the assignment hash."""
    try:
        exp = experiments.get(experiment, seed)
    except ValueError as err:
        console.fail(str(err))
    if data_source == "none":
        if budget is None:
            console.fail("--data none needs --budget")
        ids = mixtures.placeholder_ids(budget)
    else:
        ids = data.train_ids(_load(data_source))
    try:
        built = experiments.build_all(exp, ids, budget, seed, dev_size, baselines)
    except (mixtures.MixtureError, languages.UnknownLanguageError) as err:
        console.fail(str(err))
    if as_json:
        rows = [
            {"name": m.name, "counts": m.counts, "hash": m.hash, "dev_counts": m.dev_counts}
            for m in built
        ]
        json.dump(rows, sys.stdout, ensure_ascii=False, indent=1)
        sys.stdout.write("\n")
        return
    typer.echo(f"{exp.name} ({exp.section}, {exp.figure}): {exp.title}")
    typer.echo(f"budget {built[0].budget}, seed {seed}, {len(built)} mixtures")
    width = max(len(m.name) for m in built)
    for m in built:
        counts = " ".join(f"{lang}:{n}" for lang, n in m.counts.items())
        typer.echo(f"  {m.name:<{width}}  {m.hash}  {counts}")
    distinct = len({m.hash for m in built})
    if distinct < len(built):
        typer.echo(f"{distinct} distinct mixtures (identical assignments share one model)")


@app.command("languages")
def languages_cmd() -> None:
    """List the known language codes."""
    for code in languages.known():
        lang = languages.get(code)
        typer.echo(f"{code:<4} {lang.name:<12} {lang.script:<5} {lang.family}")


@app.command("train")
def train_cmd(
    experiment: str = typer.Argument(..., help=f"One of: {', '.join(experiments.NAMES)}."),
    base_model: str = typer.Option(None, help="HF hub name or local directory (default: demo)."),
    data_source: str = typer.Option("sample", "--data", help="'sample', a path, or 'hf:NAME'."),
    languages_: str = typer.Option(None, "--languages", help="Restrict to these languages."),
    store_root: str = typer.Option(None, "--store", help="Store folder or URI (s3://, gs://)."),
    preset: str = typer.Option("demo", help="Training hyperparameters: 'demo' or 'paper'."),
    budget: int = typer.Option(None, help="Examples per mixture (default: all training ids)."),
    workers: int = typer.Option(
        None, help="Ray Train workers per trial (default: demo 1, paper 2)."
    ),
    gpus_per_worker: float = typer.Option(0.0, help="GPUs per worker (0: CPU)."),
    zero_stage: int = typer.Option(2, help="DeepSpeed ZeRO stage, 0-3."),
    lora_rank: int = typer.Option(0, help="LoRA rank; 0 trains all weights."),
    max_steps: int = typer.Option(None, help="Override the preset's training steps."),
    seed: int = typer.Option(0, help="Seed of mixtures and training."),
) -> None:
    """Train every model an experiment needs (its mixtures and baselines) that the store lacks:
    the training phase of a sweep, on the same plan."""
    from mlit import plan, trials
    from mlit.config import SweepConfig
    from mlit.store import Store, default_root

    try:
        cfg = SweepConfig(
            experiment=experiment,
            preset=preset,
            base_model=base_model,
            data=data_source,
            languages=tuple(languages_.split(",")) if languages_ else None,
            store=store_root,
            workers=workers,
            gpus_per_worker=gpus_per_worker,
            zero_stage=zero_stage,
            lora_rank=lora_rank,
            seed=seed,
            budget=budget,
            max_steps=max_steps,
        )
        p = plan.prepare(cfg)
        store = Store(cfg.store or default_root())
        result = trials.train_phase(p.jobs, store, p.compute, p.experiment.name)
    except (ValueError, trials.ResourceError) as err:
        console.fail(str(err))
    typer.echo(result.table())
    if result.failed:
        console.fail(f"{len(result.failed)} model(s) failed to train; the others are stored", 1)


@app.command("report")
def report_cmd(
    run_dir: Path = typer.Argument(..., help="A run folder written by a sweep."),
    compare_paper: bool = typer.Option(
        False, "--compare-paper", help="Also set the run beside the paper's published numbers."
    ),
    open_page: bool = typer.Option(
        False, "--open", help="Open the run's report.html in the web browser afterwards."
    ),
) -> None:
    """Rebuild every table, figure and the report.html page of a run from its files, and print
    the main table."""
    import webbrowser

    from mlit import comparison, report, results_page
    from mlit.run_folder import RunFolder, RunFolderError

    try:
        report.rebuild(run_dir)
        if compare_paper:
            comparison.compare(run_dir)
            results_page.write(RunFolder(run_dir))  # with the comparison's table and figure
    except RunFolderError as err:
        console.fail(str(err))
    page = Path(run_dir).resolve() / results_page.PAGE
    if open_page and not webbrowser.open(page.as_uri()):
        console.fail(f"no web browser found to open {page}; open that file by hand")


store_app = typer.Typer(
    help="Inspect and repair the content-addressed store.", no_args_is_help=True
)
app.add_typer(store_app, name="store")


@store_app.command("verify")
def store_verify(
    store_root: str = typer.Option(
        None, "--store", help="Store folder or URI (default: ~/.cache/mlit/store)."
    ),
    repair: bool = typer.Option(
        False, "--repair", help="Delete damaged entries (redone by the next run)."
    ),
) -> None:
    """Check every model (sha256 of each file) and record (sha256 of its content) in a store."""
    from mlit.store import Store, default_root

    root = store_root or default_root()
    if "://" not in str(root) and not Path(root).is_dir():
        console.fail(f"no store at {root}: nothing was stored there (check --store)")
    store = Store(root)
    damaged: list[tuple[str, str, str, object]] = []
    for key in store.model_keys():
        problem = store.model_problem(key, full=True)
        if problem:
            damaged.append(("model", key, problem, lambda k=key: store.delete_model(k)))
    records = 0
    for kind in store.record_kinds():
        for key in store.keys(kind):
            records += 1
            problem = store.record_problem(kind, key)
            if problem:
                damaged.append(
                    (kind, key, problem, lambda k=key, c=kind: store.delete_record(c, k))
                )
    typer.echo(f"{len(store.model_keys())} models and {records} records checked in {store.root}")
    for kind, key, problem, delete in damaged:
        typer.echo(f"  damaged {kind} {key}: {problem}" + ("  -> deleted" if repair else ""))
        if repair:
            delete()
    if damaged and not repair:
        console.fail(
            f"{len(damaged)} damaged entries; `mlit store verify --repair` deletes them so "
            "the next run redoes them",
            1,
        )
    typer.echo("all good" if not damaged else f"{len(damaged)} damaged entries deleted")


@app.command("estimate")
def estimate_cmd(
    experiment: str = typer.Argument(..., help="An experiment, or 'paper' for all of them."),
    params: float = typer.Option(1.5e9, help="Base-model parameters."),
    gpu: str = typer.Option("h100", help="GPU type: h100, h200, a100, l40s, a10g."),
    gpus: int = typer.Option(8, help="GPUs in the cluster."),
    train_mfu: float = typer.Option(
        None, help="Training MFU (default: measured by benchmarks/gpu.py for this GPU, else 0.40)."
    ),
    generation_mfu: float = typer.Option(0.05, help="MFU when decoding, if nothing is measured."),
    results: Path = typer.Option(
        None, help="Folder of benchmarks/gpu.py results (default: benchmarks/results)."
    ),
    judge_input_price: float = typer.Option(2.50, help="Judge $ per million input tokens."),
    judge_output_price: float = typer.Option(10.00, help="Judge $ per million output tokens."),
) -> None:
    """Estimate GPU-hours, wall time, judge calls and dollars at the paper's scale, before launch."""
    from mlit import estimate

    names = list(experiments.NAMES) if experiment == "paper" else [experiment]
    try:
        for name in names:
            experiments.get(name)
        found = estimate.measured(gpu, params, results or estimate.RESULTS) or {}
        if train_mfu is not None:  # the user's own figure wins over a measurement
            found["train_mfu"] = train_mfu
        a = estimate.Assumptions(
            params=params,
            gpu=gpu,
            gpus=gpus,
            train_mfu=found.get("train_mfu", 0.40),
            generation_mfu=generation_mfu,
            generation_tokens_per_s=found.get("generation_tokens_per_s"),
            measured_from=found.get("measured_from"),
            judge_input_price=judge_input_price,
            judge_output_price=judge_output_price,
        )
    except ValueError as err:
        console.fail(str(err))
    typer.echo(estimate.render(estimate.estimate(names, a), a))


@app.command("translate")
def translate_cmd(
    source: str = typer.Option(..., help="English dataset: a JSONL/Parquet path or 'hf:NAME'."),
    languages_: str = typer.Option(..., "--languages", help="Target languages, e.g. 'ar,cs,fi'."),
    translator: str = typer.Option(..., help="litellm model string, e.g. openai/gpt-4o-mini."),
    api_base: str = typer.Option(None, help="Endpoint (self-hosted translators, our Serve app)."),
    api_key_env: str = typer.Option(None, help="Environment variable holding the API key."),
    out: Path = typer.Option(..., help="Where to write the parallel dataset (.jsonl/.parquet)."),
    store_root: str = typer.Option(None, "--store", help="Store folder or URI (the cache)."),
    concurrency: int = typer.Option(8, help="Requests in flight."),
    timeout_s: float = typer.Option(120.0, "--timeout", help="Seconds per request."),
    strict: bool = typer.Option(False, help="Fail when any quality check flags a row."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Estimate calls, tokens and cost only."),
) -> None:
    """Translate an English dataset into other languages (cached, resumable, quality-checked)."""
    from mlit import llm, translate
    from mlit.store import Store, default_root

    try:
        langs = languages.parse(languages_)
        frame = data.open_source(source)
        endpoint = llm.Endpoint(translator, api_base, api_key_env, timeout_s)
        if api_key_env:
            endpoint.api_key()  # a missing key is an error now, not 10,000 failed calls later
        t = translate.Translator(endpoint, concurrency)
    except (ValueError, data.DataError) as err:
        console.fail(str(err))
    store = Store(store_root or default_root())
    if dry_run:
        est = translate.dry_run(frame, langs, t, store)
        price = "unknown price" if est["cost_usd"] is None else f"${est['cost_usd']:.2f}"
        typer.echo(
            f"{est['calls']} calls, ~{est['prompt_tokens']:,} prompt and "
            f"~{est['completion_tokens']:,} completion tokens, {price}"
        )
        return
    outcome = translate.translate(frame, langs, t, store)
    translate.write(outcome.frame, out)
    typer.echo(
        f"{outcome.calls} translations requested, {outcome.cached} from the store; "
        f"wrote {outcome.frame.height} rows to {out}"
    )
    report = translate.quality_report(outcome.frame)
    if report.height:
        typer.echo(f"quality checks flagged {report.height} text(s):")
        for r in report.head(50).iter_rows(named=True):
            typer.echo(
                f"  {r['check']:<16} {r['example_id']} [{r['lang']}] {r['field']}: {r['detail']}"
            )
    if outcome.failures.height:
        first = outcome.failures.row(0, named=True)
        console.fail(
            f"{outcome.failures.height} translation(s) failed and were not written (rerun to "
            f"retry); first: {first['example_id']} [{first['lang']}]: {first['error']}",
            1,
        )
    if strict and report.height:
        console.fail(f"--strict: {report.height} flagged text(s)", 1)


def main() -> None:
    """The `mlit` command: expected failures end in one line and exit code 2, bugs in a
    traceback and exit code 1 (`mlit.console.exit_for`)."""
    try:
        app()
    except (Exception, KeyboardInterrupt) as err:
        console.exit_for(err)
