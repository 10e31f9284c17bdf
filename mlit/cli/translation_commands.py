"""`mlit translate` and `mlit data paper`: machine translation from the command line.

Both share the translator's options (endpoint, key, concurrency, rate limits, prices) and the
same path: cached per text, every translation checked before it is written (`translation_checks`),
failures reported with their example id and asked again on the next run.
"""

from __future__ import annotations

import functools
from pathlib import Path

import click

from mlit.data import dataset
from mlit.method import languages
from mlit.plumbing import console

PathArg = click.Path(path_type=Path)


def translator_options(command):
    """The options every translating command takes."""
    options = [
        click.option("--translator", required=True, help="litellm model, e.g. openai/gpt-4o-mini."),
        click.option("--api-base", help="Endpoint (self-hosted translators, our Serve app)."),
        click.option("--api-key-env", help="Environment variable holding the API key."),
        click.option("--store", "store_root", help="Store folder or URI (the cache)."),
        click.option("--concurrency", default=8, show_default=True, help="Requests in flight."),
        click.option("--rpm", type=float, help="Requests per minute the provider allows."),
        click.option("--tpm", type=float, help="Tokens per minute the provider allows."),
        click.option(
            "--timeout", "timeout_s", default=120.0, show_default=True, help="Seconds a request."
        ),
        click.option(
            "--input-price", type=float, help="$ per million input tokens (default: litellm's)."
        ),
        click.option(
            "--output-price", type=float, help="$ per million output tokens (default: litellm's)."
        ),
        click.option(
            "--mode",
            type=click.Choice(["online", "batch"]),
            default="online",
            show_default=True,
            help="batch: through the provider's Batch API (half price, resumable by batch id).",
        ),
        click.option(
            "--max-cost",
            type=float,
            help="Dollars the translation may cost: over it by estimate, nothing is sent; a run "
            "stops before passing it (resumable).",
        ),
        click.option(
            "--batch-poll",
            type=float,
            default=10.0,
            show_default=True,
            help="Seconds before a batch is first polled (later polls back off).",
        ),
        click.option("--dry-run", is_flag=True, help="Print texts, tokens and cost; no call."),
    ]
    return functools.reduce(lambda f, option: option(f), reversed(options), command)


def _translator(values: dict):
    """(Translator, prices) from the shared options; a bad value is a one-line error now."""
    from mlit.data import translation
    from mlit.providers import llm, rate_limits

    try:
        endpoint = llm.Endpoint(
            values["translator"], values["api_base"], values["api_key_env"], values["timeout_s"]
        )
        if values["api_key_env"]:
            endpoint.api_key()  # a missing key is an error now, not 10,000 failed calls later
        limiter = (
            rate_limits.Limiter(values["rpm"], values["tpm"])
            if values["rpm"] is not None or values["tpm"] is not None
            else None
        )
        t = translation.Translator(endpoint, values["concurrency"], limiter=limiter)
    except ValueError as err:
        console.fail(str(err))
    given = (values["input_price"], values["output_price"])
    if (given[0] is None) != (given[1] is None):
        console.fail("give both --input-price and --output-price, or neither")
    return t, (None if given[0] is None else given)


def _budget(values: dict, t, prices, est: dict):
    """(Budget, BatchOptions or None) from the options; an estimate over --max-cost stops here,
    before any call."""
    from mlit.providers import batch_api, pricing

    batch = values["mode"] == "batch"
    given = prices or (None, None)
    try:
        priced = pricing.prices_for(t.endpoint.model, *given)
        budget = pricing.Budget(values["max_cost"], priced, batch=batch)
        if values["max_cost"] is not None and priced is None:
            raise ValueError(
                f"--max-cost needs the translator's price: litellm has none for "
                f"{t.endpoint.model}; give --input-price and --output-price"
            )
        expected = (est["cost_usd"] or 0.0) * (pricing.BATCH_DISCOUNT if batch else 1.0)
        pricing.check_plan(expected, values["max_cost"], f"translation ({values['mode']})")
        opts = batch_api.BatchOptions(poll_s=values["batch_poll"]) if batch else None
    except (ValueError, pricing.BudgetError) as err:
        console.fail(str(err))
    return budget, opts


def _report_cost(outcome) -> None:
    click.echo(f"cost: ${outcome.cost_usd:,.4f}")
    if outcome.usage_estimated:
        click.echo(
            f"{outcome.usage_estimated} replies came without usage: each was charged at mlit's "
            "upper estimate of its tokens"
        )
    if outcome.stopped:
        then = (
            "rerun with a larger --max-cost to go on" if outcome.budget_stop else "rerun to go on"
        )
        console.fail(
            f"translation stopped: {outcome.stopped}; what was translated is stored: {then}", 1
        )


def _store(store_root: str | None):
    from mlit.store.artifacts import Store, default_root

    return Store(store_root or default_root())


def _echo_estimate(est: dict) -> None:
    price = (
        "unknown price (give --input-price/--output-price)"
        if est["cost_usd"] is None
        else (f"${est['cost_usd']:,.2f}")
    )
    click.echo(
        f"{est['texts']:,} texts, {est['calls']:,} to translate (the rest are stored), "
        f"~{est['prompt_tokens']:,} prompt and ~{est['completion_tokens']:,} completion tokens, "
        f"{price}"
    )


