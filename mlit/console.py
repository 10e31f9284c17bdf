"""What the user sees: mlit's own lines on the console, library output in a log file.

A sweep run from its script is quiet by default: the process's standard output and error (file
descriptors 1 and 2, so Ray, Tune, Serve, DeepSpeed, transformers and C++ libraries alike) go to a
log file, and only mlit's lines (a line per phase, progress bars, warnings, the table, the paths)
reach the console. `--verbose` leaves everything on the console. A library caller (a notebook, a
test) gets plain prints: quiet mode is entered by the command line only.

The log starts in a temporary file, because nothing may be written to the run folder before the
plan is valid; `attach` moves it to ``RUN_DIR/logs/mlit.log`` once the run folder exists.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
from pathlib import Path

_out = None  # the real console while quiet; None: plain stdout
_err = None
_log: Path | None = None


def say(message: str) -> None:
    """A line for the user (a phase, a result, a path)."""
    print(message, file=_out or sys.stdout, flush=True)


def warn(message: str) -> None:
    """A warning for the user, on the console's error stream."""
    print(message, file=_err or sys.stderr, flush=True)


def bar_stream():
    """Where progress bars draw: the console, also while quiet."""
    return _err or sys.stderr


def is_terminal() -> bool:
    """Whether the user's console is a terminal (progress bars draw; no heartbeat lines)."""
    return (_out or sys.stdout).isatty()


def log_path() -> Path | None:
    return _log


@contextlib.contextmanager
def quiet(enabled: bool = True):
    """Send file descriptors 1 and 2 to a log file for the duration; mlit's lines still reach the
    console. Restored on exit (errors are printed after it, on the console)."""
    global _out, _err, _log
    if not enabled or _out is not None:
        yield
        return
    sys.stdout.flush()
    sys.stderr.flush()
    saved_out, saved_err = os.dup(1), os.dup(2)
    fd, name = tempfile.mkstemp(prefix="mlit-", suffix=".log")
    _log = Path(name)
    _out = os.fdopen(os.dup(saved_out), "w", buffering=1)
    _err = os.fdopen(os.dup(saved_err), "w", buffering=1)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    try:
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved_out, 1)
        os.dup2(saved_err, 2)
        os.close(saved_out)
        os.close(saved_err)
        _out.close()
        _err.close()
        _out = _err = None


def attach(folder: Path) -> None:
    """Move the log into ``folder`` (the run's logs/) and keep writing there."""
    global _log
    if _out is None or _log is None or _log.parent == folder:
        return
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / "mlit.log"
    sys.stdout.flush()
    sys.stderr.flush()
    with open(target, "ab") as out, open(_log, "rb") as old:
        shutil.copyfileobj(old, out)
    fd = os.open(target, os.O_WRONLY | os.O_APPEND)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    _log.unlink(missing_ok=True)
    _log = target
