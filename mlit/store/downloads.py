"""The download cache: local copies of folders on object storage (stored models, vLLM's bases).

A copy is made once per node and verified there, once, as it is made: the sha256 of every file
against the model's manifest. It is reused while both sides are unchanged: the store's objects
(sizes and ETags, one listing: `mlit.store.listing`) and the local files (size, mtime and inode).
A model republished under its key, or a local file damaged or edited, makes the next use download
it again; a copy is never trusted on its own marker alone.

The cache holds at most ``MLIT_DOWNLOAD_CACHE_GB`` (default 200) gigabytes: past it, the copies
used least recently are deleted (never the one in hand).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path

from mlit.plumbing.atomic import atomic_dir
from mlit.store import listing as store_listing
from mlit.store.checksums import COMPLETE, file_digest
from mlit.store.filesystems import filesystem

STATE = ".mlit_download.json"  # what a copy was made from and what its files were when verified
DEFAULT_LIMIT_GB = 200.0


class DownloadError(OSError):
    """The store's copy of a model does not match its own manifest: nothing is served from it."""


def root() -> Path:
    return Path.home() / ".cache" / "mlit" / "downloads"


def limit_bytes() -> int:
    """The cache's size limit (``MLIT_DOWNLOAD_CACHE_GB``, default 200 GB)."""
    raw = os.environ.get("MLIT_DOWNLOAD_CACHE_GB", str(DEFAULT_LIMIT_GB))
    try:
        gb = float(raw)
    except ValueError as err:
        raise ValueError(f"MLIT_DOWNLOAD_CACHE_GB={raw!r} is not a number of gigabytes") from err
    if gb <= 0:
        raise ValueError(f"MLIT_DOWNLOAD_CACHE_GB={raw!r} must be more than 0")
    return int(gb * 1e9)


def folder_for(uri: str, cache: str | Path | None = None) -> Path:
    return Path(cache or root()) / hashlib.sha256(uri.encode()).hexdigest()[:16]


def local_copy(uri: str, cache: str | Path | None = None) -> Path:
    """A local folder for a model directory: a local path as it is; a URI on object storage
    (s3://, gs://; ``AWS_ENDPOINT_URL`` honoured) copied into the download cache, verified as it
    is made, and made again when the store's objects or the local files have changed since."""
    if "://" not in uri:
        return Path(uri).expanduser()
    limit = limit_bytes()  # a bad setting is said before anything is downloaded
    dest = folder_for(uri, cache)
    listed = store_listing.listing(uri)
    state = _state(dest)
    fresh = state is not None and state.get("uri") == uri and _same(state["remote"], listed)
    if fresh and not local_problem(dest, state):
        os.utime(dest / STATE)  # used now: the last to be evicted
        return dest
    _download(uri, dest, listed)
    evict(Path(cache or root()), keep=dest, limit=limit)
    return dest


def _state(dest: Path) -> dict | None:
    try:
        return json.loads((dest / STATE).read_text("utf-8"))
    except (OSError, ValueError):
        return None  # no copy, a copy of an earlier mlit (unverified), or a damaged state


def _same(recorded: dict, listed: store_listing.Listing) -> bool:
    now = {rel: list(v) for rel, v in listed.items()}
    return recorded == now


def _stat(path: Path) -> list[int]:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns, st.st_ino]


def local_problem(dest: Path, state: dict, fresh: bool = False) -> str | None:
    """What is wrong with a copy's files against what they were when verified, or None. A file
    whose size, mtime and inode are as recorded is unchanged (``fresh``: hashed all the same);
    one that changed is hashed again against its recorded sha256."""
    for rel, want in state["files"].items():
        path = dest / rel
        if not path.is_file():
            return f"{rel} is missing"
        if not fresh and _stat(path) == want["stat"]:
            continue
        if path.stat().st_size != want["stat"][0] or file_digest(path) != want["sha256"]:
            return f"{rel} does not match the sha256 it had when downloaded (edited or damaged)"
    return None


def _download(uri: str, dest: Path, listed: store_listing.Listing) -> None:
    from pyarrow import fs

    source_fs, base = filesystem(uri)

    def fetch(tmp: Path) -> None:
        tmp.mkdir(parents=True)
        fs.copy_files(
            base, str(tmp), source_filesystem=source_fs, destination_filesystem=fs.LocalFileSystem()
        )
        files = {
            p.relative_to(tmp).as_posix(): {"stat": _stat(p), "sha256": file_digest(p)}
            for p in sorted(tmp.rglob("*"))
            if p.is_file()
        }
        marker = tmp / COMPLETE
        manifest = json.loads(marker.read_text("utf-8")).get("files") if marker.exists() else None
        for rel, want in (manifest or {}).items():
            got = files.get(rel)
            if got is None or got["sha256"] != want["sha256"]:
                raise DownloadError(
                    f"{uri}: the store's {rel} does not match the model's manifest (damaged or "
                    "overwritten in the store); `mlit store verify` reports it, `--repair` "
                    "deletes it so that the next run trains it again"
                )
        state = {
            "uri": uri,
            "remote": {rel: list(v) for rel, v in listed.items()},
            "files": files,
            "bytes": sum(f["stat"][0] for f in files.values()),
            "verified": time.time(),
        }
        (tmp / STATE).write_text(json.dumps(state), "utf-8")

    atomic_dir(fetch, dest)  # a half-made copy is never taken for a made one


def entries(cache: str | Path | None = None) -> list[tuple[Path, dict | None]]:
    """Every copy in the cache with its state (None: an unverified copy of an earlier mlit)."""
    folder = Path(cache or root())
    if not folder.is_dir():
        return []
    return [
        (d, _state(d))
        for d in sorted(folder.iterdir())
        if d.is_dir() and not d.name.startswith(".")
    ]


def evict(cache: Path, keep: Path | None = None, limit: int | None = None) -> list[Path]:
    """Delete the copies used least recently until the cache holds at most ``limit`` bytes;
    returns what was deleted. The copy in hand (``keep``) stays, even alone over the limit."""
    limit = limit_bytes() if limit is None else limit
    sized = []
    for d, state in entries(cache):
        used = (d / STATE).stat().st_mtime if state else 0.0  # an unverified copy goes first
        size = state["bytes"] if state else sum(p.stat().st_size for p in d.rglob("*"))
        sized.append((used, d, size))
    total = sum(size for _, _, size in sized)
    gone = []
    for _, d, size in sorted(sized):
        if total <= limit:
            break
        if keep is not None and d == keep:
            continue
        shutil.rmtree(d, ignore_errors=True)
        total -= size
        gone.append(d)
    return gone


def damaged(prefix: str, cache: str | Path | None = None) -> list[tuple[Path, str]]:
    """(copy, problem) for every copy of a folder under ``prefix`` whose files no longer hash as
    when it was downloaded (each file read again), and for copies an earlier mlit made unverified
    (reused by no run: the next use downloads again)."""
    out = []
    for d, state in entries(cache):
        if state is None:
            legacy = d / ".complete"  # an earlier mlit's marker: the URI it copied
            if legacy.exists() and legacy.read_text("utf-8", "replace").startswith(prefix):
                out.append((d, "a copy made by an earlier mlit, never verified"))
        elif state["uri"].startswith(prefix):
            problem = local_problem(d, state, fresh=True)
            if problem:
                out.append((d, f"copy of {state['uri']}: {problem}"))
    return out