def _report_failures(outcome) -> None:
    if not outcome.failures.height:
        return
    by_check = outcome.failures.group_by("check").len().sort("len", descending=True).rows()
    click.echo(
        f"{outcome.failures.height} translation(s) failed their checks and were not written: "
        + ", ".join(f"{c} {n}" for c, n in by_check)
    )
    for r in outcome.failures.head(20).iter_rows(named=True):
        click.echo(f"  {r['example_id']} [{r['lang']}] {r['field']}: {r['error'][:200]}")
    console.fail(
        f"{outcome.failures.height} translation(s) failed; the examples they belong to are "
        "left out in those languages. Rerun the same command to ask only for them.",
        1,
    )


@click.command("translate")
@click.option("--source", required=True, help="English dataset: a JSONL/Parquet path or 'hf:NAME'.")
@click.option("--languages", "languages_", required=True, help="Target languages, e.g. 'ar,cs'.")
@click.option("--out", type=PathArg, required=True, help="The parallel dataset (.jsonl/.parquet).")
@click.option("--strict/--no-strict", help="Fail when the dataset-wide quality report flags a row.")
@translator_options
def translate_cmd(source: str, languages_: str, out: Path, strict: bool, **values) -> None:
    """Translate an English dataset into other languages (cached, resumable, every translation
    checked before it is written)."""
    from mlit.data import translation, translation_quality

    try:
        langs = languages.parse(languages_)
        frame = dataset.open_source(source)
    except (ValueError, dataset.DataError) as err:
        console.fail(str(err))
    t, prices = _translator(values)
    store = _store(values["store_root"])
    est = translation.dry_run(frame, langs, t, store, prices)
    if values["dry_run"]:
        _echo_estimate(est)
        return
    budget, batch = _budget(values, t, prices, est)
    outcome = translation.translate(frame, langs, t, store, budget=budget, batch=batch)
    translation.write(outcome.frame, out)
    click.echo(
        f"{outcome.calls} translations requested, {outcome.cached} from the store; "
        f"wrote {outcome.frame.height} rows to {out}"
    )
    _report_cost(outcome)
    report = translation_quality.quality_report(outcome.frame)
    if report.height:
        click.echo(f"the dataset-wide quality report flagged {report.height} text(s):")
        for r in report.head(50).iter_rows(named=True):
            click.echo(
                f"  {r['check']:<16} {r['example_id']} [{r['lang']}] {r['field']}: {r['detail']}"
            )
    _report_failures(outcome)
    if strict and report.height:
        console.fail(f"--strict: {report.height} flagged text(s)", 1)


@click.command("paper")
@click.option("--lima", default="GAIR/lima", show_default=True, help="LIMA: hub name or file.")
@click.option(
    "--oasst",
    default="OpenAssistant/oasst1",
    show_default=True,
    help="OpenAssistant's message table: hub name or file.",
)
@click.option(
    "--alpaca-farm",
    default="tatsu-lab/alpaca_farm",
    show_default=True,
    help="AlpacaFarm's evaluation set: hub name or file.",
)
@click.option(
    "--languages",
    "languages_",
    help="Languages to translate into (default: the paper's other 11).",
)
@click.option("--out", type=PathArg, required=True, help="The dataset (.parquet or .jsonl).")
@translator_options
def data_paper_cmd(
    lima: str, oasst: str, alpaca_farm: str, languages_: str | None, out: Path, **values
) -> None:
    """Build the paper's data: select LIMA, OpenAssistant and AlpacaFarm as the paper does,
    translate every text into each language, check every translation, write the dataset and its
    data card (OUT.card.json). Rerunning asks only for what is not stored yet."""
    from mlit.data import paper_data, translation

    try:
        langs = tuple(
            lang
            for lang in (
                languages.parse(languages_) if languages_ else paper_data.DEFAULT_LANGUAGES
            )
            if lang != "en"
        )
    except ValueError as err:
        console.fail(str(err))
    t, prices = _translator(values)  # bad options fail before the sources are read
    sources = paper_data.Sources(lima, oasst, alpaca_farm)
    try:
        english, counts = paper_data.select(sources)
    except (dataset.DataError, OSError, ValueError) as err:
        console.fail(f"cannot read the sources: {err}")
    click.echo(paper_data.render_counts(counts))
    store = _store(values["store_root"])
    est = translation.dry_run(english, langs, t, store, prices)
    click.echo(f"into {len(langs)} languages ({', '.join(langs)}): ", nl=False)
    _echo_estimate(est)
    if values["dry_run"]:
        return
    budget, batch = _budget(values, t, prices, est)
    outcome = translation.translate(english, langs, t, store, budget=budget, batch=batch)
    path, card_path = paper_data.write(
        outcome.frame, paper_data.card(sources, counts, langs, t, outcome), out
    )
    click.echo(
        f"{outcome.calls:,} translations requested, {outcome.cached:,} from the store; wrote "
        f"{outcome.frame.height:,} rows to {path}, its data card to {card_path}"
    )
    _report_cost(outcome)
    _report_failures(outcome)
