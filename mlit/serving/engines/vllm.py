"""vLLM behind the same model server: ``AsyncLLM`` engines, tokens streamed as vLLM samples.

A full model runs on an engine of its own. A LoRA model (exported with ``adapter/``, `mlit.training.trainer`)
runs as an adapter on one engine of its base, shared by every LoRA model of that base: vLLM's
multi-LoRA batches requests for different adapters together, and a sweep's LoRA models start one
engine instead of one each. Serve's multiplexing LRU holds the served models (so requests for a
model go to the replica that has it); an engine stops when the last model on it is unloaded.

The model server (`mlit.serving.model_server`) talks to it through `mlit.serving.engines.Engine`,
as to the ``hf`` engine. Clients see no difference: the requests are prepared by the same code
(templating, token ids, context checks, 400s for what one request got wrong), and the answers come
back as the same events, so the gateway's routes, auth, errors, streaming, logprobs and seeds are
unchanged.

Why vLLM's async engine inside our deployment rather than ``ray.serve.llm``: ``LLMServer`` brings
its own ingress and OpenAI router, so our auth, limits and error shapes would not cover it; it
places engines with GPU bundles by default and did not start on CPU here; and it serves one model
per deployment, where a sweep serves many models through one LRU per replica.

vLLM comes from its own environment (`make vllm-env`: ``.venv-vllm``, ``transformers<5.20``), so
the replica runs that interpreter (`mlit.planning.engine_choice`); nothing here is imported by
the main install.
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from mlit.generation import decoding
from mlit.serving.engines import Loaded
from mlit.store import model_refs

logger = logging.getLogger("ray.serve")


LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)  # what vLLM's max_lora_rank takes


@dataclass(frozen=True)
class Lora:
    """A LoRA model served as an adapter on its base's engine (vLLM's multi-LoRA): every LoRA
    model of a sweep shares one engine instead of starting one each."""

    base: str  # the base model vLLM loads: a local directory, an s3:// / gs:// URI or a hub id
    rank: int
    slot: int  # vLLM's integer id of the adapter, unique within the app


def lora_targets(dirs: dict[str, str]) -> dict[str, Lora]:
    """The served models (name -> local directory) that run as adapters: those exported with
    ``adapter/`` beside their merged weights (`mlit.training.trainer`, ``--lora-rank``) whose base can be
    found. Others run as models of their own, from their merged weights."""
    out: dict[str, Lora] = {}
    for name, here in sorted(dirs.items()):
        meta = Path(here) / "mlit_model.json"
        adapter = Path(here) / "adapter" / "adapter_config.json"
        if not (meta.is_file() and adapter.is_file()):
            continue
        base = json.loads(meta.read_text()).get("base_model") or ""
        if not model_refs.available(base):
            logger.warning("%s: its base %r is not here; serving its merged weights", name, base)
            continue
        rank = int(json.loads(adapter.read_text())["r"])
        out[name] = Lora(base, rank, len(out) + 1)
    # The base itself, when it is served too (a baseline), runs on that engine without an adapter.
    bases = {str(Path(x.base).resolve()): x.base for x in out.values() if Path(x.base).is_dir()}
    for name, here in dirs.items():
        resolved = str(Path(here).resolve())
        if name not in out and resolved in bases:
            out[name] = Lora(bases[resolved], 0, 0)
    return out


class Engines:
    """The vLLM engines of one replica, shared by the models that run on them and stopped when
    the last of those is unloaded. A model of its own has its own; LoRA models share their
    base's. As many engines fit at once as can be up together (the LRU's size, or fewer distinct
    engines): on a GPU each takes its part of vLLM's usual 90%."""

    def __init__(self, models: list[str], max_models: int, loras: dict[str, Lora]):
        self.loras = loras
        self.slots = max(1, min(max_models, len({self._key(n) for n in models})))
        self._engines: dict[str, list] = {}  # key -> [(engine, vocab size, context), users]
        self._lock = threading.Lock()
        self.starts: Counter[str] = Counter()

    def acquire(self, name: str, model_dir: str):
        """(engine, vocabulary size, context length, LoRA request or None) for a served model,
        starting its engine if it has none. Blocking: call it off the event loop."""
        lora = self.loras.get(name)
        if lora and not model_refs.available(
            lora.base
        ):  # a base on the driver's disk, not on this node
            logger.warning("%s: its base %r is not on this node; merged weights", name, lora.base)
            lora = None
        key = self._key(name, lora)
        with self._lock:
            if key not in self._engines:
                from mlit.store.downloads import local_copy

                if lora:
                    mine = [x for x in self.loras.values() if x.base == lora.base]
                    # A URI is copied here once; a directory or a hub id is vLLM's to load.
                    entry = _start(str(local_copy(lora.base)), self.slots, mine)
                else:
                    entry = _start(model_dir, self.slots, [])
                self._engines[key] = [entry, 0]
                self.starts[key] += 1
            self._engines[key][1] += 1
            engine, vocab, context = self._engines[key][0]
        request = None
        if lora and lora.slot:
            from vllm.lora.request import LoRARequest

            request = LoRARequest(name, lora.slot, str(Path(model_dir) / "adapter"))
        return engine, vocab, context, request, lambda: self._release(key)

    def _key(self, name: str, lora: Lora | None = None) -> str:
        """The engine a model runs on: its base's for an adapter, else its own."""
        lora = lora if lora is not None else self.loras.get(name)
        return f"base:{lora.base}" if lora else f"model:{name}"

    def _release(self, key: str) -> None:
        with self._lock:
            entry = self._engines.get(key)
            if entry is None:
                return
            entry[1] -= 1
            if entry[1] <= 0:
                del self._engines[key]
                entry[0][0].shutdown()


