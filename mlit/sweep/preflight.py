"""Pre-flight checks: everything about a sweep that can be checked without a GPU, checked before Ray
starts and before anything is written to the run folder.

Each failure is a `PreflightError` whose message names the flag, file or endpoint and says what to
do. The checks are cheap; the judge probe is one call with a trivial prompt, made on every run
that has an API judge (a key revoked since the last run is found here, before any training or
generation), with a short timeout (a hung judge is reported within 30 s).
"""

from __future__ import annotations

import asyncio
import json
import socket
import uuid
from pathlib import Path

from mlit.judging.judge import JudgeError
from mlit.planning.plan import PLACEHOLDER_BASE, Plan
from mlit.plumbing import console
from mlit.store import model_refs
from mlit.store.artifacts import Store

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


def judge(plan: Plan, new_calls: int | None = None) -> None:
    """The judge's template, key and batch support; a probe of an API judge when the run has a
    call to make (``new_calls``: those the store does not hold; a rerun with every verdict
    stored sends nothing, not even the probe)."""
    spec = plan.judge
    if spec.model_dir:
        base_model(spec.model_dir, "--judge-model-dir")
    try:
        j = spec.build()  # reads the template and checks its placeholders
        j.api_key()  # a missing key variable is an error now, not 10,000 failed calls later
    except JudgeError as err:
        raise PreflightError(f"{err} (--judge-prompt / --judge-api-key-env)") from err
    if spec.batch:
        from mlit.providers import batch_api

        why = batch_api.supported(spec.model, spec.api_base)
        if why:
            raise PreflightError(f"--judge-mode batch: {why}")
    calls = plan.counts().judge_calls if new_calls is None else new_calls
    if not spec.self_hosted and calls:
        probe(j)


def new_judge_calls(plan: Plan, store: Store) -> int:
    """The judge calls the store holds no verdict for (those whose answers are stored too; before
    training they cannot be told, so all of a model not trained yet count)."""
    from mlit.sweep import preview

    return plan.counts().judge_calls - preview.cached([plan], store)[0][1]


def budget(plan: Plan, store: Store, new_calls: int | None = None) -> None:
    """A judge expected to cost more than --max-cost stops before any work. The budget is what
    this run may spend: verdicts already stored cost nothing (counted where the answers they
    judge are stored too; before training they cannot be told, so all are counted)."""
    from mlit.providers import pricing
    from mlit.sweep import judge_check, preview

    spec = plan.judge
    if spec.max_cost is None:
        return
    try:
        calls = new_judge_calls(plan, store) if new_calls is None else new_calls
        dollars = preview.judge_cost(plan, calls)
    except ValueError as err:
        raise PreflightError(str(err)) from err
    if dollars is None and not spec.self_hosted:
        raise PreflightError(
            f"--max-cost needs the judge's price: litellm has none for {spec.model}; give "
            "--judge-input-price and --judge-output-price (dollars per million tokens)"
        )
    what = f"judging ({spec.mode})"
    checking = judge_check.cost(plan, store)  # the judge check spends from the same budget
    if checking:
        dollars, what = (dollars or 0.0) + checking, f"{what} and the judge check"
    try:
        pricing.check_plan(dollars or 0.0, spec.max_cost, what)
    except pricing.BudgetError as err:
        raise PreflightError(str(err)) from err


PROBE_TIMEOUT_S = 10.0  # a try; two tries and a backoff stay under PROBE_DEADLINE_S
PROBE_DEADLINE_S = 25.0  # a hung judge is reported within this, counted from the call


def probe(j) -> None:
    """One trivial call: the endpoint answers, with a usable reply. Never cached: the key or the
    endpoint may have changed since the last run."""
    from dataclasses import replace

    from mlit.providers import llm

    endpoint = replace(
        j.endpoint(), timeout_s=PROBE_TIMEOUT_S, retries=1, backoff_s=0.5, patience_s=0
    )
    where = j.api_base or j.model

    async def ask() -> dict:
        try:
            call = llm.complete(endpoint, PROBE_PROMPT, j.max_tokens)
            return await asyncio.wait_for(call, PROBE_DEADLINE_S)
        except asyncio.TimeoutError:
            return {
                "status": "error",
                "error": f"timed out at {where}: no reply within {PROBE_DEADLINE_S:g} s",
            }

    llm.library()  # imported before the clock starts (43 s on a loaded machine)
    result = asyncio.run(ask())
    if result["status"] != "ok":
        status = result.get("fatal_status")
        answered = f"answered HTTP {status} ({llm.FATAL_STATUS[status]}): " if status else ""
        raise PreflightError(
            f"the judge {j.model} did not answer a test prompt ({answered}{result['error']}); "
            f"check --judge, --judge-api-base and --judge-api-key-env, or that {where} is up"
        )


