"""`mlit human`: the paper's human studies (Fig. 2, App. D) and its manual language check (App. E).

Registered on the one command line in `mlit.cli`.
"""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import typer

from mlit import console, languages

human_app = typer.Typer(
    help="Human validation kits: Fig. 2 ratings, App. D agreement, App. E response language.",
    no_args_is_help=True,
)


@human_app.command("export")
def human_export(
    run_dir: Path = typer.Argument(..., help="A run folder holding the monolingual models."),
    per_language: int = typer.Option(50, help="Instructions per language (the paper: 50)."),
    languages_: str = typer.Option("en,es,ru,he", "--languages", help="The paper's four."),
    out: Path = typer.Option(Path("human_eval.csv"), help="CSV for the raters."),
    seed: int = typer.Option(0),
) -> None:
    """Fig. 2 and App. D kit: each language's monolingual model rated, and set beside a random
    other monolingual model; a CSV for raters and its key file."""
    from mlit import human

    try:
        frame, key = human.export(run_dir, per_language, seed, languages.parse(languages_))
    except (human.HumanKitError, languages.UnknownLanguageError, FileNotFoundError) as err:
        console.fail(str(err))
    csv, key_path = human.write_kit(frame, key, out)
    typer.echo(f"{frame.height} items -> {csv} (keep {key_path} away from the raters)")


@human_app.command("import")
def human_import(
    filled: list[Path] = typer.Argument(..., help="Filled CSVs, one per rater."),
    key: Path = typer.Option(..., help="The key file written by `mlit human export`."),
    out_dir: Path = typer.Option(Path("human_results"), help="Where to write the two tables."),
) -> None:
    """Read filled CSVs: rating distribution per language, judge-human and human-human agreement
    (beside the paper's Table 3)."""
    from mlit import comparison, human, scores

    try:
        frame = human.read_filled(filled)
        ratings = human.rating_distribution(frame)
        agree = human.agreements(frame, json.loads(key.read_text()))
    except human.HumanKitError as err:
        console.fail(str(err))
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
    typer.echo(scores.to_markdown(ratings))
    typer.echo(scores.to_markdown(agree))


@human_app.command("language-export")
def human_language_export(
    run_dir: Path = typer.Argument(..., help="A run folder holding monolingual models."),
    per_language: int = typer.Option(20, help="Answers per language (the paper: 20)."),
    out: Path = typer.Option(Path("response_language.csv"), help="CSV to fill in."),
    seed: int = typer.Option(0),
) -> None:
    """App. E: answers from models tuned on other languages; mark same_language yes or no."""
    from mlit import human

    try:
        frame, key = human.export_language(run_dir, per_language, seed)
    except (human.HumanKitError, FileNotFoundError) as err:
        console.fail(str(err))
    csv, key_path = human.write_kit(frame, key, out)
    typer.echo(
        f"{frame.height} answers -> {csv}: fill same_language with yes or no "
        f"(which model wrote each: {key_path})"
    )


@human_app.command("language-import")
def human_language_import(
    filled: list[Path] = typer.Argument(..., help="Filled App. E CSVs."),
) -> None:
    """App. E: the share of answers in the prompt's language (the paper: 239 of 240)."""
    from mlit import human, scores

    try:
        table = human.language_share(filled)
    except human.HumanKitError as err:
        console.fail(str(err))
    typer.echo(scores.to_markdown(table))
    total = table.row(-1, named=True)
    typer.echo(
        f"{total['same_language']} of {total['answers']} answers in the prompt's language "
        "(the paper: 239 of 240)"
    )
