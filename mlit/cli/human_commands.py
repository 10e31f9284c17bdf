"""`mlit human`: the paper's human studies (Fig. 2, App. D) and its manual language check (App. E).

Registered on the one command line in `mlit.cli.main`.
"""

from __future__ import annotations

import json
from pathlib import Path

import click
import polars as pl

from mlit.method import languages
from mlit.plumbing import console
from mlit.results.run_folder import RunFolderError


@click.group("human", short_help="Human validation kits: Fig. 2, App. D and App. E.")
def human_app() -> None:
    """Human validation kits: Fig. 2 ratings, App. D agreement, App. E response language."""


PathArg = click.Path(path_type=Path)


@human_app.command("export")
@click.argument("run_dir", type=PathArg)
@click.option("--per-language", default=50, show_default=True, help="Instructions per language.")
@click.option("--languages", "languages_", default="en,es,ru,he", show_default=True)
@click.option("--out", type=PathArg, default=Path("human_eval.csv"), show_default=True)
@click.option("--seed", default=0, show_default=True)
def human_export(run_dir: Path, per_language: int, languages_: str, out: Path, seed: int) -> None:
    """Fig. 2 and App. D kit from RUN_DIR (a run holding the monolingual models): each language's
    monolingual model rated, and set beside a random other monolingual model; a CSV for raters
    and its key file."""
    from mlit.results import human

    try:
        frame, key = human.export(run_dir, per_language, seed, languages.parse(languages_))
    except (human.HumanKitError, languages.UnknownLanguageError, FileNotFoundError) as err:
        console.fail(str(err))
    csv, key_path = human.write_kit(frame, key, out)
    click.echo(f"{frame.height} items -> {csv} (keep {key_path} away from the raters)")


@human_app.command("import")
@click.argument("filled", nargs=-1, required=True, type=PathArg)
@click.option("--key", type=PathArg, required=True, help="The key file `mlit human export` wrote.")
@click.option(
    "--out-dir", type=PathArg, default=Path("human_results"), show_default=True, help="Tables."
)
@click.option(
    "--run",
    "run_dir",
    type=PathArg,
    default=None,
    help="The run folder whose results page shows the agreement (default: the run the kit was "
    "exported from, named in the key file, where it still exists).",
)
def human_import(filled: tuple[Path, ...], key: Path, out_dir: Path, run_dir: Path | None) -> None:
    """Read FILLED CSVs (one per rater): rating distribution per language, judge-human and
    human-human agreement (beside the paper's Table 3), also shown on the run's results page."""
    from mlit.results import comparison, human, scores

    try:
        keys = json.loads(key.read_text())
        frame = human.read_filled(list(filled))
        ratings = human.rating_distribution(frame)
        agree = human.agreements(frame, keys)
    except (human.HumanKitError, FileNotFoundError, json.JSONDecodeError) as err:
        console.fail(str(err))
    if run_dir is None and keys.get(human.RUN_ENTRY):
        exported_from = Path(keys[human.RUN_ENTRY])
        run_dir = exported_from if (exported_from / "run.json").exists() else None
    paper = comparison.published()["appD_agreement"]["rows"]
    agree = agree.with_columns(
        paper_judge_human=pl.col("eval_lang").replace_strict(
            {k: v["judge_human"] for k, v in paper.items()}, default=None, return_dtype=pl.Float64
        ),
        paper_human_human=pl.col("eval_lang").replace_strict(
            {k: v["human_human"] for k, v in paper.items()}, default=None, return_dtype=pl.Float64
        ),
    )
    scores.write_tables({"fig2_ratings": ratings, "appD_agreement": agree}, out_dir)
    click.echo(scores.to_markdown(ratings))
    click.echo(scores.to_markdown(agree))
    if run_dir is not None:
        try:
            page = human.attach(agree, run_dir)
        except RunFolderError as err:
            console.fail(f"the agreement is in {out_dir}, but not on a results page: {err}")
        click.echo(f"the run's results page shows it: {page}")


@human_app.command("language-export")
@click.argument("run_dir", type=PathArg)
@click.option("--per-language", default=20, show_default=True, help="Answers per language.")
@click.option("--out", type=PathArg, default=Path("response_language.csv"), show_default=True)
@click.option("--seed", default=0, show_default=True)
def human_language_export(run_dir: Path, per_language: int, out: Path, seed: int) -> None:
    """App. E: answers from models tuned on other languages (RUN_DIR holds monolingual models);
    mark same_language yes or no."""
    from mlit.results import human

    try:
        frame, key = human.export_language(run_dir, per_language, seed)
    except (human.HumanKitError, FileNotFoundError) as err:
        console.fail(str(err))
    csv, key_path = human.write_kit(frame, key, out)
    click.echo(
        f"{frame.height} answers -> {csv}: fill same_language with yes or no "
        f"(which model wrote each: {key_path})"
    )


@human_app.command("language-import")
@click.argument("filled", nargs=-1, required=True, type=PathArg)
def human_language_import(filled: tuple[Path, ...]) -> None:
    """App. E: the share of answers in the prompt's language in FILLED CSVs (the paper: 239 of
    240)."""
    from mlit.results import human, scores

    try:
        table = human.language_share(list(filled))
    except human.HumanKitError as err:
        console.fail(str(err))
    click.echo(scores.to_markdown(table))
    total = table.row(-1, named=True)
    click.echo(
        f"{total['same_language']} of {total['answers']} answers in the prompt's language "
        "(the paper: 239 of 240)"
    )
