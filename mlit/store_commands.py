"""`mlit store`: inspect and repair the content-addressed store."""

from __future__ import annotations

from pathlib import Path

import click

from mlit import console


@click.group("store")
def store_app() -> None:
    """Inspect and repair the content-addressed store."""


@store_app.command("verify")
@click.option("--store", "store_root", help="Store folder or URI (default: ~/.cache/mlit/store).")
@click.option("--repair", is_flag=True, help="Delete damaged entries (redone by the next run).")
def store_verify(store_root: str | None, repair: bool) -> None:
    """Check every model (sha256 of each file; folders without a marker or half-copied) and
    record (sha256 of its content, and the key it was filed under) in a store."""
    from mlit.store import Store, default_root

    root = store_root or default_root()
    if "://" not in str(root) and not Path(root).is_dir():
        console.fail(f"no store at {root}: nothing was stored there (check --store)")
    found = Store(root).verify(repair)
    click.echo(f"{found.models} models and {found.records} records checked in {root}")
    failed = {entry.split(": could not delete", 1)[0] for entry in found.unrepaired}
    for entry in found.damaged:
        done = "" if not repair else "  -> NOT deleted" if entry in failed else "  -> deleted"
        click.echo(f"  damaged {entry}{done}")
    for entry in found.unrepaired:
        click.echo(f"  {entry}", err=True)
    if found.unrepaired:
        console.fail(
            f"{len(found.unrepaired)} of {len(found.damaged)} damaged entries could not be "
            f"deleted (first: {found.unrepaired[0]})",
            2,
        )
    if found.damaged and not repair:
        console.fail(
            f"{len(found.damaged)} damaged entries; `mlit store verify --repair` deletes them so "
            "the next run redoes them",
            1,
        )
    click.echo("all good" if not found.damaged else f"{len(found.damaged)} damaged entries deleted")
