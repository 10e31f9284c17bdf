"""Integrity of what the store holds: the sha256 of every record and of every model file.

A record carries the sha256 of its own content; a model's completion marker lists each file with
its size and sha256. What does not match is damage: reported once with its path, then treated as
missing, so the work is redone instead of a crash or a silent use of a damaged artifact.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import threading
from pathlib import Path

from mlit.plumbing import console
from mlit.plumbing.atomic import atomic_write

COMPLETE = "_COMPLETE.json"  # a model's completion marker, written last

RECORD_SHA = "_sha256"  # each record carries the sha256 of its own content
RECORD_KEY = "_key"  # ... and the key it was filed under, which hashes the inputs it came from
_reported: set[str] = set()  # damage is reported once per path and process
_DIGESTS = threading.Lock()  # the digest cache's file, read and written by one thread at a time


def digest(value: dict) -> str:
    blob = json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def report_damage(path: str, problem: str) -> None:
    """One line on stderr, once per path: the artifact is treated as missing and redone."""
    if path not in _reported:
        _reported.add(path)
        console.warn(f"[store] {path}: {problem}; treated as missing and redone")


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def cached_digest(path: Path) -> str:
    """``file_digest`` remembered per (path, size, mtime in ns, inode), what proves a file
    unchanged: a base model's or a stored model's multi-GB files are read once, not at every
    plan and every run. The cache lives beside the store's default root."""
    import os

    st = path.stat()
    cache_file = Path(os.environ.get("MLIT_DIGEST_CACHE", Path.home() / ".cache/mlit/digests.json"))
    where = str(path.resolve())
    stamp = f"{where}:{st.st_size}:{st.st_mtime_ns}:{st.st_ino}"
    if st.st_size < 1 << 20:  # small files: reading is cheaper than the cache
        return file_digest(path)
    with _DIGESTS:
        known = _digest_cache(cache_file).get(stamp)
    if known:
        return known
    digest = file_digest(path)  # outside the lock: threads hash their files side by side
    with _DIGESTS:
        # The file changed (or is new): its older stamps go, so the cache does not grow.
        cache = {k: v for k, v in _digest_cache(cache_file).items() if k.rsplit(":", 3)[0] != where}
        cache[stamp] = digest
        with contextlib.suppress(OSError):  # a read-only or full home: hash again next time
            atomic_write(cache_file, json.dumps(cache))
    return digest


def _digest_cache(cache_file: Path) -> dict[str, str]:
    try:
        return json.loads(cache_file.read_text("utf-8"))
    except (OSError, ValueError):
        return {}


def manifest(folder: Path) -> dict[str, dict]:
    """relative path -> {size, sha256} of every file of a model folder (the marker excluded)."""
    folder = Path(folder)
    return {
        p.relative_to(folder).as_posix(): {"size": p.stat().st_size, "sha256": file_digest(p)}
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != COMPLETE
    }


def verify_dir(folder: str | Path, full: bool = True, cached: bool = False) -> str | None:
    """What is wrong with a local model folder against its completion marker, or None: sizes,
    and with ``full`` the sha256 of each file (``cached``: from the digest cache where the file is
    unchanged since it was hashed). A folder whose marker lists no files (written before mlit
    recorded them) cannot be checked: None."""
    folder = Path(folder)
    marker = folder / COMPLETE
    if not marker.exists():
        return None
    try:
        files = json.loads(marker.read_text("utf-8")).get("files")
    except (UnicodeDecodeError, json.JSONDecodeError):
        return f"its marker {COMPLETE} is damaged"
    for rel, want in (files or {}).items():
        path = folder / rel
        if not path.is_file():
            return f"{rel} is missing"
        if path.stat().st_size != want["size"]:
            return f"{rel} is {path.stat().st_size} bytes, {want['size']} expected (truncated?)"
        digest = cached_digest if cached else file_digest
        if full and digest(path) != want["sha256"]:
            return f"{rel} does not match its sha256 (edited or damaged)"
    return None


def check_record(raw: bytes, key: str | None = None) -> tuple[str | None, dict | None]:
    """(problem, document): a record that does not parse, whose sha256 does not match its
    content, or that was made for another key than ``key`` (swapped or copied files) is damage; a
    record without a sha256 or a key (written before mlit kept them) is trusted."""
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        return f"damaged record ({type(err).__name__}: {str(err)[:80]})", None
    if not isinstance(doc, dict):
        return "damaged record (not a JSON object)", None
    sha = doc.pop(RECORD_SHA, None)
    if sha is not None and sha != digest(doc):
        return "record does not match its sha256 (edited or damaged)", None
    filed_for = doc.pop(RECORD_KEY, None)
    if key is not None and filed_for is not None and filed_for != key:
        return f"record was made for key {filed_for}, not {key} (moved or swapped)", None
    return None, doc
