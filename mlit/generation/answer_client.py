"""Client side of generation: every model answers every eval instruction, through the HTTP API.

Requests go to any OpenAI-compatible endpoint (our Serve app by default) with bounded concurrency,
a timeout per request and retries with backoff on retryable failures (429, 5xx, timeouts). Each
answer is stored under hash(model key, prompt, sampling, seed), so a rerun sends no request for an
answer it already has. Failures are written to ``generations.parquet`` as errors, never stored as
answers, and are tried again on the next run.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass

import polars as pl

from mlit.generation.decoding import PAPER_SAMPLING
from mlit.plumbing import console
from mlit.providers import openai_http
from mlit.providers import retries as retries_rule
from mlit.store.artifacts import Store, content_key

RETRYABLE = {408, 409, 425, 429, 500, 502, 503, 504}
UNLOADABLE = 424  # the server cannot load the model (damaged, missing): no request will succeed


@dataclass(frozen=True)
class SamplingParams:
    """The paper's nucleus sampling by default: p=0.9, T=0.7, up to 512 new tokens."""

    temperature: float = PAPER_SAMPLING.temperature
    top_p: float = PAPER_SAMPLING.top_p
    max_tokens: int = PAPER_SAMPLING.max_new_tokens
    seed: int = 0


@dataclass(frozen=True)
class Task:
    model: str  # the served name
    model_key: str  # what identifies the weights (store key); the cache key uses this
    example_id: str
    lang: str
    instruction: str


@dataclass(frozen=True)
class Client:
    base_url: str  # e.g. http://127.0.0.1:8000 (with or without /v1)
    api_key: str | None = None
    concurrency: int = 8
    timeout_s: float = 120.0
    retries: int = 4
    backoff_s: float = 0.5
    patience_s: float = retries_rule.PATIENCE_S  # retry passing failures at least this long
    engine: str = "hf"  # the server's engine: answers of another engine are other answers
    # Served name -> shard of the Serve app (`mlit.serving.app.ServeConfig.shard_of`); None: one shard.
    lanes: Mapping[str, int] | None = None

    @property
    def v1(self) -> str:
        url = self.base_url.rstrip("/")
        return url if url.endswith("/v1") else f"{url}/v1"


GENERATION_COLUMNS = {
    "model": pl.String,
    "model_key": pl.String,
    "example_id": pl.String,
    "lang": pl.String,
    "instruction": pl.String,
    "response": pl.String,
    "status": pl.String,  # ok | error
    "error": pl.String,
    "finish_reason": pl.String,
    "prompt_tokens": pl.Int64,
    "completion_tokens": pl.Int64,
    "latency_s": pl.Float64,
    "cached": pl.Boolean,
    "generation_key": pl.String,
}


def request_seed(params: SamplingParams, task: Task) -> int:
    """A per-answer seed: reproducible, and different for every (model, example, language)."""
    blob = f"{params.seed}:{task.model_key}:{task.example_id}:{task.lang}".encode()
    return int(hashlib.sha256(blob).hexdigest()[:8], 16)


def generation_key(task: Task, params: SamplingParams, engine: str = "hf") -> str:
    messages = [{"role": "user", "content": task.instruction}]
    sampling = {**asdict(params), "seed": request_seed(params, task)}
    # The same seed samples other tokens in another engine; hf keys stay as they always were.
    extra = () if engine == "hf" else (engine,)
    return content_key("generation", task.model_key, messages, sampling, *extra)


def generation_keys(tasks: Sequence[Task], params: SamplingParams, engine: str = "hf") -> list:
    """`generation_key` of every task, the same strings built about 6x faster: the JSON that
    `content_key` hashes is one template with three holes (model key, instruction, seed), so a
    rerun of the paper's 670k answers finds its keys in seconds."""
    extra = () if engine == "hf" else (engine,)
    holes = ["\x01model", [{"role": "user", "content": "\x01text"}], {**asdict(params), "seed": -7}]
    blob = json.dumps(
        ["generation", *holes, *extra], sort_keys=True, ensure_ascii=False, separators=(",", ":")
    )
    head, rest = blob.split(json.dumps("\x01model"), 1)
    middle, rest = rest.split(json.dumps("\x01text", ensure_ascii=False), 1)
    middle2, tail = rest.split(":-7", 1)
    sha = hashlib.sha256
    return [
        sha(
            f"{head}{json.dumps(t.model_key, ensure_ascii=False)}{middle}"
            f"{json.dumps(t.instruction, ensure_ascii=False)}{middle2}:{request_seed(params, t)}"
            f"{tail}".encode()
        ).hexdigest()[:24]
        for t in tasks
    ]


def _answer(text: str) -> tuple[dict, dict] | str:
    """(body, first choice) of a chat completion, or what is wrong with it."""
    try:
        data = json.loads(text)
        choice = (data.get("choices") or [None])[0]
    except (ValueError, AttributeError):
        return "the reply is not a JSON chat completion"
    if not isinstance(choice, dict):
        return "the reply has no choices"
    if not isinstance((choice.get("message") or {}).get("content"), str):
        return "the reply has no content (null)"
    return data, choice


