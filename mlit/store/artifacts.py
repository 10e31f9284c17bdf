"""Content-addressed artifact store: trained models, generations, judge verdicts, translations.

Keys are hashes of what determines an artifact (see ARCHITECTURE.md, "The store"), so two
sweeps that need the same model train it once and a rerun pays for nothing already done.

The store is a folder (default ``~/.cache/mlit``, or ``--store``) or any URI `pyarrow.fs` knows:
``s3://bucket/prefix``, ``gs://bucket/prefix``, a mounted shared filesystem. Layout::

    models/<key>/...                  an HF model directory; ``_COMPLETE.json`` is written last
    segments/<kind>/<sha256>.parquet  generations, verdicts, translations, in bulk (mlit.store.segments)
    records/<kind>/<k[:2]>/<k>.json   one record per file (stores of earlier versions; read)

Writes are atomic: record segments and local model folders are written to a temporary name and
renamed; on object storage, where a folder cannot be renamed, a model counts as present only once
its ``_COMPLETE.json`` marker exists, and the marker is uploaded after every other file.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from mlit.plumbing.atomic import atomic_dir, atomic_write
from mlit.plumbing.console import describe_os_error
from mlit.store import downloads, listing, record_writer, segments, upkeep
from mlit.store.checksums import COMPLETE, manifest, report_damage, verify_dir
from mlit.store.filesystems import filesystem


def content_key(*parts: object) -> str:
    """A stable hash of JSON-serialisable parts (dict keys sorted)."""
    blob = json.dumps(parts, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:24]


def default_root() -> str:
    return os.environ.get("MLIT_STORE", str(Path.home() / ".cache" / "mlit" / "store"))


@dataclass(frozen=True)
class Verification:
    """What `Store.verify` found: counts checked, and one line per damaged entry."""

    models: int
    records: int
    damaged: tuple[str, ...]
    unrepaired: tuple[str, ...] = ()  # with ``repair``: entries that could not be deleted, and why
    leftovers: tuple[str, ...] = ()  # temporary files of interrupted writes: no damage
    duplicates: int = 0  # records filed twice (a compaction killed while deleting): no damage


@dataclass(frozen=True)
class Store:
    root: str

    @property
    def _fs(self):
        return filesystem(self.root)[0]

    @property
    def _base(self) -> str:
        return filesystem(self.root)[1]

    @property
    def is_local(self) -> bool:
        from pyarrow import fs

        return isinstance(self._fs, fs.LocalFileSystem)

    def _path(self, *parts: str) -> str:
        return "/".join([self._base.rstrip("/"), *parts])

    # ---- records (generations, verdicts, translations): segments, see mlit.store.segments ------

    def records(self, kind: str, keys=None) -> dict[str, dict]:
        """key -> record for every record of ``kind`` the store holds among ``keys`` (all when
        None): one listing and one concurrent read of the kind's segments, not a read per key."""
        return segments.read(self, kind, keys)

    def raw_records(self, kind: str, keys=None) -> dict[str, str]:
        """key -> stored JSON document (`segments.decode` makes it a record): for phases that
        decode each record when they use it, not all of them up front."""
        return segments.read_raw(self, kind, keys)

    def present(self, kind: str, keys) -> set[str]:
        """The keys among ``keys`` the store holds a record for (nothing decoded)."""
        return set(segments.read_table(self, kind, keys).column("key").to_pylist())

    def record_frame(self, kind: str, keys, schema: dict):
        """`records` as a Polars frame of ``key`` and the ``schema`` fields, decoded in bulk."""
        return segments.read_frame(self, kind, keys, schema)

    def writer(self, kind: str, flush_s: float = record_writer.FLUSH_S) -> record_writer.Writer:
        """A `record_writer.Writer`: ``put`` never waits on the store; a thread writes segments."""
        return record_writer.Writer(self, kind, flush_s)

    def get(self, kind: str, key: str) -> dict | None:
        """One record, or None. A phase asks `records` once for all its keys instead."""
        raw = segments.legacy_raw(self, kind, key)
        if raw is not None:
            return segments.decode(raw)
        return segments.read(self, kind, [key]).get(key)

    def put(self, kind: str, key: str, value: dict) -> None:
        """File one record now (a segment of one). A phase files through `writer` instead."""
        segments.write_segment(self, kind, {key: segments.encode(key, value)})

    def keys(self, kind: str) -> list[str]:
        return sorted(segments.read_raw(self, kind))

    def record_kinds(self) -> list[str]:
        return sorted(set(self._subfolders("records")) | set(self._subfolders("segments")))

    def _subfolders(self, *parts: str) -> list[str]:
        """The names of the folders directly under ``parts``, sorted."""
        from pyarrow import fs

        selector = fs.FileSelector(self._path(*parts), allow_not_found=True)
        return sorted(
            Path(i.path).name
            for i in self._fs.get_file_info(selector)
            if i.type == fs.FileType.Directory
        )

    def _write_atomic(self, path: str, payload: bytes) -> None:
        if self.is_local:
            atomic_write(path, payload)
        else:  # one PUT is atomic on object storage
            with self._fs.open_output_stream(path) as fh:
                fh.write(payload)

    # ---- models ------------------------------------------------------------------------------

    def model_uri(self, key: str) -> str:
        """Where a model lives: a local path, or a full URI (s3://...) on object storage."""
        path = self._path("models", key)
        if "://" in self.root:
            return f"{self.root.split('://', 1)[0]}://{path}"
        return path

    def has_model(self, key: str) -> bool:
        from pyarrow import fs

        info = self._fs.get_file_info(self._path("models", key, COMPLETE))
        return info.type == fs.FileType.File

    def model_problem(self, key: str, full: bool = False, fresh: bool = False) -> str | None:
        """What is wrong with a stored model against its marker, or None: file sizes, and with
        ``full`` contents too, checked where the bytes are. A local or mounted store hashes each
        file (from the digest cache where the file is unchanged; ``fresh``: read again). Object
        storage answers for each file's ETag, recorded at publication (`mlit.store.listing`): no
        byte is downloaded. Only a model published before mlit recorded ETags is downloaded and
        hashed, once: its marker then records them."""
        if self.is_local:
            return verify_dir(self._path("models", key), full, cached=not fresh)
        info = self.model_info(key) or {}
        files = info.get("files") or {}
        listed = listing.listing(self.model_uri(key))
        problem = listing.problem(files, listed)
        if problem or not full or not files or listing.vouched(files, listed):
            return problem
        try:  # no ETags to vouch for the files: the bytes decide (hashed as they are downloaded)
            downloads.local_copy(self.model_uri(key))
        except downloads.DownloadError as err:
            return str(err).split(": ", 1)[-1]
        if all(etag is not None for _, etag in listed.values()):  # published by an earlier mlit
            self._record_etags(key, info, listed)  # ...checked once: its marker now has them
        return None

    def _record_etags(self, key: str, info: dict, listed: listing.Listing) -> None:
        """Write the listed ETags into a stored model's marker (one PUT: atomic)."""
        self._write_atomic(self._path("models", key, COMPLETE), _marker(info, listed))

    def valid_model(self, key: str) -> bool:
        """Present and whole (by size): what the training phase asks before it skips a model.
        Damage is reported once and the model counts as missing, so it is trained again."""
        if not self.has_model(key):
            return False
        problem = self.model_problem(key)
        if problem:
            report_damage(self.model_uri(key), problem)
        return problem is None

    def delete_model(self, key: str) -> None:
        _forget(self.root, key)
        self._fs.delete_dir(self._path("models", key))

    def model_info(self, key: str) -> dict | None:
        if not self.has_model(key):
            return None
        with self._fs.open_input_stream(self._path("models", key, COMPLETE)) as fh:
            return json.loads(fh.read().decode("utf-8"))

    def model_keys(self) -> list[str]:
        """The keys of the complete models (their marker written)."""
        return [name for name in self.model_folders() if self.has_model(name)]

    def publish_model(self, local_dir: str | Path, key: str, info: dict) -> str:
        """Copy a finished local model folder into the store under ``key``; returns its URI.

        A model already complete under ``key`` is kept as it is (another sweep on this store
        published the same inputs first, and may be serving it): a folder is never replaced
        while it may be in use. A copy that fails (a full disk) is removed before the error
        goes on, so no half-copied folder stays behind."""
        from pyarrow import fs

        local_dir = Path(local_dir)
        target = self._path("models", key)
        if self.has_model(key) and self.model_problem(key) is None:
            return target
        info = {**info, "files": manifest(local_dir)}
        marker = json.dumps(info, ensure_ascii=False).encode()
        _forget(self.root, key)
        if self.is_local:
            import shutil

            def build(staging: Path) -> None:
                shutil.copytree(local_dir, staging)
                (staging / COMPLETE).write_bytes(marker)

            # A folder already at the target is damaged or unfinished: nobody can be serving it.
            atomic_dir(build, Path(target))
        else:
            if self._fs.get_file_info(target).type != fs.FileType.NotFound:
                self._fs.delete_dir(target)  # leftovers of an attempt that never completed
            try:
                self._fs.create_dir(target, recursive=True)
                fs.copy_files(
                    str(local_dir),
                    target,
                    source_filesystem=fs.LocalFileSystem(),
                    destination_filesystem=self._fs,
                )
                marker = self._with_etags(key, info)
                with self._fs.open_output_stream(f"{target}/{COMPLETE}") as fh:
                    fh.write(marker)
            except BaseException:
                with contextlib.suppress(OSError):
                    self._fs.delete_dir(target)
                raise
        return target

    def _with_etags(self, key: str, info: dict) -> bytes:
        """The marker of a model just uploaded: each file's ETag as the store lists it (sizes
        checked: an upload cut short is an error, never a published model)."""
        listed = listing.listing(self.model_uri(key))
        problem = listing.problem(info["files"], listed)
        if problem:
            raise OSError(f"uploading model {key} to {self.root}: {problem}")
        return _marker(info, listed)

    # ---- checking the whole store ---------------------------------------------------------

    def model_folders(self) -> list[str]:
        """Every folder under models/, finished or not (verify reports the unfinished)."""
        return self._subfolders("models")

    def check_models(self, keys, workers: int = 8) -> dict[str, str]:
        """key -> problem for the stored models among ``keys`` whose files do not match their
        manifest, checked where the bytes are (`model_problem`), concurrently: what the training
        phase asks before it skips a model. Within `shared_checks` each model is checked once:
        the eight experiments of one `sweeps/paper.py` run share one check of each model. Damage
        is reported with the model's path."""
        from concurrent.futures import ThreadPoolExecutor

        memo = _SHARED[-1] if _SHARED else {}
        present = [k for k in keys if (self.root, k) not in memo and self.has_model(k)]
        with ThreadPoolExecutor(max_workers=workers) as pool:
            checked = pool.map(lambda k: self.model_problem(k, True), present)
            problems = dict(zip(present, checked, strict=True))
        for key, problem in problems.items():
            memo[(self.root, key)] = problem
            if problem:
                report_damage(self.model_uri(key), problem)
        return {k: p for k in keys if (p := memo.get((self.root, k)))}

    def verify(self, repair: bool = False) -> Verification:
        """Every model (each file against its marker, where the bytes are: every file read again
        on a local store, ETags on object storage; folders without a marker and half-copied ones
        too), this node's downloads of them (each file hashed again), and every record (sha256 of
        its content, and the key it was made for) checked; with ``repair``, each damaged entry
        deleted, so the next run redoes it. What cannot be deleted (a read-only store) is
        reported in ``unrepaired``, with the reason. Leftovers of interrupted writes are no
        damage (nothing was lost): listed apart, and deleted with ``repair``."""
        import shutil

        damaged, unrepaired = [], []

        def found(entry: str, delete) -> None:
            damaged.append(entry)
            if repair:
                try:
                    delete()
                except OSError as err:
                    unrepaired.append(f"{entry}: could not delete ({describe_os_error(err)})")

        folders = self.model_folders()
        for name in folders:
            path = self._path("models", name)
            if name.endswith(".tmp"):
                problem = "a half-copied model folder (an interrupted copy)"
            elif not self.has_model(name):
                problem = f"a model folder without its {COMPLETE} marker (an unfinished copy)"
            else:
                problem = self.model_problem(name, full=True, fresh=True)
            if problem:
                found(f"model {path}: {problem}", lambda p=path: self._fs.delete_dir(p))
        if not self.is_local:
            for copy, problem in downloads.damaged(self.model_uri("")):
                found(f"download {copy}: {problem}", lambda c=copy: shutil.rmtree(c))
        count = twice = 0
        for kind in self.record_kinds():
            good, dup = upkeep.verify(self, kind, found)
            count, twice = count + good, twice + dup
            if repair and dup:
                upkeep.dedupe(self, kind)
        leftovers = [p for kind in self.record_kinds() for p in upkeep.leftovers(self, kind)]
        if repair:
            for path in leftovers:
                upkeep.delete(self, path)
        models = sum(not n.endswith(".tmp") for n in folders)
        found_ = (tuple(damaged), tuple(unrepaired), tuple(leftovers))
        return Verification(models, count, *found_, duplicates=twice)

    def local_model_dir(self, key: str, cache: str | Path | None = None) -> Path:
        """A local directory holding the model: the store folder itself, or a downloaded copy."""
        if not self.has_model(key):
            raise KeyError(f"model {key} is not in the store {self.root}")
        if self.is_local:
            return Path(self._path("models", key))
        return downloads.local_copy(self.model_uri(key), cache)


def _marker(info: dict, listed: listing.Listing) -> bytes:
    """A model's completion marker with each file's ETag as the store lists it."""
    files = {rel: {**want, "etag": listed[rel][1]} for rel, want in info["files"].items()}
    return json.dumps({**info, "files": files}, ensure_ascii=False).encode()


@contextlib.contextmanager
def shared_checks():
    """Within it, `Store.check_models` checks each model once, whatever the number of calls:
    one run of the paper's experiments, where models are shared between experiments. Outside, each
    call checks again (a later run must see what changed since)."""
    _SHARED.append(_SHARED[-1] if _SHARED else {})
    try:
        yield
    finally:
        _SHARED.pop()


def _forget(root: str, key: str) -> None:
    """A model published or deleted is checked again, even within `shared_checks`."""
    for memo in _SHARED:
        memo.pop((root, key), None)


# The memos of the `shared_checks` in force: (store root, model key) -> the problem found, or None.
_SHARED: list[dict[tuple[str, str], str | None]] = []
