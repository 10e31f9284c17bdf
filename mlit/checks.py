"""Pre-flight checks: everything about a sweep that can be checked without a GPU, checked before Ray
starts and before anything is written to the run folder.

Each failure is a `PreflightError` whose message names the flag, file or endpoint and says what to
do. The checks are cheap, except the judge probe (one call with a trivial prompt), whose success
is remembered in the store so that a rerun does not pay for it again.
"""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path

from mlit import model_refs
from mlit.judge import JudgeError
from mlit.plan import PLACEHOLDER_BASE, Plan
from mlit.store import Store, content_key

PROBE_PROMPT = "Reply with the single digit 1."


class PreflightError(ValueError):
    """A sweep that cannot run as given; nothing was computed or written."""


def base_model(spec: str, flag: str = "--base-model") -> None:
    """A local model directory (with config.json) or the syntax of a hub name (org/name)."""
    if spec == PLACEHOLDER_BASE:
        return
    try:
        model_refs.check(spec, flag)
    except ValueError as err:
        raise PreflightError(str(err)) from err


def judge(plan: Plan, store: Store) -> None:
    spec = plan.judge
    if spec.model_dir:
        base_model(spec.model_dir, "--judge-model-dir")
    try:
        j = spec.build()  # reads the template and checks its placeholders
        j.api_key()  # a missing key variable is an error now, not 10,000 failed calls later
    except JudgeError as err:
        raise PreflightError(f"{err} (--judge-prompt / --judge-api-key-env)") from err
    if not spec.self_hosted:
        probe(j, store)


def probe(j, store: Store) -> None:
    """One trivial call: the endpoint answers, with a usable reply. Remembered per judge identity."""
    from mlit import llm

    key = content_key("probe", j.identity())
    if store.get("probes", key) is not None:
        return
    result = asyncio.run(llm.complete(j.endpoint(), PROBE_PROMPT, j.max_tokens))
    where = j.api_base or j.model
    if result["status"] != "ok":
        raise PreflightError(
            f"the judge {j.model} did not answer a test prompt ({result['error']}); check "
            f"--judge, --judge-api-base and --judge-api-key-env, or that {where} is up"
        )
    store.put("probes", key, {"model": j.model, "reply": result["text"]})


def writable(store: Store) -> None:
    key = content_key("write-check")
    try:
        store.put("checks", key, {"ok": True})
        if store.get("checks", key) is None:
            raise OSError("a record written could not be read back")
    except OSError as err:
        raise PreflightError(f"--store {store.root}: cannot write there ({err})") from err


def port(number: int | None) -> None:
    if number is None:
        return
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", number))
        except OSError as err:
            raise PreflightError(
                f"--port {number} is in use ({err.strerror}); pick another or leave --port out"
            ) from err


def shares(path: str | None) -> None:
    if path is None:
        return
    try:
        raw = json.loads(Path(path).read_text("utf-8"))
        if not isinstance(raw, dict) or not all(isinstance(v, int | float) for v in raw.values()):
            raise ValueError("expected an object {language: share}")
    except (OSError, ValueError) as err:
        raise PreflightError(
            f'--pretraining-shares {path}: {err} (a JSON file like {{"en": 0.78, "ru": 0.04}})'
        ) from err


def preflight(plan: Plan, store: Store) -> None:
    """Every check, cheapest first. Raises `PreflightError` naming the problem."""
    base_model(plan.base_model)
    shares(plan.config.pretraining_shares)
    port(plan.config.serve_port)
    writable(store)
    judge(plan, store)