def writable(store: Store) -> None:
    try:
        path = store._path("checks", f"{uuid.uuid4().hex}.probe")
        store._write_atomic(path, b"mlit write check")
        with store._fs.open_input_stream(path) as fh:
            if fh.read() != b"mlit write check":
                raise OSError("a file written could not be read back")
        store._fs.delete_file(path)
    except OSError as err:
        why = console.describe_os_error(err)
        raise PreflightError(f"--store {store.root}: cannot write there ({why})") from err


def writable_folder(path) -> None:
    """The run folder can be written (a full or read-only disk is found now, not mid-run)."""
    from pathlib import Path

    from mlit.plumbing.atomic import atomic_write

    folder = Path(path)
    created = not folder.exists()
    probe = folder / ".write-check"
    try:
        atomic_write(probe, "ok")
        probe.unlink()
        if created:  # nothing stays in the run folder until the run starts
            folder.rmdir()
    except OSError as err:
        why = console.describe_os_error(err)
        raise PreflightError(f"--output {path}: cannot write there ({why})") from err


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


def judge_check(path: str | None, data: str | None) -> None:
    """A check result to show, and a preference set to check on (a local one is read now)."""
    from mlit.judging import check

    try:
        if path is not None:
            check.read_result(path)
        if data is not None and check.is_local(data):
            check.load(data)
    except check.CheckError as err:
        raise PreflightError(str(err)) from err


def prompts_fit(plan: Plan) -> None:
    """Every evaluation prompt, with the sampling's max_tokens, fits the base model's context
    (trained models share it): an instruction that does not would fail on every run. The run
    refuses such data, naming how many and which, before any training."""
    from mlit.data import dataset

    if plan.frame is None or plan.base_model == PLACEHOLDER_BASE:
        return
    try:
        count, context = prompt_length(plan.base_model, plan.prompt_limit)
    except (
        OSError,
        ValueError,
        ImportError,
    ) as err:  # a hub model out of reach now: the server checks later
        console.warn(
            f"[checks] the tokenizer of {plan.base_model} could not be read "
            f"({type(err).__name__}); prompt lengths are checked by the server instead"
        )
        return
    if context is None:
        return
    max_tokens = plan.sampling.max_tokens
    long = dataset.too_long(plan.evals(), count, context, max_tokens)
    if long:
        first = long[0]
        raise PreflightError(
            f"{len(long)} of {plan.evals().height} evaluation instructions do not fit the base "
            f"model's context of {context} tokens with max_tokens={max_tokens} (first: "
            f"{first.example_id} [{first.lang}], {first.detail}); the run refuses them: "
            "shorten or remove them (`mlit data validate DATA --base-model MODEL` lists each), "
            "or lower max_tokens with --sampling"
        )


def prompt_length(spec: str, cut_at: int | None = None):
    """(instruction -> its prompt's tokens as the server counts them, the context length or
    None) for a model directory or hub id; ``cut_at``: the instruction is first cut to that many
    tokens, as generation cuts it (`Plan.prompt_limit`)."""
    from transformers import AutoTokenizer

    from mlit.generation import chat, decoding

    tok = AutoTokenizer.from_pretrained(model_refs.source(spec))
    tok.model_max_length = 2**62  # counting only: no warning about prompts longer than that
    cut = (lambda text: chat.truncate_text(tok, text, cut_at)) if cut_at else (lambda text: text)
    if model_refs.parse(spec).kind == "dir":
        context = model_refs.context(spec)
    else:
        from transformers import AutoConfig

        cfg = AutoConfig.from_pretrained(spec).to_dict()
        names = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length")
        context = next((cfg[n] for n in names if isinstance(cfg.get(n), int)), None)
    return (
        lambda text: len(decoding.encode_prompt(tok, chat.format_prompt(tok, cut(text))))
    ), context


def preflight(plan: Plan, store: Store) -> None:
    """Every check, cheapest first. Raises `PreflightError` naming the problem."""
    base_model(plan.base_model)
    prompts_fit(plan)
    shares(plan.config.pretraining_shares)
    judge_check(plan.config.judge_check, plan.config.judge_check_data)
    port(plan.config.serve_port)
    writable(store)
    # One bulk read of the store for both: what the budget counts, and whether the judge is asked.
    spec = plan.judge
    asks = plan.counts().judge_calls and (not spec.self_hosted or spec.max_cost is not None)
    new_calls = new_judge_calls(plan, store) if asks else None
    budget(plan, store, new_calls)  # before the judge's probe: over budget, not even that call
    judge(plan, new_calls)
    writable_folder(plan.config.run_dir())
