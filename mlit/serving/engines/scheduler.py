"""Continuous batching: one decode loop per model server that admits requests between steps.

`mlit.generation.decoding.generate` runs a static batch: every request of the batch waits for the longest one,
and a request that arrives a moment later waits for the whole batch. Under a server's load that
leaves batches small (requests come back a batch at a time, so the next ones arrive in waves) and
makes time to first token equal to the whole answer's time. Here a single thread steps every
model's running batch one token at a time; between steps it prefills whatever arrived, merges those
rows into the running batch's KV cache and drops finished rows, so a batch stays full while
answers of different lengths come and go, and each token is handed out as soon as it is sampled.

Each request keeps its own sampling settings and ``torch.Generator`` (see `mlit.generation.decoding`), so an
answer with a seed does not depend on which requests shared its batch (up to float rounding of
batched matmuls). It imports no Ray: the hf engine (`mlit.serving.engines.hf`) feeds it and tests can
drive it directly.

The cache merge needs plain ``DynamicCache`` layers (keys and values of shape batch x heads x
positions x dim), which is what Llama, Qwen2, Gemma and most decoder-only models use. For any other
cache the scheduler still works, but admits new requests only when the running batch is empty.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from mlit.generation import decoding

logger = logging.getLogger("ray.serve")

# An event handed to a request's sink: ("token", text piece), ("done", Completion) or
# ("error", message); a streamed request that asked for logprobs gets ("logprobs", entries) before
# each piece, the entries of the tokens sampled since the last piece. Sinks are called on the
# scheduler thread and must not block.
Sink = Callable[[tuple], None]


@dataclass(eq=False)
class Request:
    prompt_ids: list[int]
    sampling: decoding.Sampling
    sink: Sink
    stream: bool = False  # hand out text pieces as they are sampled
    group: str | None = None  # the HTTP request this is one sequence of (n > 1, several prompts)
    cancelled: bool = False  # set by the caller when its client went away
    out: list[int] = field(default_factory=list)
    logprobs: list[decoding.TokenLogprob] = field(default_factory=list)
    finish: str | None = None
    sent: str = ""  # text already handed out as pieces
    logprobs_sent: int = 0  # entries of ``logprobs`` already handed out with pieces
    generator: object = None


def _hand_out(req: Request, piece: str) -> None:
    """A text piece to its request's sink, after the logprob entries of the tokens sampled since
    the last piece where the request asks for them."""
    if req.sampling.top_logprobs is not None:
        req.sink(("logprobs", tuple(req.logprobs[req.logprobs_sent :])))
        req.logprobs_sent = len(req.logprobs)
    req.sink(("token", piece))


@dataclass(eq=False)
class _Batch:
    """One model's running rows and their KV cache."""

    model: object
    tokenizer: object
    rows: list[Request] = field(default_factory=list)
    waiting: deque = field(default_factory=deque)
    cache: object = None
    attention: object = None  # batch x positions, 0 on left padding
    position: object = None  # batch x 1, position id of each row's last token
    next_tokens: list[int] = field(default_factory=list)
    eos: set = field(default_factory=set)  # the model's end-of-sequence ids, read once

    def __post_init__(self) -> None:
        self.eos = decoding.eos_ids(self.model, self.tokenizer)


