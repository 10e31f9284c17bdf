"""The store's records (generations, verdicts, translations) in segments, read and written in bulk.

At paper scale a sweep files 1.9 million records, often on object storage at 10-50 ms a request,
so records travel in segments: a `Writer` buffers what a phase produces and a thread writes it
every `FLUSH_S` seconds as one Parquet file; a phase finds what is done with one listing, one
concurrent read of the segments and a join with its plan (`read_table`, `read_frame`).

Layout, under the store's root::

    segments/<kind>/<sha256 of the file>.parquet   columns: key, doc (the record as JSON)
    records/<kind>/<k[:2]>/<k>.json                one record per file (older stores; read)

Each doc is the record as it always was: its fields, the key it was filed under and the sha256
of both. A segment is named by the sha256 of its bytes, so a read checks it whole with one hash;
a segment that does not match is read record by record, its good records kept and the damage
reported once. A segment is written at once (a rename on a disk, one PUT on object storage): a
crash loses the records buffered since the last write (at most `FLUSH_S` seconds of answers,
plus the requests in flight), never a part of a segment. Records are immutable and keyed by what
made them, so a key in two segments (two sweeps on one store, a compaction racing a reader) is
the same record twice, never a conflict.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor

from mlit.store.checksums import RECORD_KEY, RECORD_SHA, check_record, report_damage

DECODE_ROWS = 10_000  # records decoded at a time (`read_frame`)
READERS = 16  # concurrent reads: object storage answers many requests at once


def encode(key: str, value: dict) -> str:
    """A record's stored document: its fields, the key it is filed under, the sha256 of both
    (`checksums.digest`: of the canonical JSON, which is also the document's text, so the
    record is serialised once)."""
    blob = json.dumps(
        {**value, RECORD_KEY: key}, sort_keys=True, ensure_ascii=False, separators=(",", ":")
    )
    sha = hashlib.sha256(blob.encode("utf-8")).hexdigest()
    return f'{blob[:-1]},"{RECORD_SHA}":"{sha}"}}'


def decode(doc: str) -> dict:
    """A stored document's record (its fields, without the key and sha256 it carries)."""
    value = json.loads(doc)
    value.pop(RECORD_SHA, None)
    value.pop(RECORD_KEY, None)
    return value


def _segment_bytes(rows: Iterable[tuple[str, str]]) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    keys, docs = zip(*sorted(rows), strict=True) if rows else ((), ())
    table = pa.table({"key": pa.array(keys, pa.string()), "doc": pa.array(docs, pa.string())})
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd")
    return buffer.getvalue()


def folder(store, kind: str) -> str:
    return store._path("segments", kind)


def write_segment(store, kind: str, rows: dict[str, str]) -> str:
    """Write encoded records (key -> doc) as one segment, atomically; returns its name."""
    payload = _segment_bytes(list(rows.items()))
    name = f"{hashlib.sha256(payload).hexdigest()[:32]}.parquet"
    store._write_atomic(f"{folder(store, kind)}/{name}", payload)
    return name


def segments(store, kind: str) -> dict[str, int]:
    """name -> size of every segment of ``kind`` (one listing)."""
    from pyarrow import fs

    selector = fs.FileSelector(folder(store, kind), allow_not_found=True)
    return {
        info.base_name: info.size
        for info in store._fs.get_file_info(selector)
        if info.type == fs.FileType.File and info.base_name.endswith(".parquet")
    }


def read_segment(store, kind: str, name: str, wanted=None):
    """(table of key and doc, problem) of one segment, the keys in ``wanted`` (all when None), or
    None when it is gone (merged away since it was listed). A segment not matching its sha256 is
    checked record by record: the good ones are returned, the problem counts the others."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    raw = _read(store, f"{folder(store, kind)}/{name}")
    if raw is None:
        return None
    sound = hashlib.sha256(raw).hexdigest()[:32] == name.removesuffix(".parquet")
    try:
        table = pq.read_table(pa.BufferReader(raw)).select(["key", "doc"])
    except Exception as err:  # pyarrow raises several kinds on a damaged file
        problem = f"damaged segment, none of its records can be read ({type(err).__name__})"
        return _empty(), problem
    if wanted is not None:
        keys = table.column("key").to_pylist()
        table = table.filter(pa.array([k in wanted for k in keys], pa.bool_()))
    if sound:
        return table, None
    keys, docs = table.column("key").to_pylist(), table.column("doc").to_pylist()
    good = [
        d is not None and check_record(d.encode(), k)[0] is None
        for k, d in zip(keys, docs, strict=True)
    ]
    lost = len(good) - sum(good)
    problem = f"segment does not match its sha256: {lost} of {len(good)} records damaged"
    return table.filter(pa.array(good, pa.bool_())), problem


def _read(store, path: str) -> bytes | None:
    """A file's bytes, or None when it is not there (object storage may say so as an OSError)."""
    from pyarrow import fs

    try:
        with store._fs.open_input_stream(path) as fh:
            return fh.read()
    except FileNotFoundError:
        return None
    except OSError:
        if store._fs.get_file_info(path).type == fs.FileType.NotFound:
            return None
        raise


