"""A page loaded in a real browser: headless Chromium driven over the DevTools protocol.

`load(path)` opens a local file, waits for the load event and returns what a person would notice
is wrong: console errors, uncaught exceptions, images that did not render, plus a screenshot.
Only `websockets` (already a dependency of the serving stack) and Debian's `chromium` are used.
"""

from __future__ import annotations

import base64
import itertools
import json
import re
import shutil
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

CHECK_IMAGES = """
Array.from(document.images).map(i => ({alt: i.alt, ok: i.complete && i.naturalWidth > 0,
                                       width: i.naturalWidth}))
"""


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@dataclass(frozen=True)
class Loaded:
    errors: list[str]  # console errors, exceptions, failed loads
    images: list[dict]  # {alt, ok, width} for each <img>
    title: str
    screenshot: Path
    text: str = ""  # what the page shows (document.body.innerText)


def _devtools_port(proc: subprocess.Popen, deadline: float) -> int:
    while time.time() < deadline:
        line = proc.stderr.readline()
        found = re.search(r"DevTools listening on ws://[^:]+:(\d+)/", line)
        if found:
            return int(found.group(1))
        if not line and proc.poll() is not None:
            break
    raise RuntimeError("chromium did not start its DevTools endpoint")


def load(page: Path, screenshot: Path, timeout: float = 60) -> Loaded:
    from websockets.sync.client import connect

    profile = tempfile.mkdtemp(prefix="mlit-chromium-")
    proc = subprocess.Popen(
        [
            chromium(),
            "--headless",
            "--no-sandbox",  # root in CI
            "--disable-gpu",
            "--no-first-run",
            "--remote-debugging-port=0",
            "--remote-debugging-address=127.0.0.1",
            f"--user-data-dir={profile}",
            "--window-size=1280,900",
            "about:blank",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.time() + timeout
        port = _devtools_port(proc, deadline)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as r:
            target = next(t for t in json.load(r) if t["type"] == "page")
        ids = itertools.count(1)
        errors: list[str] = []
        with connect(target["webSocketDebuggerUrl"], max_size=2**28) as ws:

            def call(method: str, **params):
                n = next(ids)
                ws.send(json.dumps({"id": n, "method": method, "params": params}))
                while True:
                    msg = json.loads(ws.recv(timeout=max(1, deadline - time.time())))
                    if msg.get("id") == n:
                        if "error" in msg:
                            raise RuntimeError(f"{method}: {msg['error']}")
                        return msg.get("result", {})
                    note(msg)

            def note(msg: dict) -> None:
                method, p = msg.get("method"), msg.get("params", {})
                if method == "Runtime.consoleAPICalled" and p["type"] in ("error", "assert"):
                    errors.append(" ".join(str(a.get("value", a)) for a in p["args"]))
                elif method == "Runtime.exceptionThrown":
                    errors.append(p["exceptionDetails"].get("text", "exception"))
                elif method == "Log.entryAdded" and p["entry"]["level"] == "error":
                    errors.append(p["entry"]["text"])
                elif method == "Page.loadEventFired":
                    loaded.append(True)

            loaded: list[bool] = []
            for domain in ("Page", "Runtime", "Log"):
                call(f"{domain}.enable")
            call("Page.navigate", url=page.resolve().as_uri())
            while not loaded:
                note(json.loads(ws.recv(timeout=max(1, deadline - time.time()))))
            images = call("Runtime.evaluate", expression=CHECK_IMAGES, returnByValue=True)
            title = call("Runtime.evaluate", expression="document.title", returnByValue=True)
            text = call(
                "Runtime.evaluate", expression="document.body.innerText", returnByValue=True
            )
            shot = call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        screenshot.write_bytes(base64.b64decode(shot["data"]))
        return Loaded(
            errors,
            images["result"]["value"],
            title["result"]["value"],
            screenshot,
            text["result"].get("value", ""),
        )
    finally:
        proc.kill()
        proc.wait()
        shutil.rmtree(profile, ignore_errors=True)