class Scheduler:
    """Runs every model's batch on one background thread. ``submit`` may be called from any thread."""

    def __init__(self, max_batch: int = 64):
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        self.max_batch = max_batch
        self._batches: dict[int, _Batch] = {}  # keyed by id(model): a reloaded model is a new batch
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self.steps: list[int] = []  # rows per decode step (the serving stats' "batch sizes")
        self.stepped = 0  # decode steps taken, ever
        self.stepped_rows = 0  # rows over those steps: a mean batch over any stretch of time
        self._thread = threading.Thread(target=self._loop, name="mlit-scheduler", daemon=True)
        self._thread.start()

    def submit(self, model, tokenizer, request: Request) -> None:
        with self._lock:
            batch = self._batches.get(id(model))
            if batch is None:
                batch = self._batches[id(model)] = _Batch(model, tokenizer)
            batch.waiting.append(request)
        self._wake.set()

    def busy(self) -> int:
        with self._lock:
            return sum(len(b.rows) + len(b.waiting) for b in self._batches.values())

    # ----------------------------------------------------------------------------------------
    # The loop

    def _loop(self) -> None:
        import torch

        torch.set_grad_enabled(False)  # this thread only ever runs inference
        lower_priority()
        while True:
            self._wake.wait()
            with self._lock:
                batches = [b for b in self._batches.values() if b.rows or b.waiting]
                if not batches:
                    self._wake.clear()
                    continue
            for batch in batches:  # every model takes one step in turn
                try:
                    self._admit(batch)
                    self._step(batch)
                except Exception:
                    # A bug or a broken model: fail this batch's requests, keep the thread alive.
                    logger.exception("the decode loop failed; its batch is dropped")
                    for req in batch.rows:
                        req.sink(("error", "internal error while generating"))
                    batch.rows, batch.cache = [], None
            with self._lock:  # forget models with nothing to do (the LRU may have dropped them)
                for key in [k for k, b in self._batches.items() if not b.rows and not b.waiting]:
                    del self._batches[key]

    def _admit(self, batch: _Batch) -> None:
        room = self.max_batch - len(batch.rows)
        if room <= 0 or (batch.rows and not _mergeable(batch.cache)):
            return
        with self._lock:
            pending = [req for req in batch.waiting if not req.cancelled]
            new = _fair_share(pending, room)
            taken = {id(req) for req in new}
            batch.waiting = deque(req for req in pending if id(req) not in taken)
        if not new:
            return
        cache, attention, position, first = _prefill(batch.model, batch.tokenizer, new)
        survivors = [i for i, req in enumerate(new) if not self._take(batch, req, first[i])]
        if len(survivors) < len(new):
            keep = _index(survivors, attention.device)
            cache.batch_select_indices(keep)
            attention, position = attention[keep], position[keep]
            new = [new[i] for i in survivors]
            first = [first[i] for i in survivors]
        if not new:
            return
        if not batch.rows:
            batch.cache, batch.attention, batch.position = cache, attention, position
        else:
            batch.cache, batch.attention = _merge(batch.cache, batch.attention, cache, attention)
            batch.position = _cat(batch.position, position)
        batch.rows += new
        batch.next_tokens += [token for token, _ in first]

    def _step(self, batch: _Batch) -> None:
        import torch

        if not batch.rows:
            return
        device = batch.attention.device
        rows = len(batch.rows)
        self.steps.append(rows)
        self.stepped += 1
        self.stepped_rows += rows
        del self.steps[:-1000]
        batch.attention = torch.cat([batch.attention, batch.attention.new_ones((rows, 1))], -1)
        batch.position = batch.position + 1
        out = batch.model(
            input_ids=torch.tensor(batch.next_tokens, device=device).unsqueeze(-1),
            attention_mask=batch.attention,
            position_ids=batch.position,
            cache=batch.cache,
            use_cache=True,
            logits_to_keep=1,
        )
        batch.cache = out.cache
        picked = _sample(out.logits[:, -1, :].float(), batch.rows, batch.tokenizer)
        keep = [i for i, req in enumerate(batch.rows) if not self._take(batch, req, picked[i])]
        batch.next_tokens = [picked[i][0] for i in keep]
        if len(keep) == rows:
            return
        batch.rows = [batch.rows[i] for i in keep]
        if not keep:
            batch.cache = batch.attention = batch.position = None
            return
        index = _index(keep, device)
        batch.cache.batch_select_indices(index)
        batch.attention, batch.position = batch.attention[index], batch.position[index]
        # Columns that are padding for every row left with the finished ones are dead weight.
        live = int(batch.attention.sum(0).ne(0).nonzero()[0])
        if live and _mergeable(batch.cache):
            batch.attention = batch.attention[:, live:]
            for layer in batch.cache.layers:
                layer.keys, layer.values = layer.keys[:, :, live:], layer.values[:, :, live:]

    def _take(self, batch: _Batch, req: Request, token_and_lp) -> bool:
        """Record a sampled token for a row; True when the row is done (and its sink told)."""
        token, lp = token_and_lp
        if req.cancelled:
            return True
        tok = batch.tokenizer
        req.out.append(token)
        if lp is not None:
            req.logprobs.append(lp)
        req.finish = decoding.finished(tok, req.out, token, batch.eos, req.sampling)
        if req.finish is None:
            if req.stream:
                piece = decoding.stream_piece(tok, req.out, req.sampling, req.sent)
                if piece:
                    req.sent += piece
                    _hand_out(req, piece)
            return False
        completion = decoding.completion(
            tok, len(req.prompt_ids), req.out, req.finish, req.sampling, req.logprobs
        )
        if (
            req.stream
            and completion.text.startswith(req.sent)
            and len(completion.text) > len(req.sent)
        ):
            _hand_out(req, completion.text[len(req.sent) :])
        req.sink(("done", completion))
        return True


def lower_priority() -> None:
    """Decode steps yield the CPU to the HTTP path (HAProxy, the gateway, this replica's event
    loop): on a machine whose cores the model fills, health checks, refusals and request intake
    would otherwise wait behind decode steps. Threads torch starts from here inherit it; a GPU
    replica loses nothing.

    The level is relative to the process's own: Ray starts its workers, and so HAProxy, the
    gateway and this engine, at nice 15, and an absolute 10 (what this was) put decode *above*
    the HTTP path wherever the process may lower its niceness (root), and at 15 beside it where
    it may not. Under Ray decode lands on 19; outside Ray (tests, a bare engine) on 10. On the
    demo model, 64 clients, 2 cores, 19 served 2,313 tokens/s against 2,160 at 10; on the ~28M
    model 383 and 402 against 468 and 434, as its threads were preempted more often. Under a
    burst past capacity, 10 above the gateway held /healthz up to 1-2 s (see serve_overload).
    The engine process's loads and prompt scoring call it too: a model loading at the gateway's
    level held a cold burst's /healthz as long as decode did."""
    with contextlib.suppress(AttributeError, OSError):  # Linux: PRIO_PROCESS + a thread id
        own = os.getpriority(os.PRIO_PROCESS, os.getpid())  # the main thread's: idempotent
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), min(own + DECODE_NICE_BELOW, 19))


