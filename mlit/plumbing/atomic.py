"""Local files written so that a reader never sees a part: a temporary name, then a rename.

The store's records, the run folder's JSON and Parquet files, datasets, the results page and
the demo models' folders go through here. A write that fails (a full disk, Ctrl-C) leaves no
temporary file behind, and the error names the file it was for.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path


def atomic_write(path: str | Path, payload: bytes | str) -> Path:
    """Write a local file so that a reader sees the old content or the new, never a part: a
    temporary file beside it, then a rename. The store's records, the run folder's JSON and
    Parquet files, datasets and the results page go through here; the tables and figures (rebuilt
    from the run folder at will), the human kits and the log files are written in place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        tmp.write_bytes(payload.encode("utf-8") if isinstance(payload, str) else payload)
        os.replace(tmp, path)
    except OSError as err:  # a full disk: no partial file stays, and the error names the file
        tmp.unlink(missing_ok=True)
        raise OSError(err.errno, err.strerror, str(path)) from err
    except BaseException:  # Ctrl-C
        tmp.unlink(missing_ok=True)
        raise
    return path


def atomic_dir(build, out: Path) -> Path:
    """Build a folder under a temporary name with ``build(tmp)``, then rename it to ``out``: a
    half-built folder (a crash, Ctrl-C) is never taken for a finished one."""
    import shutil

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{uuid.uuid4().hex}.tmp")
    try:
        build(tmp)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def write_parquet(frame, path: str | Path, metadata: dict[str, str] | None = None) -> Path:
    """A Polars frame as Parquet (with key-value ``metadata``), atomically."""
    import io

    buffer = io.BytesIO()
    frame.write_parquet(buffer, metadata=metadata)
    return atomic_write(path, buffer.getvalue())
