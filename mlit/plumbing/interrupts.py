"""Interrupts are interrupts: Ctrl-C and SIGTERM end a sweep as "interrupted" (exit code 130),
with Ray shut down, nothing marked failed, and everything finished kept in the store.

SIGTERM (what `kill`, a scheduler or `ray job stop` sends) is turned into the same
KeyboardInterrupt as Ctrl-C, so one code path handles both. Ray installs handlers of its own when
it starts, so the phases call `install` again right after `ray.init`.
"""

from __future__ import annotations

import signal
import sys
import threading

EXIT_CODE = 130


def _as_keyboard_interrupt(signum, _frame) -> None:
    raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")


def install() -> None:
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _as_keyboard_interrupt)
        signal.signal(signal.SIGINT, signal.default_int_handler)


def ray_running() -> bool:
    if "ray" not in sys.modules:
        return False
    import ray

    return ray.is_initialized()


def shutdown_ray() -> None:
    """Take Serve and Ray down if this process started them (a no-op otherwise)."""
    if "ray" not in sys.modules:
        return
    import ray

    if not ray.is_initialized():
        return
    try:
        from ray import serve

        serve.shutdown()
    except Exception:  # Serve was never started: nothing to take down
        pass
    ray.shutdown()
