"""Leases on model keys: two sweeps sharing a store train each model once.

Before a sweep trains a model it takes the model key's lease; a second sweep that wants the same
key finds it held, waits until the lease is given back, and then reuses the stored model. A lease
is an object beside the store's models, ``leases/<key>.lock``, written only if absent:

- on a local or shared filesystem, a file created with ``O_CREAT | O_EXCL``;
- on S3 (and S3-compatible servers), a PUT with ``If-None-Match: *``, which the server refuses
  when the object exists.

The holder renews its leases every `RENEW_S` seconds while it trains; a lease not renewed for
`TTL_S` seconds belongs to a process that died (a lost node, a killed job), and the next sweep
takes it over; a lease whose holder ran on this machine and no longer exists (``kill -9``, then a
rerun) is taken over at once. Other object stores (gs://), and s3:// without boto3 (``pip install mlit[s3]``),
have no lease: a warning says a shared model may then be trained twice (harmless: the first copy
published is kept, `Store.publish_model`).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterable
from pathlib import Path

from mlit.plumbing import console
from mlit.store.artifacts import Store

TTL_S = float(os.environ.get("MLIT_LEASE_TTL_S", "120"))
RENEW_S = TTL_S / 6


def _owner() -> dict:
    return {"host": socket.gethostname(), "pid": os.getpid(), "token": uuid.uuid4().hex}


class _Local:
    def __init__(self, store: Store):
        self.folder = Path(store._path("leases"))

    def _file(self, key: str) -> Path:
        return self.folder / f"{key}.lock"

    def create(self, key: str, body: bytes) -> bool:
        self.folder.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(self._file(key), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "wb") as fh:
            fh.write(body)
        return True

    def age(self, key: str) -> float | None:
        try:
            return time.time() - self._file(key).stat().st_mtime
        except FileNotFoundError:
            return None

    def read(self, key: str) -> bytes | None:
        try:
            return self._file(key).read_bytes()
        except FileNotFoundError:
            return None

    def renew(self, key: str, body: bytes) -> None:
        self._file(key).write_bytes(body)

    def delete(self, key: str) -> None:
        self._file(key).unlink(missing_ok=True)

    def take_over(self, key: str) -> None:
        """Move a dead holder's lease aside (a rename: of two sweeps taking over at once, one
        moves it, the other finds it gone)."""
        with contextlib.suppress(FileNotFoundError):
            os.rename(self._file(key), self._file(key).with_suffix(f".dead-{uuid.uuid4().hex}"))
            for dead in self.folder.glob(f"{key}.dead-*"):
                dead.unlink(missing_ok=True)


class _S3:
    def __init__(self, store: Store):
        import boto3

        bucket, _, prefix = store._base.partition("/")
        self.bucket, self.prefix = bucket, prefix.strip("/")
        self.client = boto3.client("s3", region_name=os.environ.get("AWS_DEFAULT_REGION"))

    def _key(self, key: str) -> str:
        return "/".join(p for p in (self.prefix, "leases", f"{key}.lock") if p)

    def create(self, key: str, body: bytes) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.put_object(
                Bucket=self.bucket, Key=self._key(key), Body=body, IfNoneMatch="*"
            )
        except ClientError as err:
            if err.response["Error"]["Code"] in (
                "PreconditionFailed",
                "ConditionalRequestConflict",
            ):
                return False
            raise
        return True

    def age(self, key: str) -> float | None:
        from botocore.exceptions import ClientError

        try:
            head = self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError as err:
            if err.response["Error"]["Code"] in ("404", "NoSuchKey", "NotFound"):
                return None
            raise
        return time.time() - head["LastModified"].timestamp()

    def read(self, key: str) -> bytes | None:
        from botocore.exceptions import ClientError

        try:
            return self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read()
        except ClientError:
            return None

    def renew(self, key: str, body: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=body)

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._key(key))

    take_over = delete


def _holder_is_gone(body: bytes | None) -> bool:
    """Whether a lease's holder ran on this machine and its process no longer exists (a sweep
    killed with -9 a moment ago): its lease is taken over at once, not after `TTL_S`."""
    try:
        holder = json.loads(body or b"{}")
    except ValueError:
        return False
    if holder.get("host") != socket.gethostname() or not isinstance(holder.get("pid"), int):
        return False
    try:
        os.kill(holder["pid"], 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, someone else's
        return False
    return False


def _backend(store: Store):
    if store.is_local:
        return _Local(store)
    if store.root.startswith("s3://"):
        try:
            return _S3(store)
        except ImportError:  # boto3 is the `s3` extra
            return None
    return None


class Leases:
    """The leases one sweep holds on a store, renewed in the background until released.

    ``with Leases(store) as leases: if leases.acquire(key): ...`` — every lease still held is
    given back when the block ends, however it ends."""

    def __init__(self, store: Store):
        self._backend = _backend(store)
        if self._backend is None:
            console.warn(
                f"[train] {store.root}: no leases on this storage; two sweeps sharing it may "
                "train the same model twice (the first one published is kept)"
            )
        self._held: dict[str, bytes] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Leases:
        self._thread = threading.Thread(target=self._renew_loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for key in list(self._held):
            self.release(key)

    def acquire(self, key: str) -> bool:
        """Take the lease on ``key`` if nobody holds it (or its holder stopped renewing it)."""
        if self._backend is None:
            return True
        body = json.dumps({**_owner(), "since": time.time()}).encode()
        if not self._backend.create(key, body):
            age = self._backend.age(key)
            if age is None:
                return False
            if age < TTL_S and not _holder_is_gone(self._backend.read(key)):
                return False
            self._backend.take_over(key)  # its holder died without giving it back
            if not self._backend.create(key, body):
                return False
        with self._lock:
            self._held[key] = body
        return True

    def release(self, key: str) -> None:
        with self._lock:
            held = self._held.pop(key, None)
        if held is not None and self._backend is not None:
            with contextlib.suppress(OSError):
                self._backend.delete(key)

    def held_elsewhere(self, key: str) -> bool:
        """Whether another live sweep holds ``key``'s lease."""
        if self._backend is None or key in self._held:
            return False
        age = self._backend.age(key)
        return age is not None and age < TTL_S and not _holder_is_gone(self._backend.read(key))

    def wait_for(self, keys: Iterable[str], done, poll_s: float = 2.0) -> None:
        """Block until each key's lease is free or ``done(key)`` is true."""
        pending = set(keys)
        while pending:
            pending = {k for k in pending if not done(k) and self.held_elsewhere(k)}
            if pending:
                time.sleep(poll_s)

    def _renew_loop(self) -> None:
        while not self._stop.wait(RENEW_S):
            with self._lock:
                held = dict(self._held)
            for key, body in held.items():
                with contextlib.suppress(Exception):  # a missed renewal is retried next time
                    self._backend.renew(key, body)
