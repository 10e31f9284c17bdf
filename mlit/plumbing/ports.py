"""Free ports on loopback: the one place mlit asks the kernel for a port nobody holds.

Every port an app or a sweep opens is its own (two on one machine never answer each other), so
whatever needs a port it was not given (a sweep's Serve app, HAProxy's statistics and metrics
pages, a single-process training group's rendezvous) takes one from here.
"""

from __future__ import annotations

import socket


def free_port(host: str = "127.0.0.1") -> int:
    """A port on ``host`` that was free when asked. The kernel hands out ephemeral ports in turn,
    so the port is not handed to another caller at once; the caller binds it soon after."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def is_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether ``port`` can be bound on ``host`` now."""
    with socket.socket() as probe:
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def http_port(asked: int | None, host: str = "127.0.0.1", default: int = 8000) -> int:
    """The port an app listens on: the one asked for (an error naming it when it is taken), else
    ``default`` when it is free, else a free one: two apps on one machine never share one."""
    if asked is not None:
        if not is_free(asked, host):
            raise OSError(98, f"--port {asked} on {host} is in use")
        return asked
    return default if is_free(default, host) else free_port(host)
