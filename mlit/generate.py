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
import random
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass

import polars as pl

from mlit import console
from mlit.decoding import PAPER_SAMPLING
from mlit.store import Store, content_key

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


def _answer(resp) -> tuple[dict, dict] | str:
    """(body, first choice) of a chat completion, or what is wrong with it."""
    try:
        data = resp.json()
        choice = (data.get("choices") or [None])[0]
    except (ValueError, AttributeError):
        return "the reply is not a JSON chat completion"
    if not isinstance(choice, dict):
        return "the reply has no choices"
    if not isinstance((choice.get("message") or {}).get("content"), str):
        return "the reply has no content (null)"
    return data, choice


def _message(resp) -> str:
    """The error message of an OpenAI-style error body, else the body's start."""
    try:
        return str(resp.json()["error"]["message"])[:300]
    except Exception:
        return resp.text[:300]


async def _call(http, client: Client, task: Task, params: SamplingParams) -> dict:
    body = {
        "model": task.model,
        "messages": [{"role": "user", "content": task.instruction}],
        "temperature": params.temperature,
        "top_p": params.top_p,
        "max_tokens": params.max_tokens,
        "seed": request_seed(params, task),
    }
    headers = {"Authorization": f"Bearer {client.api_key}"} if client.api_key else {}
    last, status = "no attempt", None
    for attempt in range(client.retries + 1):
        start = time.monotonic()
        try:
            resp = await http.post(f"{client.v1}/chat/completions", json=body, headers=headers)
        except Exception as err:  # timeouts and connection failures are retryable
            last = f"{type(err).__name__}: {err}"
        else:
            if resp.status_code == 200:
                answer = _answer(resp)
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
            last, status = f"HTTP {resp.status_code}: {_message(resp)}", resp.status_code
            if resp.status_code not in RETRYABLE:
                break
        if attempt < client.retries:
            await asyncio.sleep(client.backoff_s * 2**attempt * (0.5 + random.random()))
    return {"status": "error", "error": last, "http_status": status}


async def _generate(
    tasks: Sequence[Task],
    params: SamplingParams,
    client: Client,
    store: Store,
    save: Callable[[pl.DataFrame], object] | None,
    progress: bool,
) -> pl.DataFrame:
    import httpx
    from tqdm import tqdm

    rows: list[dict] = []
    todo: list[tuple[Task, str]] = []
    for task in tasks:
        key = generation_key(task, params, client.engine)
        hit = store.get("generations", key)
        if hit is not None:
            rows.append({**_base(task, key), **hit, "status": "ok", "cached": True})
        else:
            todo.append((task, key))
    todo = in_lanes(todo, client.lanes)
    sem = asyncio.Semaphore(client.concurrency)
    bar = tqdm(
        file=console.bar_stream(),
        total=len(todo),
        desc="generating",
        unit="answer",
        disable=None if progress else True,
    )
    last_flush = time.monotonic()

    async with httpx.AsyncClient(timeout=client.timeout_s) as http:
        unloadable: dict[str, str] = {}  # model -> why the server cannot load it

        async def one(task: Task, key: str) -> None:
            nonlocal last_flush
            async with sem:
                if task.model in unloadable:  # asking again would fail the same way
                    result = {"status": "error", "error": unloadable[task.model]}
                else:
                    result = await _call(http, client, task, params)
            if result.get("http_status") == UNLOADABLE and task.model not in unloadable:
                unloadable[task.model] = result["error"]
                console.warn(f"[generate] {result['error']}; its other answers are not asked")
            if result["status"] == "ok":
                stored = {
                    k: result[k]
                    for k in (
                        "response",
                        "finish_reason",
                        "prompt_tokens",
                        "completion_tokens",
                        "latency_s",
                    )
                }
                store.put("generations", key, stored)
            rows.append({**_base(task, key), **result, "cached": False})
            bar.update(1)
            if save is not None and time.monotonic() - last_flush > 5:
                last_flush = time.monotonic()
                save(_frame(rows))

        await asyncio.gather(*(one(t, k) for t, k in todo))
    bar.close()
    frame = _frame(rows)
    if save is not None:
        save(frame)
    return frame


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
    return {**asdict(task), "generation_key": key}


def _frame(rows: list[dict]) -> pl.DataFrame:
    filled = [{c: r.get(c) for c in GENERATION_COLUMNS} for r in rows]
    frame = pl.DataFrame(filled, schema=GENERATION_COLUMNS)
    return frame.sort("model", "lang", "example_id")


def generate(
    tasks: Sequence[Task],
    client: Client,
    store: Store,
    params: SamplingParams = SamplingParams(),
    save: Callable[[pl.DataFrame], object] | None = None,
    progress: bool = True,
) -> pl.DataFrame:
    """Answer every task; returns the generations table, handed to ``save`` every few seconds
    while it grows (the run folder's copy) and once at the end."""
    return asyncio.run(_generate(tasks, params, client, store, save, progress))
