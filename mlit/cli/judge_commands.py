"""`mlit judge check`: a judge's agreement with human preferences, per language, before a study
spends on it (`mlit.judging.check`). Registered on the one command line in `mlit.cli.main`.
"""

from __future__ import annotations

from pathlib import Path

import click

from mlit.plumbing import console

PathArg = click.Path(path_type=Path)


@click.group("judge", short_help="Check a judge against human preferences.")
def judge_app() -> None:
    """Check a judge before a study spends on it."""


@judge_app.command("check")
@click.option("--judge", "model", required=True, help="A litellm model, e.g. openai/gpt-4o.")
@click.option("--judge-api-base", default=None, help="Its endpoint (a self-hosted judge).")
@click.option("--judge-api-key-env", default=None, help="The variable holding its key.")
@click.option("--judge-prompt", default=None, help="Template name or file (default: paper).")
@click.option(
    "--data",
    required=True,
    help="Human preferences in MM-Eval's shape: a .parquet/.jsonl file or a hub dataset.",
)
@click.option("--languages", default=None, help="Comma-separated language values (default: all).")
@click.option("--per-language", type=int, default=200, show_default=True)
@click.option("--out", type=PathArg, default=None, help="Write the table (.csv or .parquet).")
@click.option("--max-cost", type=float, default=None, help="Stop before passing this many USD.")
@click.option("--judge-input-price", type=float, default=None, help="$ per million input tokens.")
@click.option("--judge-output-price", type=float, default=None, help="$ per million output.")
@click.option("--judge-concurrency", type=int, default=32, show_default=True)
@click.option("--store", default=None, help="Where verdicts are kept (default: mlit's store).")
@click.option("--seed", type=int, default=0, show_default=True)
def judge_check(
    model, judge_api_base, judge_api_key_env, judge_prompt, data, languages, per_language, out,
    max_cost, judge_input_price, judge_output_price, judge_concurrency, store, seed,
) -> None:  # fmt: skip
    """Judge human preference pairs as a study judges them (template, both orders, greedy, the
    verdict cache) and report, per language: agreement with the humans (a win in both orders 1,
    a tie 0.5, a loss 0), order consistency and tie rate, with bootstrap intervals. Costs two
    judge calls per pair; pairs judged before cost nothing."""
    from mlit.judging import check
    from mlit.judging.judge import Judge, JudgeError
    from mlit.providers import llm, pricing
    from mlit.results.scores import to_markdown
    from mlit.store.artifacts import Store, default_root

    try:
        j = Judge(
            model,
            api_base=judge_api_base,
            api_key_env=judge_api_key_env,
            template=judge_prompt,
            concurrency=judge_concurrency,
        )
        j.api_key()
        frame = check.select(
            check.load(data),
            [x.strip() for x in languages.split(",")] if languages else None,
            per_language,
            seed,
        )
        prices = pricing.prices_for(model, judge_input_price, judge_output_price)
        budget = pricing.Budget(max_cost, prices)
        by_language, by_subset, _ = check.run(frame, j, Store(store or default_root()), budget)
    except (check.CheckError, JudgeError, ValueError, pricing.BudgetError, llm.ProviderStop) as err:
        console.fail(str(err))
    shown = ("pairs", "agreement", "agreement_ci_low", "agreement_ci_high", "order_consistency")
    click.echo(to_markdown(by_language.select("language", *shown, "tie_rate", "errors"), 3))
    if by_subset.height > 1:
        click.echo(to_markdown(by_subset.select("subset", *shown, "tie_rate", "errors"), 3))
    chance = by_language.filter(by_language["within_chance"])["language"].to_list()
    if chance:
        click.echo(
            f"within noise of chance (agreement's interval holds {check.CHANCE}): "
            f"{', '.join(chance)}: this judge's verdicts there do not tell answers apart"
        )
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        if out.suffix == ".parquet":
            by_language.write_parquet(out)
        else:
            by_language.write_csv(out)
        click.echo(f"wrote {out}")