DECODE_NICE_BELOW = 10  # levels below the hosting process; capped at 19, the lowest


def _fair_share(pending: list[Request], room: int) -> list[Request]:
    """Up to ``room`` waiting rows, one per HTTP request in turn (oldest first): a request of 16
    sequences takes its share of the free rows beside other users' requests, not all of them."""
    groups: dict = {}
    for req in pending:
        groups.setdefault(req.group if req.group is not None else id(req), deque()).append(req)
    queues = list(groups.values())
    picked: list[Request] = []
    while queues and len(picked) < room:
        for queue in queues[: room - len(picked)]:
            picked.append(queue.popleft())
        queues = [queue for queue in queues if queue]
    return picked


# --------------------------------------------------------------------------------------------
# Tensor work


def _index(rows: list[int], device):
    import torch

    return torch.tensor(rows, dtype=torch.long, device=device)


def _cat(a, b):
    import torch

    return torch.cat([a, b], 0)


def _mergeable(cache) -> bool:
    from transformers.cache_utils import DynamicLayer

    layers = getattr(cache, "layers", None)
    return bool(layers) and all(type(layer) is DynamicLayer for layer in layers)


def _prefill(model, tokenizer, requests: list[Request]):
    """Run the new requests' prompts as one left-padded batch; sample each one's first token."""
    import torch

    device = next(model.parameters()).device
    pad_id = (
        tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    )
    width = max(len(r.prompt_ids) for r in requests)
    ids = torch.full((len(requests), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(requests), width), dtype=torch.long)
    for i, req in enumerate(requests):
        ids[i, width - len(req.prompt_ids) :] = torch.tensor(req.prompt_ids)
        attention[i, width - len(req.prompt_ids) :] = 1
        req.generator = decoding.generator(req.sampling.seed, device)
    ids, attention = ids.to(device), attention.to(device)
    position = (attention.cumsum(-1) - 1).clamp(min=0)
    out = model(
        input_ids=ids,
        attention_mask=attention,
        position_ids=position,
        use_cache=True,
        logits_to_keep=1,
    )
    first = _sample(out.logits[:, -1, :].float(), requests, tokenizer)
    return out.cache, attention, position[:, -1:], first


def _sample(logits, requests: list[Request], tokenizer) -> list[tuple[int, object]]:
    """Each row's next token and, where asked, its logprob entry."""
    import torch

    params = [r.sampling for r in requests]
    temperature = torch.tensor([p.temperature for p in params], device=logits.device)
    top_p = torch.tensor([p.top_p for p in params], device=logits.device)
    picked = decoding.pick_batch(
        decoding.adjusted(logits, params, [r.out for r in requests]),
        params,
        [r.generator for r in requests],
        temperature,
        top_p,
    )
    if all(p.top_logprobs is None for p in params):
        return [(t, None) for t in picked]
    logp = torch.log_softmax(logits, dim=-1)
    return [
        (
            t,
            None
            if p.top_logprobs is None
            else decoding.token_logprob(tokenizer, logp[i], t, p.top_logprobs, r.out),
        )
        for i, (t, p, r) in enumerate(zip(picked, params, requests, strict=True))
    ]


def _merge(cache_a, attention_a, cache_b, attention_b):
    """Stack two batches' caches on the batch axis, left-padding the shorter one's positions."""
    import torch

    width = max(attention_a.shape[1], attention_b.shape[1])

    def pad(t, n):  # keys/values: batch x heads x positions x dim
        if n == 0:
            return t
        return torch.cat([t.new_zeros((*t.shape[:2], n, t.shape[3])), t], 2)

    pa, pb = width - attention_a.shape[1], width - attention_b.shape[1]
    for la, lb in zip(cache_a.layers, cache_b.layers, strict=True):
        la.keys = torch.cat([pad(la.keys, pa), pad(lb.keys, pb)], 0)
        la.values = torch.cat([pad(la.values, pa), pad(lb.values, pb)], 0)
    attention = torch.cat(
        [
            torch.cat([attention_a.new_zeros((attention_a.shape[0], pa)), attention_a], 1),
            torch.cat([attention_b.new_zeros((attention_b.shape[0], pb)), attention_b], 1),
        ],
        0,
    )
    return cache_a, attention