class VLLMEngine:
    """`mlit.serving.engines.Engine` on vLLM: each served model holds its engine (its own, or its
    base's for an adapter) for as long as Serve's LRU keeps it."""

    name = "vllm"

    def __init__(self, models: list[str], max_models: int, loras: dict[str, Lora]):
        self.engines = Engines(models, max_models, loras)

    def load(self, name: str, model_dir: str) -> Loaded:
        from transformers import AutoTokenizer

        # The model's own tokenizer prepares its requests (an adapter's is its base's vocabulary).
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        engine, vocab, context, lora, release = self.engines.acquire(name, model_dir)
        return Loaded(self, name, tokenizer, vocab, context, (engine, lora, release))

    def unload(self, loaded: Loaded) -> None:
        loaded.handle[2]()

    def stats(self) -> dict:
        # vLLM schedules its own batches; engine starts say more.
        return {"engine": self.name, "batch_sizes": [], "starts": dict(self.engines.starts)}

    def check_health(self) -> None:
        """vLLM's engines fail their own requests when they die, and are started again on use."""

    async def prompt_logprobs(self, loaded: Loaded, ids: list[int], k: int) -> list:
        """The prompt's log-likelihoods: one sampled token with vLLM's prompt logprobs."""
        positions = None
        params = _params(max_tokens=1, temperature=0.0, logprobs=None, prompt_logprobs=k)
        async for out in self._generate(loaded, ids, params):
            positions = positions or out.prompt_logprobs  # in the first output (deltas)
        if positions is None:
            raise RuntimeError("vLLM returned no prompt logprobs")
        tok = loaded.tokenizer
        return [
            decoding.TokenLogprob(decoding.token_text(tok, [], t), None)
            if position is None  # the first prompt token has no context
            else _entry(t, position, k, decoding.token_text(tok, ids[max(0, i - 8) : i], t))
            for i, (t, position) in enumerate(zip(ids, positions, strict=False))
        ]

    async def events(self, loaded: Loaded, job, stream: bool):
        """Text pieces as vLLM samples them when streaming, then the whole answer."""
        sp = job.params
        k = sp["top_logprobs"]
        params = _params(
            max_tokens=sp["max_new_tokens"],
            temperature=sp["temperature"],
            top_p=sp["top_p"],
            seed=sp["seed"],
            stop=list(sp["stop"]) or None,
            ignore_eos=sp["ignore_eos"],
            logprobs=k,
            frequency_penalty=sp["frequency_penalty"],
            presence_penalty=sp["presence_penalty"],
            logit_bias=dict(sp["logit_bias"]) or None,
        )
        text, ids, lps, finish = "", [], [], "length"
        streamed = 0  # logprob entries already handed out with pieces
        async for out in self._generate(loaded, job.ids, params):
            choice = out.outputs[0]
            text += choice.text
            if k is not None and choice.logprobs:
                for t, pos in zip(choice.token_ids, choice.logprobs, strict=False):
                    # The hf engine's token strings: what each token adds to the answer's text.
                    lps.append(_entry(t, pos, k, decoding.token_text(loaded.tokenizer, ids, t)))
                    ids.append(t)
            else:
                ids += choice.token_ids
            if stream and choice.text:
                if k is not None:
                    yield "logprobs", tuple(lps[streamed:])
                    streamed = len(lps)
                yield "token", choice.text
            if choice.finish_reason:
                finish = "stop" if choice.finish_reason == "stop" else "length"
        logprobs = None if k is None else tuple(lps)
        yield "done", decoding.Completion(text, finish, len(job.ids), len(ids), logprobs)

    def _generate(self, loaded: Loaded, ids: list[int], params):
        engine, lora, _ = loaded.handle
        request = {"prompt_token_ids": ids}
        return engine.generate(request, params, uuid.uuid4().hex, lora_request=lora)


def _params(**values):
    from vllm import SamplingParams
    from vllm.sampling_params import RequestOutputKind

    return SamplingParams(**values, output_kind=RequestOutputKind.DELTA)


def _start(path: str, engines: int, loras: list[Lora]):
    """One engine. On a GPU the engines of a replica share its memory: each takes its part of
    vLLM's usual 90% (two engines at 90% each would not fit)."""
    import torch
    from vllm import AsyncEngineArgs
    from vllm.v1.engine.async_llm import AsyncLLM

    lora: dict = {}
    loras = [x for x in loras if x.slot]  # the base itself needs no adapter slot
    if loras:
        top = max(x.rank for x in loras)
        lora = {
            "enable_lora": True,
            "max_lora_rank": next(r for r in LORA_RANKS if r >= top),
            # Adapters in one batch; the rest wait in host memory, all of them.
            "max_loras": min(8, len(loras)),
            "max_cpu_loras": max(8, len(loras)),
        }
    args = AsyncEngineArgs(
        model=path,
        dtype="bfloat16" if torch.cuda.is_available() else "float32",
        disable_log_stats=True,
        max_logprobs=20,
        enforce_eager=not torch.cuda.is_available(),  # no graphs to capture on CPU
        gpu_memory_utilization=0.9 / engines,
        **lora,
    )
    engine = AsyncLLM.from_engine_args(args)
    cfg = engine.model_config
    return engine, cfg.get_vocab_size(), cfg.max_model_len


def _entry(token_id: int, position: dict, k: int, text: str) -> decoding.TokenLogprob:
    """vLLM's logprobs of one position as ours: the chosen token (as ``text``, what it adds to
    the text, so that an answer's tokens concatenate to it as on the hf engine) and the top
    ``k``."""
    chosen = position[token_id]
    top = sorted(position.values(), key=lambda lp: lp.rank or 0)[:k]
    return decoding.TokenLogprob(
        text,
        chosen.logprob,
        tuple((lp.decoded_token or "", lp.logprob) for lp in top),
    )
