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
