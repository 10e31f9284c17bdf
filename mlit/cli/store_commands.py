"""`mlit store`: inspect and repair the content-addressed store."""

from __future__ import annotations

from pathlib import Path

import click

from mlit.plumbing import console


@click.group("store")
def store_app() -> None:
    """Inspect and repair the content-addressed store."""


def _store(store_root: str | None):
    from mlit.store.artifacts import Store, default_root

    root = store_root or default_root()
    if "://" not in str(root) and not Path(root).is_dir():
        console.fail(f"no store at {root}: nothing was stored there (check --store)")
    return Store(root)


@store_app.command("compact")
@click.option("--store", "store_root", help="Store folder or URI (default: ~/.cache/mlit/store).")
def store_compact(store_root: str | None) -> None:
    """Merge each kind's small record segments (and the one-file records of stores written by
    earlier versions) into large segments: fewer files for every later run to read. Safe while
    sweeps use the store: new segments are written before old ones are deleted."""
    from mlit.store import segments, upkeep

    store = _store(store_root)
    for kind in store.record_kinds():
        merged = upkeep.compact(store, kind, at=2, legacy=True)
        twice = upkeep.dedupe(store, kind)
        left = len(segments.segments(store, kind))
        click.echo(
            f"{kind}: {merged} files merged, {twice} records filed twice merged; {left} segments"
        )


@store_app.command("verify")
@click.option("--store", "store_root", help="Store folder or URI (default: ~/.cache/mlit/store).")
@click.option("--repair", is_flag=True, help="Delete damaged entries (redone by the next run).")
def store_verify(store_root: str | None, repair: bool) -> None:
    """Check every model (each file against its manifest where the bytes are: every file read again
    on a local store, the store's ETags on object storage, without downloading; folders without a
    marker or half-copied), this machine's downloads of the store's models (each file hashed
    again), and every record (sha256 of its content, and the key it was filed under)."""
    store = _store(store_root)
    root, found = store.root, store.verify(repair)
    click.echo(f"{found.models} models and {found.records} records checked in {root}")
    gone = "  -> deleted" if repair else ""
    for path in found.leftovers:
        click.echo(f"  leftover {path}: a write a crash interrupted (nothing lost){gone}")
    if found.duplicates:
        fixed = "  -> merged" if repair else " (the next compaction merges them)"
        click.echo(f"  {found.duplicates} records filed twice by an interrupted compaction{fixed}")
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
