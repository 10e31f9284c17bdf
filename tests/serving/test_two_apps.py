"""Two `mlit serve` apps on one machine (issue 53): each its own ports, on its own host, and a
replica replaced after its engine is killed never hands a request (and its key) to the other.

Runs with `make test-apps` (CI runs it): two Ray instances and a 90 s poll, ~3 minutes.
"""

import itertools
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

pytestmark = pytest.mark.apps
MLIT = Path(sys.executable).with_name("mlit")
# The ports each app's Ray takes for its ingress (`mlit.plumbing.ingress.PORTS`).
INGRESS_PORTS = (
    "RAY_SERVE_HAPROXY_STATS_PORT",
    "RAY_SERVE_HAPROXY_METRICS_PORT",
    "RAY_SERVE_FALLBACK_PROXY_HTTP_PORT",
)


def _start(name: str, model: Path, key_var: str, key: str, tmp: Path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "MLIT_"))}
    env[key_var] = key
    out = (tmp / f"{name}.log").open("w")
    proc = subprocess.Popen(
        [str(MLIT), "serve", "--model", f"{name}={model}", "--api-key-env", key_var],
        stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        text = (tmp / f"{name}.log").read_text()
        found = re.search(r"serving 1 model\(s\) at (http://\S+)/v1", text)
        if found:
            return proc, found.group(1)
        assert proc.poll() is None, text[-3000:]
        time.sleep(1)
    raise AssertionError((tmp / f"{name}.log").read_text()[-3000:])


def _stop(proc) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def _listeners() -> list[tuple[str, int, str]]:
    """(address, port, process name) of every TCP listener on the machine."""
    out = subprocess.run(["ss", "-Hltnp"], capture_output=True, text=True, check=True).stdout
    found = []
    for line in out.splitlines():
        local = line.split()[3]
        host, _, port = local.rpartition(":")
        name = re.search(r'\(\("([^"]+)"', line)
        found.append((host, int(port), name.group(1) if name else ""))
    return found


def _ports_of(proc, url: str) -> set[int]:
    # The environment the app's Ray started with (set in the app's process after it started).
    kids = psutil.Process(proc.pid).children(recursive=True)
    env = next(k for k in kids if k.name() == "raylet").environ()
    return {int(url.rsplit(":", 1)[1])} | {int(env[name]) for name in INGRESS_PORTS}


def _engine_of(proc) -> int:
    kids = psutil.Process(proc.pid).children(recursive=True)
    (engine,) = [k.pid for k in kids if "mlit.serving.engines.engine_process" in k.cmdline()]
    return engine


def test_two_apps_keep_to_themselves_through_a_killed_engine(tiny_base, tmp_path):
    import openai

    a, url_a = _start("a", tiny_base, "MLIT_KEY_A", "key-a", tmp_path)
    b = None
    try:
        b, url_b = _start("b", tiny_base, "MLIT_KEY_B", "key-b", tmp_path)
        assert url_a != url_b
        # Every port of each app is its own, and on loopback: HTTP, HAProxy's pages, Serve's
        # fallback proxy (Ray's own gRPC ports are Ray's: they bind every interface).
        ports_a, ports_b = _ports_of(a, url_a), _ports_of(b, url_b)
        assert not ports_a & ports_b, (ports_a, ports_b)
        listening = _listeners()
        for host, port, name in listening:
            if port in ports_a | ports_b or name == "haproxy":
                assert host == "127.0.0.1", (host, port, name)
        assert {p for _, p, _ in listening} >= ports_a | ports_b
        for url in (url_a, url_b):
            assert httpx.get(f"{url}/health").status_code == 200
            assert httpx.get(f"{url}/healthz").status_code == 200

        client = openai.OpenAI(base_url=f"{url_a}/v1", api_key="key-a", max_retries=4)
        ask = {"model": "a", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}
        start, killed, dead_health, answered, failures = time.monotonic(), None, None, [], []
        while time.monotonic() - start < 90:
            now = time.monotonic() - start
            if killed is None and now > 10:
                os.kill(_engine_of(a), signal.SIGKILL)  # under the polling client
                killed = now
                for _ in range(50):  # /health says so at once
                    dead_health = httpx.get(f"{url_a}/health").status_code
                    if dead_health != 200:
                        break
                    time.sleep(0.05)
            try:
                client.chat.completions.create(**ask)
                answered.append(time.monotonic() - start)
            except openai.AuthenticationError as err:  # another app's answer to A's key
                pytest.fail(f"app A's request was answered 401 ({err}): it reached app B")
            except openai.APIError as err:
                failures.append((round(now, 1), type(err).__name__, str(err)[:200]))
            time.sleep(0.2)
        assert dead_health == 503, dead_health
        assert len(failures) <= 1, failures  # the request in flight at most
        back = min(t for t in answered if t > killed)
        steady = all(y - x < 5 for x, y in itertools.pairwise(answered) if x > back)
        assert back - killed < 60 and steady, (killed, back)
        print(f"engine killed at {killed:.1f} s; answered again {back - killed:.1f} s later")
        assert httpx.get(f"{url_a}/health").status_code == 200
        reply = openai.OpenAI(base_url=f"{url_b}/v1", api_key="key-b").chat.completions.create(
            **{**ask, "model": "b"}
        )
        assert reply.choices[0].message.content is not None
    finally:
        for proc in (a, b):
            if proc is not None:
                _stop(proc)
