"""The `mlit` command line (click, like the sweep scripts' flags in `mlit.cli.flags`). Each command is a
thin shell over one module's functions; heavy stacks are imported inside the command that uses them.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from mlit.cli import (
    flags,
    human_commands,
    judge_commands,
    model_commands,
    store_commands,
    translation_commands,
)
from mlit.data import dataset
from mlit.method import experiments, languages, mixtures
from mlit.planning.config import SweepConfig
from mlit.plumbing import console

PathArg = click.Path(path_type=Path)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def app() -> None:
    """Multilingual instruction tuning sweeps: data, mixtures, training, serving, judging."""


@app.group("data")
def data_app() -> None:
    """Build, inspect and validate parallel datasets."""


app.add_command(human_commands.human_app, "human")
app.add_command(judge_commands.judge_app, "judge")
app.add_command(store_commands.store_app, "store")
app.add_command(model_commands.demo_model_cmd, "demo-model")
app.add_command(model_commands.serve_cmd, "serve")
app.add_command(model_commands.demo_judge_cmd, "demo-judge")
app.add_command(translation_commands.translate_cmd, "translate")
data_app.add_command(translation_commands.data_paper_cmd, "paper")


def _load(source: str):
    try:
        return dataset.open_source(source)
    except dataset.DataError as err:
        console.fail(str(err))


@data_app.command("validate")
@click.argument("path")
@click.option(
    "--languages", "languages_", help="Languages every example must have (default: all present)."
)
@click.option("--limit", default=10, show_default=True, help="How many problems to list per kind.")
@click.option(
    "--base-model",
    help="Also check that every eval prompt fits this model's context (a directory or hub id).",
)
@click.option(
    "--max-tokens", default=512, show_default=True, help="New tokens each answer may take."
)
def data_validate(
    path: str, languages_: str | None, limit: int, base_model: str | None, max_tokens: int
) -> None:
    """Check a parallel dataset: undecodable lines, missing languages, duplicates, empty texts,
    eval leakage, and (with --base-model) eval prompts too long for the model's context.

    PATH: a .jsonl/.parquet file or folder, 'hf:NAME', or 'sample'."""
    from dataclasses import replace

    frame = _load(path)
    try:
        report = dataset.validate(frame, languages_)
    except (languages.UnknownLanguageError, dataset.DataError) as err:
        console.fail(str(err))
    if base_model:
        from mlit.sweep import preflight

        try:
            count, context = preflight.prompt_length(base_model)
        except (OSError, ValueError) as err:
            console.fail(f"--base-model {base_model}: cannot read its tokenizer ({err})")
        if context is not None:
            long = dataset.too_long(frame, count, context, max_tokens)
            report = replace(report, problems=report.problems + tuple(long))
    click.echo(report.summary(limit))
    if not report.ok:
        sys.exit(1)


EXPERIMENTS = f"EXPERIMENT: one of {', '.join(experiments.NAMES)}."


@app.command("mixtures", epilog=EXPERIMENTS)
@click.argument("experiment")
@click.option(
    "--budget", type=int, help="Examples per mixture (default: every training example of --data)."
)
@click.option(
    "--seed", default=0, show_default=True, help="Seed of the assignment and the dev set."
)
@click.option(
    "--data",
    "data_source",
    default="sample",
    show_default=True,
    help="Dataset whose training ids are assigned: 'sample', a path, or 'none' for "
    "placeholder ids (needs --budget; e.g. --budget 4640 for the paper's scale).",
)
@click.option("--dev-size", type=int, help="Dev examples held out per mixture.")
@click.option("--baselines/--no-baselines", help="Also list the baseline models scores need.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def mixtures_cmd(
    experiment: str,
    budget: int | None,
    seed: int,
    data_source: str,
    dev_size: int | None,
    baselines: bool,
    as_json: bool,
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
        ids = dataset.train_ids(_load(data_source))
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
    click.echo(f"{exp.name} ({exp.section}, {exp.figure}): {exp.title}")
    click.echo(f"budget {built[0].budget}, seed {seed}, {len(built)} mixtures")
    width = max(len(m.name) for m in built)
    for m in built:
        counts = " ".join(f"{lang}:{n}" for lang, n in m.counts.items())
        click.echo(f"  {m.name:<{width}}  {m.hash}  {counts}")
    distinct = len({m.hash for m in built})
    if distinct < len(built):
        click.echo(f"{distinct} distinct mixtures (identical assignments share one model)")


@app.command("languages")
def languages_cmd() -> None:
    """List the known language codes."""
    for code in languages.known():
        lang = languages.get(code)
        click.echo(f"{code:<4} {lang.name:<12} {lang.script:<5} {lang.family}")


# `mlit train`'s flags are the sweep scripts' own (`mlit.cli.flags`), for the fields training reads.
TRAIN_FIELDS = (
    "preset",
    "base_model",
    "data",
    "languages",
    "store",
    "budget",
    "workers",
    "gpus_per_worker",
    "zero_stage",
    "lora_rank",
    "max_steps",
    "eval_every",
    "dropout_scope",
    "dev_max_tokens",
    "seed",
    "tracking_uri",
)


def _train(experiment: str, **values) -> None:
    from mlit.results import tracking
    from mlit.store.artifacts import Store, default_root
    from mlit.sweep.pipeline import plan_sweep
    from mlit.training import trials

    try:
        cfg = flags.apply(SweepConfig(experiment=experiment), flags.given(values))
        p = plan_sweep(cfg)
        store = Store(cfg.store or default_root())
    except ValueError as err:
        console.fail(str(err))
    tracker = tracking.start(
        tracking.uri_of(cfg.tracking_uri), f"mlit-{p.experiment.name}", "mlit train",
        {"experiment": p.experiment.name, "base_model": p.base_model, "models": len(p.jobs),
         "config": cfg.to_dict()}, {"mlit/command": "train"},
    )  # fmt: skip
    try:
        result = trials.train_phase(p.jobs, store, p.compute, p.experiment.name, tracker)
    except (ValueError, trials.ResourceError) as err:
        if tracker is not None:
            tracking.end(tracker, tracker.parent_run_id, "FAILED")
        console.fail(str(err))
    if tracker is not None:
        tracking.end(tracker, tracker.parent_run_id, "FAILED" if result.failed else "FINISHED")
    click.echo(result.table())
    if result.failed:
        console.fail(f"{len(result.failed)} model(s) failed to train; the others are stored", 1)


app.add_command(
    click.Command(
        "train",
        callback=_train,
        params=[
            click.Argument(["experiment"]),
            *flags.options(SweepConfig(experiment="monolingual"), TRAIN_FIELDS),
        ],
        help="Train every model an experiment needs (its mixtures and baselines) that the store "
        "lacks: the training phase of a sweep, on the same plan.",
        epilog=EXPERIMENTS,
    )
)


@app.command("report")
@click.argument("run_dir", type=PathArg)
@click.option(
    "--compare-paper", is_flag=True, help="Also set the run beside the paper's published numbers."
)
@click.option(
    "--open", "open_page", is_flag=True, help="Open the run's report.html in the web browser."
)
def report_cmd(run_dir: Path, compare_paper: bool, open_page: bool) -> None:
    """Rebuild every table, figure and the report.html page of a run (RUN_DIR, a run folder
    written by a sweep) from its files, and print the main table."""
    import webbrowser

    from mlit.results import analysis, comparison, report_page
    from mlit.results.run_folder import RunFolder, RunFolderError

    try:
        analysis.rebuild(run_dir)
        if compare_paper:
            comparison.compare(run_dir)
            report_page.write(RunFolder.open(run_dir))  # with the comparison's table and figure
    except RunFolderError as err:
        console.fail(str(err))
    page = Path(run_dir).resolve() / report_page.PAGE
    if open_page and not webbrowser.open(page.as_uri()):
        console.fail(f"no web browser found to open {page}; open that file by hand")


@app.command("compare")
@click.argument("runs", nargs=-1, required=True)
@click.option("--out", type=PathArg, default=Path("compare.html"), show_default=True)
@click.option(
    "--tracking-uri",
    default=None,
    help="MLflow server to fetch RUNS from where they are run ids, not folders (default: "
    "$MLFLOW_TRACKING_URI).",
)
@click.option("--n-boot", default=1000, show_default=True, help="Bootstrap replicates.")
def compare_cmd(runs: tuple[str, ...], out: Path, tracking_uri: str | None, n_boot: int) -> None:
    """Runs of one experiment side by side (other base models, seeds, judges): RUNS are run
    folders, or MLflow run ids of tracked sweeps. The page shows the experiment's figure with
    one line per run and, for each cell, the difference from the first run with a paired
    bootstrap interval over the same instructions; significant differences are marked."""
    from mlit.results import comparison_page, run_comparison, tracking

    uri = tracking.uri_of(tracking_uri)
    folders = []
    for given in runs:
        if Path(given).is_dir() or uri is None:
            folders.append(Path(given))
            continue
        try:
            folders.append(tracking.download(uri, given, out.with_suffix(".runs") / given))
        except ValueError as err:
            console.fail(str(err))
    try:
        loaded = run_comparison.load(folders)
    except run_comparison.CompareError as err:
        console.fail(str(err))
    page, tables = comparison_page.write(loaded, out, n_boot)
    for other, cells in zip(loaded[1:], tables, strict=True):
        significant = int(cells["significant"].sum()) if cells.height else 0
        click.echo(
            f"{other.label} - {loaded[0].label}: {significant} of {cells.height} cells differ "
            "significantly"
        )
    click.echo(f"comparison page: {page}")


@app.command("estimate")
@click.argument("experiment")
@click.option("--params", default=1.5e9, show_default=True, help="Base-model parameters.")
@click.option("--gpu", default="h100", show_default=True, help="h100, h200, a100, l40s, a10g.")
@click.option("--gpus", default=8, show_default=True, help="GPUs in the cluster.")
@click.option(
    "--train-mfu",
    type=float,
    help="Training MFU (default: measured by benchmarks/gpu.py for this GPU, else 0.40).",
)
@click.option(
    "--generation-mfu", default=0.05, show_default=True, help="Decoding MFU, if none measured."
)
@click.option(
    "--results", type=PathArg, help="benchmarks/gpu.py results (default: benchmarks/results)."
)
@click.option("--judge-input-price", default=2.50, show_default=True, help="$ per M input tokens.")
@click.option(
    "--judge-output-price", default=10.00, show_default=True, help="$ per M output tokens."
)
def estimate_cmd(
    experiment: str,
    params: float,
    gpu: str,
    gpus: int,
    train_mfu: float | None,
    generation_mfu: float,
    results: Path | None,
    judge_input_price: float,
    judge_output_price: float,
) -> None:
    """Estimate GPU-hours, wall time, judge calls and dollars at the paper's scale, before launch.
    EXPERIMENT: an experiment, or 'paper' for all of them."""
    from mlit.planning import estimate

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
    click.echo(estimate.render(estimate.estimate(names, a), a))


def main() -> None:
    """The `mlit` command: expected failures end in one line and exit code 2, bugs in a
    traceback and exit code 1 (`mlit.plumbing.console.exit_for`)."""
    try:
        app(standalone_mode=True)
    except (Exception, KeyboardInterrupt) as err:
        console.exit_for(err)
