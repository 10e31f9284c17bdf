"""Which pyarrow filesystem a folder or URI is: the one abstraction behind the store, its
downloads and Tune's ``storage_path`` (passed as ``storage_filesystem``).

An S3 filesystem is dropped, and Arrow's S3 layer finalized, at exit while the interpreter is still
whole: a process that ended with one alive could abort in Arrow's own shutdown ("terminate called
without an active exception", exit 134) after its work was done.
"""

from __future__ import annotations

import atexit
import os
from pathlib import Path

_FS_CACHE: dict[str, tuple] = {}


def filesystem(root: str):
    """(pyarrow filesystem, base path) for a folder or URI; cached per root string."""
    if root not in _FS_CACHE:
        from pyarrow import fs

        if "://" in root:
            found, base = fs.FileSystem.from_uri(root)
            if isinstance(found, fs.S3FileSystem) and os.environ.get("AWS_ENDPOINT_URL"):
                # Honour a custom endpoint (MinIO, a test server) the way the AWS CLI does.
                endpoint = os.environ["AWS_ENDPOINT_URL"]
                found = fs.S3FileSystem(
                    endpoint_override=endpoint,
                    scheme="https" if endpoint.startswith("https") else "http",
                    region=os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
                    allow_bucket_creation=True,
                )
            if isinstance(found, fs.S3FileSystem) and not _FS_CACHE.get("_s3_exit"):
                atexit.register(_close_s3)
                _FS_CACHE["_s3_exit"] = (None, "")
        else:
            found = fs.LocalFileSystem()
            base = str(Path(root).expanduser().resolve())
            Path(base).mkdir(parents=True, exist_ok=True)
        _FS_CACHE[root] = (found, base)
    return _FS_CACHE[root]


def _close_s3() -> None:
    import gc

    from pyarrow import fs

    _FS_CACHE.clear()
    gc.collect()  # the last references to the S3 filesystems go before Arrow finalizes S3
    fs.finalize_s3()