def _message(text: str) -> str:
    """The error message of an OpenAI-style error body, else the body's start."""
    try:
        return str(json.loads(text)["error"]["message"])[:300]
    except Exception:
        return text[:300]


def request_body(task: Task, params: SamplingParams) -> dict:
    """The chat completion request of one answer: the one place its sampling is set."""
    return {
        "model": task.model,
        "messages": [{"role": "user", "content": task.instruction}],
        "temperature": params.temperature,
        "top_p": params.top_p,
        "max_tokens": params.max_tokens,
        "seed": request_seed(params, task),
    }


async def _call(http, client: Client, task: Task, params: SamplingParams, sent: Counter) -> dict:
    body = request_body(task, params)
    sent[openai_http.decoding_of(body)] += 1  # as it was sent (`run.json`'s protocol)
    headers = {"Content-Type": "application/json"}
    if client.api_key:
        headers["Authorization"] = f"Bearer {client.api_key}"
    payload, url = json.dumps(body).encode(), f"{client.v1}/chat/completions"
    last, status, first = "no attempt", None, time.monotonic()
    for attempt in itertools.count():
        start = time.monotonic()
        try:
            async with http.post(url, data=payload, headers=headers) as r:
                code, text = r.status, (await r.read()).decode("utf-8", "replace")
        except Exception as err:  # timeouts and connection failures are retryable
            last = f"{type(err).__name__}: {err}".rstrip(": ")
        else:
            if code == 200:
                answer = _answer(text)
                if isinstance(answer, str):  # a 200 that holds no answer is an error, not a result
                    return {"status": "error", "error": f"{answer} (model {task.model})"}
                data, choice = answer
                return {
                    "status": "ok",
                    "response": choice["message"]["content"],
                    "finish_reason": choice.get("finish_reason"),
                    "prompt_tokens": data.get("usage", {}).get("prompt_tokens"),
                    "completion_tokens": data.get("usage", {}).get("completion_tokens"),
                    "latency_s": round(time.monotonic() - start, 4),
                }
            last, status = f"HTTP {code}: {_message(text)}", code
            if code not in RETRYABLE:
                break
        wait = retries_rule.pause(
            attempt, time.monotonic() - first, client.retries, client.backoff_s, client.patience_s
        )
        if wait is None:
            break
        await asyncio.sleep(wait)
    return {"status": "error", "error": last, "http_status": status}


STORED = ("response", "finish_reason", "prompt_tokens", "completion_tokens", "latency_s")


async def _generate(
    todo: list[tuple[Task, str]],
    params: SamplingParams,
    client: Client,
    writer,
    progress: bool,
    rows: list[tuple],
    sent: Counter,
) -> None:
    """Ask the served models for every (task, key) of ``todo``; each answer goes to ``writer``
    (never waiting on the store), each result is appended to ``rows``; ``sent`` counts the
    requests by their decoding (`openai_http.decoding_of`)."""
    import aiohttp
    from tqdm import tqdm

    bar = tqdm(
        file=console.bar_stream(),
        total=len(todo),
        desc="generating",
        unit="answer",
        disable=None if progress else True,
    )
    # aiohttp, not httpx: on 2 cores httpx's pool sends ~200 requests/s at 64 in flight,
    # aiohttp ~2,100 (benchmarks/results/store_scale.json), and the client must not be the limit.
    connector = aiohttp.TCPConnector(limit=client.concurrency, force_close=False)
    timeout = aiohttp.ClientTimeout(total=client.timeout_s)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
        unloadable: dict[str, str] = {}  # model -> why the server cannot load it

        async def one(task: Task, key: str) -> None:
            if task.model in unloadable:  # asking again would fail the same way
                result = {"status": "error", "error": unloadable[task.model]}
            else:
                result = await _call(http, client, task, params, sent)
            if result.get("http_status") == UNLOADABLE and task.model not in unloadable:
                unloadable[task.model] = result["error"]
                console.warn(f"[generate] {result['error']}; its other answers are not asked")
            if result["status"] == "ok":
                writer.put(key, {k: result[k] for k in STORED})
            # A tuple, not a dict: at 1M answers the rows are most of the phase's memory.
            row = {**_base(task, key), **result, "cached": False}
            rows.append(tuple(row.get(c) for c in GENERATION_COLUMNS))
            bar.update(1)

        await workers(client.concurrency, todo, one)
    bar.close()


async def workers(n: int, items, work) -> None:
    """``work(*item)`` for every item, ``n`` at a time, in order: n workers draw from one
    iterator, so only n coroutines exist at once (at 1M answers, one task per answer created up
    front held over a gigabyte)."""
    queue = iter(items)

    async def worker() -> None:
        for item in queue:
            await work(*item)

    await asyncio.gather(*(worker() for _ in range(n)))


