"""Keeping a kind's segments in shape: small ones merged, leftovers of interrupted writes
removed, records filed twice merged, and every record checked (`mlit store verify`).

A compaction writes its merged segments before it deletes what it merged, so a reader misses
nothing; a compaction killed while deleting leaves records in two segments. The next compaction
merges them: what a merge writes leaves out every key a large segment already holds, and `dedupe`
(`mlit store compact`, `mlit store verify --repair`) rewrites large segments that share keys.
"""

from __future__ import annotations

import contextlib
import time
from concurrent.futures import ThreadPoolExecutor

from mlit.store import segments
from mlit.store.checksums import check_record

COMPACT_AT = 64  # this many small segments of a kind are merged into one (writer close, compact)
SMALL_BYTES = 8 << 20  # a segment under this size is small
COMPACT_RECORDS = 200_000  # records per merged segment
STALE_S = 600.0  # a temporary file this old is a leftover of an interrupted write, not one going on


def leftovers(store, kind: str, older_than_s: float = 0.0) -> list[str]:
    """Temporary files of segment writes a crash interrupted (local stores; ``older_than_s``:
    only those untouched for so long, so that a write going on now is left alone)."""
    from pyarrow import fs

    selector = fs.FileSelector(segments.folder(store, kind), allow_not_found=True)
    return [
        info.path
        for info in store._fs.get_file_info(selector)
        if info.type == fs.FileType.File
        and info.base_name.endswith(".tmp")
        and time.time() - info.mtime.timestamp() >= older_than_s
    ]


def compact(
    store, kind: str, at: int = COMPACT_AT, legacy: bool = False, stale_s: float = STALE_S
) -> int:
    """Merge the small segments of ``kind`` (and, with ``legacy``, the one-file records of older
    stores) into large ones when there are ``at`` or more; returns how many were merged. New
    segments are written before old entries are deleted: a reader meanwhile misses nothing. What
    a merge writes leaves out the keys a large segment holds already (records a killed compaction
    left in both), and leftovers of interrupted writes older than ``stale_s`` go."""
    for path in leftovers(store, kind, older_than_s=stale_s):
        delete(store, path)
    sizes = segments.segments(store, kind)
    small = sorted(n for n, size in sizes.items() if size < SMALL_BYTES)
    old = segments.legacy_keys(store, kind) if legacy else []
    if len(small) + len(old) < max(at, 2):
        return 0
    merged: dict[str, str] = {}
    with ThreadPoolExecutor(max_workers=segments.READERS) as pool:
        merged.update(segments.read_legacy(pool, store, kind, old))
        for _, result in segments.read_each(pool, store, kind, small, None):
            if result is None:
                return 0  # another process is compacting these: leave it to them
            merged.update(segments.pairs_of(result[0]))
        held = set().union(*(_keys(store, kind, n) for n in sizes if n not in small))
        items = sorted((k, v) for k, v in merged.items() if k not in held)
        for start in range(0, len(items), COMPACT_RECORDS):
            segments.write_segment(store, kind, dict(items[start : start + COMPACT_RECORDS]))
        paths = [f"{segments.folder(store, kind)}/{n}" for n in small]
        paths += [segments.legacy_path(store, kind, k) for k in old]
        list(pool.map(lambda p: delete(store, p), paths))
    return len(paths)


def _keys(store, kind: str, name: str) -> set[str]:
    """The keys of one segment (its key column only), or none when it is gone meanwhile."""
    import pyarrow.parquet as pq

    try:
        with store._fs.open_input_file(f"{segments.folder(store, kind)}/{name}") as fh:
            return set(pq.read_table(fh, columns=["key"]).column("key").to_pylist())
    except FileNotFoundError:
        return set()


def duplicates(store, kind: str) -> dict[str, set[str]]:
    """segment name -> its keys that a segment listed before it holds too (largest first)."""
    sizes = segments.segments(store, kind)
    seen: set[str] = set()
    out = {}
    for name in sorted(sizes, key=lambda n: (-sizes[n], n)):
        keys = _keys(store, kind, name)
        if keys & seen:
            out[name] = keys & seen
        seen |= keys
    return out


def dedupe(store, kind: str) -> int:
    """Rewrite each segment that shares keys with another without them (deleted when nothing
    else is left in it); returns how many records filed twice were dropped."""
    dropped = 0
    for name, twice in duplicates(store, kind).items():
        path = f"{segments.folder(store, kind)}/{name}"
        result = segments.read_segment(store, kind, name)
        if result is None:
            continue
        rest = {k: v for k, v in segments.pairs_of(result[0]).items() if k not in twice}
        if rest:
            segments.write_segment(store, kind, rest)
        delete(store, path)
        dropped += len(twice)
    return dropped


def delete(store, path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        store._fs.delete_file(path)


def verify(store, kind: str, found) -> tuple[int, int]:
    """Check every record of ``kind`` (`Store.verify`): each damaged entry goes to
    ``found(entry, repair)``; returns (distinct good records, records filed twice). Repairing a
    damaged segment writes its good records into a new one, then deletes it."""
    keys: set[str] = set()
    rows = 0
    for key in segments.legacy_keys(store, kind):
        rows += 1
        keys.add(key)
        path = segments.legacy_path(store, kind, key)
        with store._fs.open_input_stream(path) as fh:
            problem = check_record(fh.read(), key)[0]
        if problem:
            found(f"{kind} {key}: {problem}", lambda p=path: store._fs.delete_file(p))
    for name in segments.segments(store, kind):
        result = segments.read_segment(store, kind, name)
        if result is None:
            continue  # merged away meanwhile
        good, problem = result
        rows += good.num_rows
        keys.update(good.column("key").to_pylist())
        if problem:
            path = f"{segments.folder(store, kind)}/{name}"

            def rewrite(good=good, path=path) -> None:
                if good.num_rows:
                    segments.write_segment(store, kind, segments.pairs_of(good))
                store._fs.delete_file(path)

            found(f"{kind} segment {path}: {problem}", rewrite)
    return len(keys), rows - len(keys)
