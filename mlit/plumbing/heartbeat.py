"""A sign of life in a log: a line while a long phase runs, when no bar is drawn, spaced out as
the phase goes on (after 1, 3, 7, 15, ... minutes), so a log file stays short on a slow machine."""

from __future__ import annotations

import os
import threading
import time
from contextlib import contextmanager

from mlit.plumbing import console

FIRST_S = 60.0  # the first line after a minute; each gap after it twice the one before


def _took(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"


@contextmanager
def heartbeat(label: str):
    """When output is not a terminal (a cluster job's log, ``nohup``, CI), a line on stderr
    while a phase runs, so the log shows the job is alive: at most one a minute, and fewer as
    the phase goes on (a phase of T minutes prints about log2(T) of them); progress bars only
    draw on a terminal. ``MLIT_HEARTBEAT_S`` sets the first gap."""
    if console.is_terminal():
        yield
        return
    first = float(os.environ.get("MLIT_HEARTBEAT_S", FIRST_S))
    start = time.time()
    with every(
        first,
        lambda: console.warn(f"[{label}] still running ({_took(time.time() - start)})"),
        growth=2.0,
    ):
        yield


@contextmanager
def every(seconds: float, tick, growth: float = 1.0):
    """Call ``tick()`` every ``seconds`` on a background thread while the block runs; with
    ``growth``, each gap that many times the one before."""
    stop = threading.Event()

    def loop() -> None:
        gap = seconds
        while not stop.wait(gap):
            tick()
            gap *= growth

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
