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
    with doubling(
        first, lambda: console.warn(f"[{label}] still running ({_took(time.time() - start)})")
    ):
        yield


@contextmanager
def doubling(first: float, tick):
    """Call ``tick()`` after ``first`` seconds, then after twice that, and so on, on a
    background thread while the block runs."""
    stop = threading.Event()

    def loop() -> None:
        gap = first
        while not stop.wait(gap):
            tick()
            gap *= 2

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


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
