"""Calls through a provider's Batch API: half the price, resumable by batch id, under a budget.

The judge (`--judge-mode batch`) and the translator (`mlit translate --mode batch`) hand over
their calls; this module writes them as Batch API lines (`mlit.providers.batch_files`), uploads
and submits them through the OpenAI-compatible ``files`` and ``batches`` endpoints, polls with
backoff and hands every answer back (each request answered once: `batch_files.answers`).

Nothing is submitted or paid twice. Before a batch is created its *intent* (the keys it covers,
an id carried as the batch's metadata) is filed in the store; once the provider accepts it, its
batch id is filed too. A run interrupted at any moment finds both on the next run: a batch with an
id is polled and read, an intent without one is looked up at the provider by its metadata (it may
have been created just before the interruption), and only calls no batch covers are submitted.

Requests that fail inside a batch, or that an expired batch did not reach, are asked again in a
new batch, up to ``rounds`` times; what is still unanswered after that goes back to the caller,
which asks it online (so a provider that keeps failing a request cannot hold the run forever).
A batch cancelled at the provider is the user stopping the spending: nothing more is submitted
or asked, the phase stops, and only a rerun submits its calls again.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from mlit.plumbing import console
from mlit.providers import batch_files, llm, openai_http
from mlit.providers.batch_files import Call
from mlit.providers.pricing import Budget
from mlit.store.artifacts import Store

TERMINAL = ("completed", "failed", "expired", "cancelled")
# The store's record kinds: a batch's intent (before it is created), its id, and the batches
# seen cancelled (by the user, at the provider), whose calls a rerun submits anew.
INTENTS, SUBMITTED, CANCELLED = "batch_intents", "batch_ids", "batch_cancelled"


class BatchError(RuntimeError):
    """The provider refused a batch operation (no Batch API at that endpoint, a bad file)."""


@dataclass(frozen=True)
class BatchOptions:
    max_requests: int = 50_000  # OpenAI's limit per batch
    max_bytes: int = 190_000_000  # under OpenAI's 200 MB per input file
    poll_s: float = 10.0  # the first wait; each wait is 1.5 times the last, up to max_poll_s
    max_poll_s: float = 300.0
    rounds: int = 3  # new batches for failed or expired requests, before they go online
    completion_window: str = "24h"

    def __post_init__(self) -> None:
        if self.max_requests < 1 or self.max_bytes < 1024:
            raise ValueError("a batch needs at least one request and 1 KB")


@dataclass
class Report:
    """What the batches of a phase did, for run.json."""

    mode: str = "batch"  # online: nothing went through batches
    submitted: int = 0
    resumed: int = 0
    requests: int = 0
    failed_requests: int = 0
    expired: int = 0
    failed: int = 0  # batches that ended "failed"
    cancelled: int = 0  # batches cancelled at the provider (by the user): the phase stops
    unknown_ids: int = 0  # output lines for requests never asked: ignored
    duplicates: int = 0  # requests answered twice alike: one answer kept
    conflicting: int = 0  # requests answered twice differently: failed, asked again
    stopped: str | None = None  # why the phase must stop (a cancelled batch), or None

    def as_dict(self) -> dict:
        if self.mode != "batch":
            return {"mode": self.mode}
        return {
            "mode": self.mode,
            "batches_submitted": self.submitted,
            "batches_resumed": self.resumed,
            "batch_requests": self.requests,
            "batch_failed_requests": self.failed_requests,
            "batches_expired": self.expired,
            "batches_failed": self.failed,
            "batches_cancelled": self.cancelled,
            "batch_unknown_ids": self.unknown_ids,
            "batch_duplicate_answers": self.duplicates,
            "batch_conflicting_answers": self.conflicting,
        }


def supported(model: str, api_base: str | None) -> str | None:
    """Why batch mode cannot serve this model (None: it can). OpenAI-compatible endpoints only."""
    prefix = model.split("/", 1)[0] if "/" in model else "openai"
    if prefix in ("openai", "hosted_vllm") or api_base:
        return None
    return (
        f"batch mode speaks the OpenAI-compatible files and batches endpoints; {model} is not "
        "one (use an openai/... judge, or an --judge-api-base that implements them)"
    )


class Client:
    """The files and batches endpoints of one OpenAI-compatible API (the `openai` client)."""

    def __init__(self, endpoint: llm.Endpoint):
        import openai

        self.endpoint = endpoint
        self.where = endpoint.api_base or endpoint.model
        self._api = openai.OpenAI(
            base_url=endpoint.api_base,
            api_key=endpoint.api_key() or "EMPTY",
            max_retries=5,
            timeout=endpoint.timeout_s,
        )

    def _call(self, what: str, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as err:  # named for the user, with the endpoint
            raise BatchError(f"{what} failed at {self.where}: {type(err).__name__}: {err}") from err

    def submit(self, lines: list[bytes], intent: str, window: str) -> str:
        upload = self._call(
            "uploading a batch file",
            self._api.files.create,
            file=(f"mlit-{intent}.jsonl", b"".join(lines)),
            purpose="batch",
        )
        batch = self._call(
            "creating a batch",
            self._api.batches.create,
            input_file_id=upload.id,
            endpoint="/v1/chat/completions",
            completion_window=window,
            metadata={"mlit_intent": intent},
        )
        return batch.id

    def retrieve(self, batch_id: str):
        return self._call(f"reading batch {batch_id}", self._api.batches.retrieve, batch_id)

    def content(self, file_id: str) -> str:
        return self._call(f"reading file {file_id}", self._api.files.content, file_id).text

    def find(self, intent: str) -> str | None:
        """The batch created for ``intent`` (by its metadata), or None: it never reached the
        provider."""
        for batch in self._call("listing batches", self._api.batches.list, limit=100):
            if (getattr(batch, "metadata", None) or {}).get("mlit_intent") == intent:
                return batch.id
        return None


@dataclass
class _InFlight:
    intent: str
    batch_id: str
    keys: list[str]
    reserved: float
    round: int
    ended: str | None = None  # the status it ended with


def run(
    calls: Iterable[Call],
    prompt_of: Callable[[Call], str],
    endpoint: llm.Endpoint,
    store: Store,
    budget: Budget,
    accept: Callable[[str, dict], dict],
    opts: BatchOptions = BatchOptions(),
    progress: bool = True,
    report: Report | None = None,
    sent: Counter | None = None,
) -> dict[str, dict]:
    """Ask every call through batches (``prompt_of(call)``: its prompt, made when its batch's
    lines are written); ``accept(key, record)`` takes each answer as it is read
    (parses, checks, stores it) and returns the key's outcome. Returns key -> outcome for every
    call answered, and key -> error record for those still unanswered after ``opts.rounds``
    rounds (the caller asks those online). Stops submitting where ``budget`` would be passed
    (``budget.stopped`` says so); batches already in flight are still read. A batch cancelled
    at the provider stops it all: ``report.stopped`` says so, and the caller asks nothing online.
    ``sent`` counts the lines written by their decoding (`openai_http.decoding_of`).
    """
    from tqdm import tqdm

    report = report if report is not None else Report()
    client = Client(endpoint)
    model = openai_http.provider_name(endpoint.model)
    pending = {c.key: c for c in calls}
    outcome: dict[str, dict] = {}
    last_error: dict[str, dict] = {}
    bar = tqdm(
        total=len(pending),
        desc="batch",
        unit="call",
        disable=None if progress else True,
        file=console.bar_stream(),
    )
    inflight = _resume(pending, endpoint, store, client, budget, report)
    for round_ in range(opts.rounds + 1):
        covered = {k for b in inflight for k in b.keys}
        todo = [c for k, c in pending.items() if k not in outcome and k not in covered]
        if todo and not budget.stopped and not report.stopped:
            args = (model, endpoint, store, client, budget, opts, round_, report)
            inflight += _submit(todo, prompt_of, sent, *args)
        if not inflight:
            break
        for batch, lines in _wait(client, inflight, opts, report, store):
            read = batch_files.answers(lines, set(batch.keys), batch.batch_id)
            report.unknown_ids += read.unknown
            report.duplicates += read.duplicates
            report.conflicting += read.conflicting
            if read.unknown or read.conflicting:
                console.say(
                    f"[batch] {batch.batch_id}: {read.unknown} answer(s) for requests never "
                    f"asked (ignored), {read.conflicting} request(s) answered twice with "
                    "different content (asked again)"
                )
            got, cost = 0, 0.0
            for key, records in read.records.items():
                if key in outcome:
                    continue
                call = pending[key]
                # Every line is charged: a provider bills what it answered, twice if twice.
                cost += sum(budget.cost_of(r, call.sent, call.max_tokens) for r in records)
                record = read.answers[key]
                if record["status"] == "ok":
                    outcome[key] = accept(key, record)
                    got += 1
                else:
                    last_error[key] = record
                    report.failed_requests += 1
            if batch.ended == "failed":
                report.failed_requests += len(set(batch.keys) - set(read.records))
            budget.settle_fixed(batch.reserved, cost)  # what was held for it: now spent
            bar.update(got)
            bar.set_postfix_str(budget.progress())
        inflight = []
        if report.stopped:
            break
    bar.close()
    for key in pending:
        if key not in outcome:
            outcome[key] = last_error.get(
                key, {"status": "error", "error": "not answered by any batch"}
            )
            outcome[key] = {**outcome[key], "batch_unanswered": True}
    return outcome


def _resume(pending, endpoint, store, client, budget, report) -> list[_InFlight]:
    """The batches an earlier run submitted for calls still pending, picked up, not resubmitted.
    A batch an earlier run saw cancelled is not: rerunning is asking for its calls again."""
    where = endpoint.api_base or endpoint.model
    intents = store.records(INTENTS)
    ids = store.records(SUBMITTED)
    cancelled = store.records(CANCELLED)
    inflight = []
    for intent, rec in sorted(intents.items(), key=lambda kv: kv[1].get("created", 0)):
        if rec.get("endpoint") != where:
            continue
        keys = [k for k in rec["keys"] if k in pending]
        if not keys or any(k in b.keys for b in inflight for k in keys[:1]):
            continue
        if intent in cancelled:
            console.say(
                f"[batch] {cancelled[intent]['batch_id']} was cancelled at the provider: its "
                f"{len(keys)} unanswered calls are submitted anew"
            )
            continue
        batch_id = (ids.get(intent) or {}).get("batch_id")
        if batch_id is None:
            batch_id = client.find(intent)
            if batch_id is None:
                continue  # the interruption came before the provider had it: submitted anew
            store.put(SUBMITTED, intent, {"batch_id": batch_id})
        held = sum(pending[k].estimate(budget) for k in keys)
        if not budget.reserve(held):  # counted against the budget like a batch submitted now
            held = 0.0  # already paid for: read all the same, and nothing new is submitted
        inflight.append(_InFlight(intent, batch_id, keys, held, rec.get("round", 0)))
        report.resumed += 1
        console.say(f"[batch] resumed {batch_id} ({len(keys)} calls) submitted by an earlier run")
    return inflight


def _submit(
    todo, prompt_of, sent, model, endpoint, store, client, budget, opts, round_, report
) -> list[_InFlight]:
    where = endpoint.api_base or endpoint.model
    out = []
    lines = ((c, batch_files.line(c, prompt_of(c), model, sent)) for c in todo)  # made per chunk
    for chunk in batch_files.split(lines, opts.max_requests, opts.max_bytes):
        costs = [c.estimate(budget) for c, _ in chunk]
        # What fits under the budget goes; the rest waits for a rerun with a larger one.
        room, fit, total = budget.room(), 0, 0.0
        while fit < len(chunk) and total + costs[fit] <= room:
            total += costs[fit]
            fit += 1
        if fit == 0 or not budget.reserve(total):
            if fit < len(chunk) and not budget.stopped:
                budget.refuse(costs[fit])
            break
        if fit < len(chunk):
            budget.refuse(costs[fit])  # this part goes; nothing after it
            chunk, costs = chunk[:fit], costs[:fit]
        intent = uuid.uuid4().hex
        keys = [c.key for c, _ in chunk]
        store.put(
            INTENTS,
            intent,
            {"endpoint": where, "keys": keys, "round": round_, "created": time.time()},
        )
        batch_id = client.submit([b for _, b in chunk], intent, opts.completion_window)
        store.put(SUBMITTED, intent, {"batch_id": batch_id})
        out.append(_InFlight(intent, batch_id, keys, total, round_))
        report.submitted += 1
        report.requests += len(keys)
        console.say(f"[batch] submitted {batch_id}: {len(keys)} calls (round {round_ + 1})")
        if budget.stopped:
            break
    return out


def _wait(client: Client, inflight: list[_InFlight], opts: BatchOptions, report: Report, store):
    """Yield (batch, its output and error lines) for each batch as it ends, polling with
    backoff. A cancelled batch is read, recorded in the store, and ends the waiting: the user
    stopped spending (the batches still in flight are picked up by the next run)."""
    waiting = list(inflight)
    wait = opts.poll_s
    while waiting:
        still = []
        for batch in waiting:
            try:
                info = client.retrieve(batch.batch_id)
            except BatchError as err:  # a passing failure: asked again at the next poll
                console.say(f"[batch] {err}; polling again")
                still.append(batch)
                continue
            if info.status not in TERMINAL:
                still.append(batch)
                continue
            batch.ended = info.status
            if info.status == "expired":
                report.expired += 1
                console.say(
                    f"[batch] {batch.batch_id} expired: its unanswered calls are asked again"
                )
            lines: list[tuple[str, dict]] = []
            for file_id in (info.output_file_id, info.error_file_id):
                try:
                    if file_id:
                        lines += list(batch_files.results(client.content(file_id), client.where))
                except BatchError as err:  # e.g. a provider that deleted an old batch's files
                    console.say(f"[batch] {err}: its calls are asked again")
            if info.status == "failed":
                report.failed += 1
                errors = getattr(getattr(info, "errors", None), "data", None) or []
                message = "; ".join(str(getattr(e, "message", e)) for e in errors[:3])
                console.say(
                    f"[batch] {batch.batch_id} failed: {message or 'no reason given'}; its "
                    "unanswered calls are asked again"
                )
            if info.status == "cancelled":
                report.cancelled += 1
                store.put(CANCELLED, batch.intent, {"batch_id": batch.batch_id, "at": time.time()})
                report.stopped = (
                    f"batch {batch.batch_id} was cancelled at the provider {client.where} "
                    f"(by you?): stopped, nothing more is submitted. The {len(lines)} answers it "
                    "holds are kept; rerun to submit its other calls again"
                )
                console.say(f"[batch] {report.stopped}")
                yield batch, lines
                return
            yield batch, lines
        waiting = still
        if waiting:
            time.sleep(wait)
            wait = min(opts.max_poll_s, wait * 1.5)