def _empty():
    import pyarrow as pa

    return pa.table({"key": pa.array([], pa.string()), "doc": pa.array([], pa.string())})


def legacy_path(store, kind: str, key: str) -> str:
    return store._path("records", kind, key[:2], f"{key}.json")


def legacy_raw(store, kind: str, key: str) -> str | None:
    """A record of the one-file layout (stores written before segments), checked, or None."""
    path = legacy_path(store, kind, key)
    raw = _read(store, path)
    if raw is None:
        return None
    problem, _ = check_record(raw, key)
    if problem:
        report_damage(path, problem)
        return None
    return raw.decode("utf-8")


def legacy_keys(store, kind: str) -> list[str]:
    from pyarrow import fs

    selector = fs.FileSelector(store._path("records", kind), recursive=True, allow_not_found=True)
    return [
        info.base_name[:-5]
        for info in store._fs.get_file_info(selector)
        if info.type == fs.FileType.File and info.base_name.endswith(".json")
    ]


def read_legacy(pool, store, kind: str, keys: list[str]) -> dict[str, str]:
    raws = pool.map(lambda k: legacy_raw(store, kind, k), keys)
    return {k: raw for k, raw in zip(keys, raws, strict=True) if raw is not None}


def read_each(pool, store, kind, names, wanted):
    return zip(names, pool.map(lambda n: read_segment(store, kind, n, wanted), names), strict=True)


def read_table(store, kind: str, keys: Iterable[str] | None = None):
    """The records of ``kind`` (only ``keys`` when given) as one Arrow table of key, doc, each key
    once: one listing, then every segment read concurrently; records of the old one-file layout
    too. Damage is reported once with its path, and a damaged record is missing (redone)."""
    import pyarrow as pa

    wanted = None if keys is None else set(keys)
    parts = []
    with ThreadPoolExecutor(max_workers=READERS) as pool:
        legacy = [k for k in legacy_keys(store, kind) if wanted is None or k in wanted]
        old = read_legacy(pool, store, kind, legacy)
        if old:
            parts.append(pa.table({"key": list(old), "doc": list(old.values())}))
        seen: set[str] = set()
        while True:  # a segment merged away while being read: its records are in a new one
            names = sorted(set(segments(store, kind)) - seen)
            gone = False
            for name, result in read_each(pool, store, kind, names, wanted):
                seen.add(name)
                if result is None:
                    gone = True
                    continue
                table, problem = result
                if problem:
                    report_damage(f"{folder(store, kind)}/{name}", problem)
                parts.append(table)
            if not gone:
                break
    table = pa.concat_tables([_empty(), *parts])
    if len(parts) > 1:  # the same record in two segments (two writers, a compaction): keep one
        import polars as pl

        table = pl.from_arrow(table).unique("key", keep="first", maintain_order=True).to_arrow()
    return table


def read_raw(store, kind: str, keys: Iterable[str] | None = None) -> dict[str, str]:
    """key -> stored document (see `read_table`)."""
    return pairs_of(read_table(store, kind, keys))


def pairs_of(table) -> dict[str, str]:
    return dict(zip(table.column("key").to_pylist(), table.column("doc").to_pylist(), strict=True))


def read(store, kind: str, keys: Iterable[str] | None = None) -> dict[str, dict]:
    """key -> record for the records of ``kind`` present in the store among ``keys``."""
    return {k: decode(doc) for k, doc in read_raw(store, kind, keys).items()}


def read_frame(store, kind: str, keys, schema: dict):
    """The records among ``keys`` as a Polars frame: ``key`` and the ``schema`` fields, decoded
    in bulk (a rerun of the paper's 670k answers decodes them in seconds, not one by one)."""
    import polars as pl

    table = pl.from_arrow(read_table(store, kind, keys))
    # In slices: Polars' JSON decoder holds several times its input while it works (436 MB for
    # 200k answers at once, 41 MB in slices of 10k).
    parts = [
        part.select(pl.col("key"), pl.col("doc").str.json_decode(pl.Struct(schema)).alias("_v"))
        for part in table.iter_slices(DECODE_ROWS)
    ]
    empty = pl.DataFrame(schema={"key": pl.String, "_v": pl.Struct(schema)})
    return pl.concat([empty, *parts]).unnest("_v")
