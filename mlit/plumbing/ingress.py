"""How HTTP reaches the Serve app: Serve's HAProxy ingress, set in the environment Ray starts with.

`install` sets the environment Ray starts with so that Serve runs in
its throughput-optimized mode with HAProxy in front (`RAY_SERVE_THROUGHPUT_OPTIMIZED`,
`RAY_SERVE_ENABLE_HA_PROXY`): the gateway replica is the HTTP server itself (Serve's direct
ingress, uvicorn in the replica), HAProxy on every node forwards the app's port to it, and no
Python proxy actor stands between. Serve's proxy cost a served request more CPU than the engine's
whole decode of a 64-token answer on the demo model: through it, an answer took ~43 ms of CPU
on the HTTP path (proxy 12, gateway 18, model server 8, client 5) against the engine's ~35, and
the server delivered 38-55% of the engine alone's tokens/s on 2 cores; with HAProxy it takes
~11 ms (gateway 3.5) and the served share rose to ~70% (`benchmarks/serve_load.py`).

A Ray started without this environment (another tool's, or ``ray start`` by hand without
``ray_cluster.yaml``'s variables) serves the same app through Serve's proxy actor, only slower.
Serve reads the environment once, as ``ray.serve`` is first imported, in the driver as in every
replica: `mlit.serving` calls `install` as it is imported, before any of its modules imports Serve.
"""

from __future__ import annotations

import os
import resource

from mlit.plumbing.ports import free_port

# The environment of Serve's HAProxy ingress. Set where Ray starts: here for a Ray that
# mlit starts, in ``ray_cluster.yaml`` on every node of a cluster. A replica shutting down stays
# open this long so that HAProxy stops sending to it (Serve's default, 30 s, made every teardown
# of the app, between a sweep's phases and at its end, 30 s longer).
INGRESS = {
    "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
    "RAY_SERVE_ENABLE_HA_PROXY": "1",
    "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "2",
}
# HAProxy asks for about 2.5 file descriptors per connection it takes (and exits at start when
# the hard limit is lower): its bound on connections, fitted to the limit there is.
HAPROXY_MAXCONN = 4096


def install() -> None:
    """Call before ``ray.init`` starts a local Ray: its processes inherit this environment. A
    variable already set (``RAY_SERVE_ENABLE_HA_PROXY=0`` to keep Serve's proxy) is kept."""
    for name, value in INGRESS.items():
        os.environ.setdefault(name, value)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # Ray's workers need them too
    room = HAPROXY_MAXCONN if hard == resource.RLIM_INFINITY else int((hard - 200) / 2.5)
    os.environ.setdefault("RAY_SERVE_HAPROXY_MAXCONN", str(max(64, min(HAPROXY_MAXCONN, room))))
    # HAProxy's statistics and metrics pages have fixed ports (8404, 9101): a second Ray on the
    # machine (a sweep beside a `mlit serve`) would find them taken and serve nothing.
    for name in ("RAY_SERVE_HAPROXY_STATS_PORT", "RAY_SERVE_HAPROXY_METRICS_PORT"):
        if name not in os.environ:
            os.environ[name] = str(free_port())
