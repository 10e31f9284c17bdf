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

import contextlib
import hashlib
import io
import json
import threading
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor

from mlit.plumbing import console
from mlit.store.checksums import RECORD_KEY, RECORD_SHA, check_record, report_damage

FLUSH_S = 2.0  # a writer's buffer goes to the store at least this often
MAX_BUFFER = 20_000  # ... or when this many records wait
COMPACT_AT = 64  # this many small segments of a kind are merged into one (writer close, compact)
SMALL_BYTES = 8 << 20  # a segment under this size is small
COMPACT_RECORDS = 200_000  # records per merged segment
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


def _folder(store, kind: str) -> str:
    return store._path("segments", kind)


def write_segment(store, kind: str, rows: dict[str, str]) -> str:
    """Write encoded records (key -> doc) as one segment, atomically; returns its name."""
    payload = _segment_bytes(list(rows.items()))
    name = f"{hashlib.sha256(payload).hexdigest()[:32]}.parquet"
    store._write_atomic(f"{_folder(store, kind)}/{name}", payload)
    return name


def segments(store, kind: str) -> dict[str, int]:
    """name -> size of every segment of ``kind`` (one listing)."""
    from pyarrow import fs

    selector = fs.FileSelector(_folder(store, kind), allow_not_found=True)
    return {
        info.base_name: info.size
        for info in store._fs.get_file_info(selector)
        if info.type == fs.FileType.File and info.base_name.endswith(".parquet")
    }


def leftovers(store, kind: str) -> list[str]:
    """Temporary files of segment writes a crash interrupted (local stores)."""
    from pyarrow import fs

    selector = fs.FileSelector(_folder(store, kind), allow_not_found=True)
    return [
        info.path
        for info in store._fs.get_file_info(selector)
        if info.type == fs.FileType.File and info.base_name.endswith(".tmp")
    ]