def in_lanes(todo: list[tuple[Task, str]], lanes: Mapping[str, int] | None) -> list:
    """The order requests are sent in: one model after another in each shard of the Serve app,
    the shards' current models in turn. The requests in flight then share one model per shard, so
    each shard's batches fill with one model (instead of a small batch per model), and every
    shard (every GPU, in a sweep on GPUs) answers at the same time."""
    lanes = lanes or {}
    by_model: dict[str, list] = defaultdict(list)
    for item in sorted(todo, key=lambda tk: tk[0].model):
        by_model[item[0].model].append(item)
    rank: dict[str, int] = {}
    seen: defaultdict[int, int] = defaultdict(int)
    for model in by_model:  # sorted: a model's rank is its place in its shard's queue
        lane = lanes.get(model, 0)
        rank[model], seen[lane] = seen[lane], seen[lane] + 1
    order = [
        ((rank[model], i, lanes.get(model, 0)), item)
        for model, items in by_model.items()
        for i, item in enumerate(items)
    ]
    return [item for _, item in sorted(order, key=lambda o: o[0])]


def _base(task: Task, key: str) -> dict:
    # Not dataclasses.asdict: its deep copy was 8% of the phase at 2,000 answers/s.
    return {
        "model": task.model,
        "model_key": task.model_key,
        "example_id": task.example_id,
        "lang": task.lang,
        "instruction": task.instruction,
        "generation_key": key,
    }


def _frame(rows: list[tuple]) -> pl.DataFrame:
    # from_dicts with a schema: missing fields are nulls, others left out (no copy per row).
    return pl.DataFrame(rows, schema=GENERATION_COLUMNS, orient="row")


def run_loop(coroutine):
    """``asyncio.run`` on uvloop where it is installed (with Ray Serve): the client's share of
    each request is about a third less, and at paper scale the client must not be the limit."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coroutine)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coroutine)


STORED_SCHEMA = {c: GENERATION_COLUMNS[c] for c in STORED}


def stored_answers(tasks: Sequence[Task], params: SamplingParams, store: Store, engine="hf"):
    """(keys of ``tasks``, frame of their stored answers: generation_key and the stored fields),
    from one bulk read of the store, not one read per task."""
    keys = generation_keys(tasks, params, engine)
    hits = store.record_frame("generations", keys, STORED_SCHEMA)
    return keys, hits.rename({"key": "generation_key"})


def task_frame(tasks: Sequence[Task], keys: Sequence[str]) -> pl.DataFrame:
    columns = ("model", "model_key", "example_id", "lang", "instruction")
    data = {c: [getattr(t, c) for t in tasks] for c in columns}
    return pl.DataFrame({**data, "generation_key": keys}, schema_overrides=GENERATION_COLUMNS)


def generate(
    tasks: Sequence[Task],
    client: Client,
    store: Store,
    params: SamplingParams = SamplingParams(),
    save: Callable[[pl.DataFrame], object] | None = None,
    progress: bool = True,
    stored: tuple[list[str], pl.DataFrame] | None = None,
    sent: Counter | None = None,
) -> pl.DataFrame:
    """Answer every task: from the store, or asked of the served models. Returns the generations
    table, handed to ``save`` once at the end (also after Ctrl-C or an error: what was answered
    is in the table and in the store). ``stored`` is `stored_answers` when the caller has it;
    ``sent`` counts the requests sent by their decoding (`openai_http.decoding_of`)."""
    keys, hits = stored or stored_answers(tasks, params, store, client.engine)
    planned = task_frame(tasks, keys).with_row_index("_task")
    missing = planned.join(hits, on="generation_key", how="anti")["_task"].to_list()
    todo = [(tasks[i], keys[i]) for i in missing]
    cached = (
        planned.join(hits, on="generation_key", how="inner")
        .drop("_task")
        .with_columns(status=pl.lit("ok"), cached=pl.lit(True))
    )
    del planned, hits
    rows: list[tuple] = []
    try:
        with store.writer("generations") as writer:
            run_loop(
                _generate(
                    in_lanes(todo, client.lanes),
                    params,
                    client,
                    writer,
                    progress,
                    rows,
                    Counter() if sent is None else sent,
                )
            )
    finally:
        # A rerun with everything stored copies nothing: no concatenation without new rows.
        if rows:
            frame = pl.concat([cached, _frame(rows)], how="diagonal_relaxed")
        else:
            absent = [c for c in GENERATION_COLUMNS if c not in cached.columns]
            frame = cached.with_columns(
                pl.lit(None, GENERATION_COLUMNS[c]).alias(c) for c in absent
            )
        frame = frame.select(list(GENERATION_COLUMNS)).sort("model", "lang", "example_id")
        if save is not None and (frame.height or not todo):
            save(frame)
    return frame
