"""A sign of life in a log: one line every 30 s while a long phase runs, when no bar is drawn."""

from __future__ import annotations

import os
import threading
import time
from contextlib import contextmanager

from mlit.plumbing import console


@contextmanager
def heartbeat(label: str):
    """When output is not a terminal (a cluster job's log), one line every 30 s on stderr while a
    phase runs, so the log shows the job is alive; progress bars only draw on a terminal."""
    if console.is_terminal():
        yield
        return
    interval = float(os.environ.get("MLIT_HEARTBEAT_S", "30"))
    start = time.time()
    with every(
        interval, lambda: console.warn(f"[{label}] still running ({time.time() - start:.0f} s)")
    ):
        yield


@contextmanager
def every(seconds: float, tick):
    """Call ``tick()`` every ``seconds`` on a background thread while the block runs."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(seconds):
            tick()

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
