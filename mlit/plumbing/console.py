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
import re
import shutil
import sys
import tempfile
import traceback
from pathlib import Path
from typing import NoReturn

_out = None  # the real console while quiet; None: plain stdout
_err = None
_log: Path | None = None


def say(message: str) -> None:
    """A line for the user (a phase, a result, a path)."""
    print(message, file=_out or sys.stdout, flush=True)


def warn(message: str) -> None:
    """A warning for the user, on the console's error stream."""
    print(message, file=_err or sys.stderr, flush=True)


def fail(message: str, code: int = 2) -> NoReturn:
    """The end of every command that cannot go on: one line saying what and what to do. Code 2:
    the user's input or environment (a bad flag, bad data, an unreachable judge, a missing model);
    1: the work ran and failed, or a bug (the log path is printed so the details can be found)."""
    print(
        f"\033[31merror: {message}\033[0m" if is_terminal() else f"error: {message}",
        file=_err or sys.stderr,
        flush=True,
    )
    if code == 1 and _log is not None:
        print(f"(library output: {_log})", file=_err or sys.stderr, flush=True)
    sys.exit(code)


def exit_for(error: BaseException) -> NoReturn:
    """One exit policy for every command line (`mlit ...` and the sweep scripts): expected
    failures (mlit's errors are ValueErrors or RuntimeErrors; OSError: files, ports, network)
    as one line with code 2; Ctrl-C as 130; anything else is a bug: its traceback, code 1."""
    from mlit.plumbing import interrupts

    if isinstance(error, KeyboardInterrupt):
        warn("interrupted: finished work is in the store; rerun to continue")
        sys.exit(interrupts.EXIT_CODE)
    environment = environment_error(error)
    if environment is not None:  # the machine, not mlit: named as such, in one line
        _keep_traceback(error)
        fail(f"the environment: {environment}", 2)
    if isinstance(error, (ValueError, OSError, RuntimeError)):
        _keep_traceback(error)
        if isinstance(error, OSError) and error.errno is not None:
            fail(f"I/O error: {describe_os_error(error)}", 2)
        fail(str(error) or type(error).__name__, 2)
    traceback.print_exception(error, file=_err or sys.stderr)
    fail(f"a bug in mlit ({type(error).__name__}); please report it with the traceback above", 1)


def _keep_traceback(error: BaseException) -> None:
    # The log keeps the traceback, for whoever needs it; not when the disk itself failed (the
    # log lies on it): the error path writes nothing to a failing disk.
    if _log is not None and not _disk_failure(error):
        with contextlib.suppress(OSError), open(_log, "a") as log:
            traceback.print_exception(error, file=log)


# Failures of the machine mlit runs on, by what Ray and Python raise (names and messages: this
# module imports no Ray): (a test, what the user reads).
_ENVIRONMENT = (
    (
        lambda e: "timed out during startup" in str(e) or "Failed to connect to GCS" in str(e),
        "Ray could not start on this machine ({}): it may be overloaded or short of memory; "
        "retry when it is less busy, or start Ray yourself (`ray start --head`)",
    ),
    (
        lambda e: (
            isinstance(e, MemoryError)
            or type(e).__name__ in ("OutOfMemoryError", "ObjectStoreFullError")
        ),
        "out of memory ({}): free memory, or run with fewer workers or smaller batches",
    ),
    (
        lambda e: isinstance(e, OSError) and e.errno == 98,  # EADDRINUSE
        "a port is taken ({}): another program (or another mlit) listens on it; pick another "
        "port, or leave --port out to get a free one",
    ),
)


def environment_error(error: BaseException) -> str | None:
    """One line naming a failure of the environment (Ray cannot start, out of memory, a port
    taken), or None: a bug of mlit's or an error of the user's input is told otherwise."""
    for test, line in _ENVIRONMENT:
        if test(error):
            detail = " ".join(str(error).split())[:200] or type(error).__name__
            return line.format(detail)
    return None


def describe_os_error(err: OSError) -> str:
    """What an I/O failure was, in words a user acts on: no space, read-only, permission (an
    error without an errno, such as pyarrow's, as it is)."""
    import errno

    if err.errno is None:
        return str(err)
    why = {
        errno.ENOSPC: "no space left on the device",
        errno.EDQUOT: "disk quota exceeded",
        errno.EROFS: "read-only file system",
        errno.EACCES: "permission denied",
        errno.EPERM: "permission denied",
    }.get(err.errno, err.strerror or str(err))
    where = err.filename or ""
    return f"{where}: {why}" if where else why


def _disk_failure(error: BaseException) -> bool:
    import errno

    while error is not None:
        if isinstance(error, OSError) and error.errno in (
            errno.ENOSPC,
            errno.EDQUOT,
            errno.EROFS,
            errno.EIO,
        ):
            return True
        error = error.__cause__ or error.__context__
    return False


def bar_stream():
    """Where progress bars draw: the console, also while quiet."""
    return _err or sys.stderr


def is_terminal() -> bool:
    """Whether the user's console is a terminal (progress bars draw; no heartbeat lines)."""
    return (_out or sys.stdout).isatty()


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
        with contextlib.suppress(OSError):  # the log's disk may be full: the error comes next
            sys.stdout.flush()
            sys.stderr.flush()
        os.dup2(saved_out, 1)
        os.dup2(saved_err, 2)
        os.close(saved_out)
        os.close(saved_err)
        _out.close()
        _err.close()
        _out = _err = None
        if _log is not None and _log.parent.name == "logs":
            with contextlib.suppress(OSError):
                split_sources(_log)


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


# Ray prefixes what its workers print with the actor or task that printed it, e.g.
# "(RayTrainWorker pid=5694) ..." (colour codes first on a terminal); by that, each source gets
# its own file beside the whole log.
_PREFIX = re.compile(r"^(?:\x1b\[[0-9;]*m)?\((\w+)")
SOURCES = {
    "train.log": (
        "RayTrainWorker",
        "TrainController",
        "TrainTrainable",
        "train_fn",
        "ImplicitFunc",
    ),
    "serve.log": ("ServeReplica", "ServeController", "ProxyActor", "HTTPProxyActor"),
}


def _source(line: str) -> str:
    found = _PREFIX.match(line)
    if not found:
        return "driver.log"  # this process: Ray, Tune and library lines of the driver
    for name, actors in SOURCES.items():
        if found.group(1).startswith(actors):
            return name
    return "ray-workers.log"


def split_sources(log: Path) -> dict[str, int]:
    """Write ``train.log`` (Ray Train workers: DeepSpeed, transformers), ``serve.log`` (Ray
    Serve), ``ray-workers.log`` (other Ray tasks) and ``driver.log`` (Ray, Tune and libraries in
    this process) beside the whole log; returns the lines each got."""
    out: dict[str, list[str]] = {}
    with open(log, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            out.setdefault(_source(line), []).append(line)
    for name, lines in out.items():
        (log.parent / name).write_text("".join(lines), "utf-8")
    return {name: len(lines) for name, lines in out.items()}
