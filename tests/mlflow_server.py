"""A real MLflow tracking server on loopback (SQLite backend, artifacts in a folder), from the
environment `make mlflow-env` builds (`.venv-mlflow`: the full server, whose pins differ from
mlit's; mlit itself only needs the client, `mlflow-skinny`)."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

from mlit.plumbing.ports import free_port

REPO = Path(__file__).resolve().parents[1]


def executable() -> str | None:
    """``$MLIT_MLFLOW``, else `.venv-mlflow`'s, else an ``mlflow`` on PATH that can serve."""
    given = os.environ.get("MLIT_MLFLOW")
    if given:
        return given
    local = REPO / ".venv-mlflow" / "bin" / "mlflow"
    if local.exists():
        return str(local)
    return shutil.which("mlflow") if shutil.which("gunicorn") else None


@contextmanager
def running(folder: Path, timeout_s: float = 120.0):
    """Yields the server's URL; the server is stopped on exit."""
    exe = executable()
    if exe is None:
        raise RuntimeError("no MLflow server: run `make mlflow-env`")
    port = free_port()
    folder.mkdir(parents=True, exist_ok=True)
    log = (folder / "server.log").open("w")
    cmd = [
        exe, "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
        "--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}",
        "--artifacts-destination", str(folder / "artifacts"),
    ]  # fmt: skip
    server = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=folder)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + timeout_s
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as reply:
                    if reply.status == 200:
                        break
            except OSError:
                pass
            if server.poll() is not None or time.time() > deadline:
                raise RuntimeError(
                    f"mlflow server did not start: {(folder / 'server.log').read_text()[-2000:]}"
                )
            time.sleep(0.5)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()