def read_segment(store, kind: str, name: str, wanted=None):
    """(table of key and doc, problem) of one segment, the keys in ``wanted`` (all when None), or
    None when it is gone (merged away since it was listed). A segment not matching its sha256 is
    checked record by record: the good ones are returned, the problem counts the others."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    raw = _read(store, f"{_folder(store, kind)}/{name}")
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


def verify(store, kind: str, found) -> int:
    """Check every record of ``kind`` (`Store.verify`): each damaged entry goes to
    ``found(entry, repair)``; returns the number of good records. Repairing a damaged segment
    writes its good records into a new one, then deletes it."""
    count = 0
    for key in _legacy_keys(store, kind):
        count += 1
        path = legacy_path(store, kind, key)
        with store._fs.open_input_stream(path) as fh:
            problem = check_record(fh.read(), key)[0]
        if problem:
            found(f"{kind} {key}: {problem}", lambda p=path: store._fs.delete_file(p))
    for name in segments(store, kind):
        result = read_segment(store, kind, name)
        if result is None:
            continue  # merged away meanwhile
        good, problem = result
        count += good.num_rows
        if problem:
            path = f"{_folder(store, kind)}/{name}"

            def rewrite(good=good, path=path) -> None:
                if good.num_rows:
                    write_segment(store, kind, _pairs(good))
                store._fs.delete_file(path)

            found(f"{kind} segment {path}: {problem}", rewrite)
    for path in leftovers(store, kind):
        found(
            f"{kind} {path}: a segment write a crash interrupted", lambda p=path: _delete(store, p)
        )
    return count


def _legacy_keys(store, kind: str) -> list[str]:
    from pyarrow import fs

    selector = fs.FileSelector(store._path("records", kind), recursive=True, allow_not_found=True)
    return [
        info.base_name[:-5]
        for info in store._fs.get_file_info(selector)
        if info.type == fs.FileType.File and info.base_name.endswith(".json")
    ]


def _legacy(pool, store, kind: str, keys: list[str]) -> dict[str, str]:
    raws = pool.map(lambda k: legacy_raw(store, kind, k), keys)
    return {k: raw for k, raw in zip(keys, raws, strict=True) if raw is not None}


def _each(pool, store, kind, names, wanted):
    return zip(names, pool.map(lambda n: read_segment(store, kind, n, wanted), names), strict=True)


def read_table(store, kind: str, keys: Iterable[str] | None = None):
    """The records of ``kind`` (only ``keys`` when given) as one Arrow table of key, doc, each key
    once: one listing, then every segment read concurrently; records of the old one-file layout
    too. Damage is reported once with its path, and a damaged record is missing (redone)."""
    import pyarrow as pa

    wanted = None if keys is None else set(keys)
    parts = []
    with ThreadPoolExecutor(max_workers=READERS) as pool:
        legacy = [k for k in _legacy_keys(store, kind) if wanted is None or k in wanted]
        old = _legacy(pool, store, kind, legacy)
        if old:
            parts.append(pa.table({"key": list(old), "doc": list(old.values())}))
        seen: set[str] = set()
        while True:  # a segment merged away while being read: its records are in a new one
            names = sorted(set(segments(store, kind)) - seen)
            gone = False
            for name, result in _each(pool, store, kind, names, wanted):
                seen.add(name)
                if result is None:
                    gone = True
                    continue
                table, problem = result
                if problem:
                    report_damage(f"{_folder(store, kind)}/{name}", problem)
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
    return _pairs(read_table(store, kind, keys))


def _pairs(table) -> dict[str, str]:
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


def compact(store, kind: str, at: int = COMPACT_AT, legacy: bool = False) -> int:
    """Merge the small segments of ``kind`` (and, with ``legacy``, the one-file records of older
    stores) into large ones when there are ``at`` or more; returns how many were merged. New
    segments are written before old entries are deleted: a reader meanwhile misses nothing."""
    small = sorted(n for n, size in segments(store, kind).items() if size < SMALL_BYTES)
    old = _legacy_keys(store, kind) if legacy else []
    if len(small) + len(old) < max(at, 2):
        return 0
    merged: dict[str, str] = {}
    with ThreadPoolExecutor(max_workers=READERS) as pool:
        merged.update(_legacy(pool, store, kind, old))
        for _, result in _each(pool, store, kind, small, None):
            if result is None:
                return 0  # another process is compacting these: leave it to them
            merged.update(_pairs(result[0]))
        items = sorted(merged.items())
        for start in range(0, len(items), COMPACT_RECORDS):
            write_segment(store, kind, dict(items[start : start + COMPACT_RECORDS]))
        paths = [f"{_folder(store, kind)}/{n}" for n in small]
        paths += [legacy_path(store, kind, k) for k in old]
        list(pool.map(lambda p: _delete(store, p), paths))
    return len(paths)


def _delete(store, path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        store._fs.delete_file(path)


class Writer:
    """Files records as a phase produces them, without making it wait: `put` only appends to a
    buffer (unless twice `MAX_BUFFER` records wait); a thread writes the buffer as one segment
    every `FLUSH_S` seconds (or at `MAX_BUFFER` records) and at `close`. A write that fails (a full disk, a refused bucket) is
    raised by the next `put` and by `close`, so the phase stops with it; what was written stays."""

    def __init__(self, store, kind: str, flush_s: float = FLUSH_S, compact_at: int = COMPACT_AT):
        self.store, self.kind, self.flush_s, self.compact_at = store, kind, flush_s, compact_at
        self.written = 0
        self._buffer: dict[str, dict] = {}
        self._lock = threading.Condition()
        self._wake = threading.Event()
        self._closing = False
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"mlit-{kind}-writer", daemon=True)
        self._thread.start()

    def put(self, key: str, value: dict) -> None:
        if self._error is not None:
            raise self._error
        with self._lock:
            # Bounded memory: a phase that outruns the store waits here (never in a real phase
            # at 2,000 records/s; a bulk import does).
            while len(self._buffer) >= 2 * MAX_BUFFER and self._error is None:
                self._wake.set()
                self._lock.wait(0.1)
            self._buffer[key] = value
            full = len(self._buffer) >= MAX_BUFFER
        if full:
            self._wake.set()

    def _run(self) -> None:
        while not self._closing:
            self._wake.wait(self.flush_s)
            self._wake.clear()
            self._write()
        self._write()

    def _write(self) -> None:
        with self._lock:
            batch, self._buffer = self._buffer, {}
            self._lock.notify_all()
        if not batch or self._error is not None:
            return
        try:
            write_segment(self.store, self.kind, {k: encode(k, v) for k, v in batch.items()})
            self.written += len(batch)
        except BaseException as err:  # kept for the phase: the next put or close raises it
            self._error = err

    def close(self) -> None:
        self._closing = True
        self._wake.set()
        self._thread.join()
        if self._error is not None:
            raise self._error
        if self.compact_at:
            try:
                compact(self.store, self.kind, self.compact_at)
            except OSError as err:  # the records are stored; merging them can wait
                console.warn(f"[store] merging {self.kind} segments failed ({err}); kept as is")

    def __enter__(self) -> Writer:
        return self

    def __exit__(self, *exc) -> None:
        if exc[0] is None:
            self.close()
            return
        # An error or Ctrl-C: what is buffered is still stored, and the first error goes on.
        with contextlib.suppress(BaseException):
            self.close()
