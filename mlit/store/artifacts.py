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
from mlit.store import segments
from mlit.store.checksums import (
    COMPLETE,
    manifest,
    report_damage,
    verify_dir,
)


def content_key(*parts: object) -> str:
    """A stable hash of JSON-serialisable parts (dict keys sorted)."""
    blob = json.dumps(parts, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:24]


def download_root() -> Path:
    return Path.home() / ".cache" / "mlit" / "downloads"


def local_copy(uri: str, cache: str | Path | None = None) -> Path:
    """A local folder for a model directory: a local path as it is; a URI on object storage
    (s3://, gs://; ``AWS_ENDPOINT_URL`` honoured) copied once into the download cache, atomically.
    The one download cache of mlit: serving (the model server, vLLM's LoRA bases) and
    `Store.local_model_dir` come through here; training loads its base from a directory or the
    hub (`mlit.store.model_refs.source`)."""
    if "://" not in uri:
        return Path(uri).expanduser()
    from pyarrow import fs

    dest = Path(cache or download_root()) / hashlib.sha256(uri.encode()).hexdigest()[:16]
    if not (dest / ".complete").exists():
        source_fs, base = _resolve(uri)

        def fetch(tmp: Path) -> None:
            tmp.mkdir(parents=True)
            fs.copy_files(
                base,
                str(tmp),
                source_filesystem=source_fs,
                destination_filesystem=fs.LocalFileSystem(),
            )
            (tmp / ".complete").write_text(uri)

        atomic_dir(fetch, dest)
    return dest


def default_root() -> str:
    return os.environ.get("MLIT_STORE", str(Path.home() / ".cache" / "mlit" / "store"))


@dataclass(frozen=True)
class Verification:
    """What `Store.verify` found: counts checked, and one line per damaged entry."""

    models: int
    records: int
    damaged: tuple[str, ...]
    unrepaired: tuple[str, ...] = ()  # with ``repair``: entries that could not be deleted, and why


@dataclass(frozen=True)
class Store:
    root: str

    @property
    def _fs(self):
        return _resolve(self.root)[0]

    @property
    def _base(self) -> str:
        return _resolve(self.root)[1]

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

    def writer(self, kind: str, flush_s: float = segments.FLUSH_S) -> segments.Writer:
        """A `segments.Writer`: ``put`` never waits on the store; a thread writes segments."""
        return segments.Writer(self, kind, flush_s)

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

    def model_problem(self, key: str, full: bool = False) -> str | None:
        """What is wrong with a stored model against its marker (file sizes; contents too with
        ``full``), or None. Models on object storage are checked by size, or downloaded and
        hashed with ``full``."""
        from pyarrow import fs

        if self.is_local:
            return verify_dir(self._path("models", key), full)
        if full:
            return verify_dir(self.local_model_dir(key), True)
        files = (self.model_info(key) or {}).get("files") or {}
        for rel, want in files.items():
            info = self._fs.get_file_info(self._path("models", key, rel))
            if info.type != fs.FileType.File:
                return f"{rel} is missing"
            if info.size != want["size"]:
                return f"{rel} is {info.size} bytes, {want['size']} expected (truncated?)"
        return None

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
                with self._fs.open_output_stream(f"{target}/{COMPLETE}") as fh:
                    fh.write(marker)
            except BaseException:
                with contextlib.suppress(OSError):
                    self._fs.delete_dir(target)
                raise
        return target

    # ---- checking the whole store ---------------------------------------------------------

    def model_folders(self) -> list[str]:
        """Every folder under models/, finished or not (verify reports the unfinished)."""
        return self._subfolders("models")

    def check_models(self, keys, workers: int = 8) -> dict[str, str]:
        """key -> problem for the stored models among ``keys`` whose files do not match their
        manifest (sha256 of every file), checked concurrently: what the training phase asks once
        per run before it skips a model. Damage is reported with the model's path."""
        from concurrent.futures import ThreadPoolExecutor

        present = [k for k in keys if self.has_model(k)]
        with ThreadPoolExecutor(max_workers=workers) as pool:
            checked = pool.map(lambda k: self.model_problem(k, True), present)
            problems = dict(zip(present, checked, strict=True))
        for key, problem in problems.items():
            if problem:
                report_damage(self.model_uri(key), problem)
        return {k: p for k, p in problems.items() if p}

    def verify(self, repair: bool = False) -> Verification:
        """Every model (sha256 of each file against its marker; folders without a marker and
        half-copied ones too) and record (sha256 of its content, and the key it was made for)
        checked; with ``repair``, each damaged entry deleted, so the next run redoes it. What
        cannot be deleted (a read-only store) is reported in ``unrepaired``, with the reason."""
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
                problem = self.model_problem(name, full=True)
            if problem:
                found(f"model {path}: {problem}", lambda p=path: self._fs.delete_dir(p))
        count = sum(segments.verify(self, kind, found) for kind in self.record_kinds())
        models = sum(not n.endswith(".tmp") for n in folders)
        return Verification(models, count, tuple(damaged), tuple(unrepaired))

    def local_model_dir(self, key: str, cache: str | Path | None = None) -> Path:
        """A local directory holding the model: the store folder itself, or a downloaded copy."""
        if not self.has_model(key):
            raise KeyError(f"model {key} is not in the store {self.root}")
        if self.is_local:
            return Path(self._path("models", key))
        return local_copy(self.model_uri(key), cache)


def filesystem(uri: str):
    """(pyarrow filesystem, path) for a folder or URI: the one abstraction behind the store and
    behind Tune's ``storage_path`` (passed as ``storage_filesystem``)."""
    return _resolve(uri)


def _resolve(root: str):
    """(pyarrow filesystem, base path) for a folder or URI; cached per root string."""
    if root not in _FS_CACHE:
        from pyarrow import fs

        if "://" in root:
            filesystem, base = fs.FileSystem.from_uri(root)
            if isinstance(filesystem, fs.S3FileSystem) and os.environ.get("AWS_ENDPOINT_URL"):
                # Honour a custom endpoint (MinIO, a test server) the way the AWS CLI does.
                endpoint = os.environ["AWS_ENDPOINT_URL"]
                filesystem = fs.S3FileSystem(
                    endpoint_override=endpoint,
                    scheme="https" if endpoint.startswith("https") else "http",
                    region=os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
                    allow_bucket_creation=True,
                )
        else:
            filesystem = fs.LocalFileSystem()
            base = str(Path(root).expanduser().resolve())
            Path(base).mkdir(parents=True, exist_ok=True)
        _FS_CACHE[root] = (filesystem, base)
    return _FS_CACHE[root]


_FS_CACHE: dict[str, tuple] = {}
