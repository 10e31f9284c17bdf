"""vLLM behind the same model server: ``AsyncLLM`` engines, tokens streamed as vLLM samples.

A full model runs on an engine of its own. A LoRA model (exported with ``adapter/``, `mlit.train`)
runs as an adapter on one engine of its base, shared by every LoRA model of that base: vLLM's
multi-LoRA batches requests for different adapters together, and a sweep's LoRA models start one
engine instead of one each. Serve's multiplexing LRU holds the served models (so requests for a
model go to the replica that has it); an engine stops when the last model on it is unloaded.

`mlit.model_server.ModelServer` runs this instead of `mlit.scheduler` when it is built with
``engine="vllm"``. Clients see no difference: the requests are prepared by the same code (templating,
token ids, context checks, 400s for what one request got wrong), and the answers come back as the
same events, so the gateway's routes, auth, errors, streaming, logprobs and seeds are unchanged.

Why vLLM's async engine inside our deployment rather than ``ray.serve.llm``: ``LLMServer`` brings
its own ingress and OpenAI router, so our auth, limits and error shapes would not cover it; it
places engines with GPU bundles by default and did not start on CPU here; and it serves one model
per deployment, where a sweep serves many models through one LRU per replica.

vLLM comes from its own environment (`make vllm-env`: ``.venv-vllm``, ``transformers<5.20``), so
the replica runs that interpreter (`mlit.serving.vllm_runtime_env`); nothing here is imported by
the main install.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import threading
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

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
    ``adapter/`` beside their merged weights (`mlit.train`, ``--lora-rank``) whose base can be
    found. Others run as models of their own, from their merged weights."""
    out: dict[str, Lora] = {}
    for name, here in sorted(dirs.items()):
        meta = Path(here) / "mlit_model.json"
        adapter = Path(here) / "adapter" / "adapter_config.json"
        if not (meta.is_file() and adapter.is_file()):
            continue
        base = json.loads(meta.read_text()).get("base_model") or ""
        if not _reachable(base):
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


def _reachable(base: str) -> bool:
    """A base vLLM can load here: a URI, a hub id, or a directory that exists on this node."""
    local_looking = base.startswith(("/", ".", "~")) or base.count("/") > 1
    return bool(base) and ("://" in base or not local_looking or Path(base).is_dir())


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
        if lora and not _reachable(lora.base):  # a base on the driver's disk, not on this node
            logger.warning("%s: its base %r is not on this node; merged weights", name, lora.base)
            lora = None
        key = self._key(name, lora)
        with self._lock:
            if key not in self._engines:
                from mlit.store import local_copy

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


class Loaded:
    """One served model on a replica, as Serve's multiplexing LRU holds it: unloading it (Serve
    calls ``__del__``) lets go of its engine."""

    def __init__(self, tokenizer, acquired):
        self.tokenizer = tokenizer
        self.engine, self.vocab, self.context, self.lora, self._release = acquired
        self._done = False

    def __del__(self):
        if not self._done:  # Serve calls it, and the garbage collector may again
            self._done = True
            self._release()


def load(engines: Engines, name: str, model_dir: str) -> Loaded:
    from transformers import AutoTokenizer

    # The model's own tokenizer prepares its requests (an adapter's is its base's vocabulary).
    return Loaded(AutoTokenizer.from_pretrained(model_dir), engines.acquire(name, model_dir))


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


async def events(loaded: Loaded, job, stream: bool):
    """The model server's events for one request (`mlit.jobs.Job`): text pieces as vLLM samples
    them when streaming, then the whole answer in the shape `mlit.jobs.completion_dict` gives."""
    from vllm import SamplingParams
    from vllm.sampling_params import RequestOutputKind

    sp = job.params
    k = sp["top_logprobs"]
    params = SamplingParams(
        max_tokens=max(1, sp["max_new_tokens"]),
        temperature=sp["temperature"],
        top_p=sp["top_p"],
        seed=sp["seed"],
        stop=list(sp["stop"]) or None,
        ignore_eos=sp["ignore_eos"],
        logprobs=k,
        prompt_logprobs=k if job.echo and k is not None else None,
        output_kind=RequestOutputKind.DELTA,
    )
    text, ids, lps, prompt_lps, finish = "", [], [], None, "length"
    request = {"prompt_token_ids": job.ids}
    rid = uuid.uuid4().hex
    async for out in loaded.engine.generate(request, params, rid, lora_request=loaded.lora):
        if prompt_lps is None and out.prompt_logprobs is not None:
            prompt_lps = _prompt_logprobs(loaded.tokenizer, job.ids, out.prompt_logprobs, k)
        choice = out.outputs[0]
        if sp["max_new_tokens"] == 0:  # only the echoed prompt was asked for
            break
        text += choice.text
        ids += choice.token_ids
        if k is not None and choice.logprobs:
            lps += [
                _entry(t, pos, k) for t, pos in zip(choice.token_ids, choice.logprobs, strict=False)
            ]
        if stream and choice.text:
            yield {"delta": choice.text}
        if choice.finish_reason:
            finish = "stop" if choice.finish_reason == "stop" else "length"
    logprobs = None if k is None else [*(prompt_lps or []), *lps]
    yield {
        "ok": {
            "text": job.echo_text + text,
            "finish_reason": finish,
            "prompt_tokens": len(job.ids),
            "completion_tokens": len(ids),
            "logprobs": logprobs,
        }
    }


def _entry(token_id: int, position: dict, k: int) -> list:
    """[token, logprob, [[alternative, logprob], ...]] as `mlit.serving` sends them."""
    chosen = position[token_id]
    top = sorted(position.values(), key=lambda lp: lp.rank or 0)[:k]
    return [
        chosen.decoded_token or "",
        chosen.logprob,
        [[lp.decoded_token or "", lp.logprob] for lp in top],
    ]


def _prompt_logprobs(tok, ids: list[int], positions, k: int) -> list:
    from mlit.engine import token_text

    out = []
    for token_id, position in zip(ids, positions, strict=False):
        if position is None:  # the first prompt token has no context
            out.append([token_text(tok, [], token_id), None, []])
        else:
            out.append(_entry(token_id, position, k))
    return out


# --------------------------------------------------------------------------------------------
# Choosing the engine and the interpreter that has vLLM

ENGINES = ("hf", "vllm", "auto")
CHECKOUT_VENV = Path(__file__).resolve().parent.parent / ".venv-vllm" / "bin" / "python"


def python() -> str | None:
    """The interpreter whose environment has vLLM: None for this one; else ``$MLIT_VLLM_PYTHON``
    or the checkout's ``.venv-vllm`` (`make vllm-env`). Raises ValueError when there is none."""
    if importlib.util.find_spec("vllm") is not None:
        return None
    for candidate in (os.environ.get("MLIT_VLLM_PYTHON"), str(CHECKOUT_VENV)):
        if candidate and Path(candidate).is_file():
            return candidate
    raise ValueError(
        "engine 'vllm' needs vLLM: run `make vllm-env` (its own environment, .venv-vllm), or "
        "set MLIT_VLLM_PYTHON to a Python that has vLLM and this Ray version"
    )


CPU_HEAD_SIZES = (32, 64, 80, 96, 112, 128, 160, 192, 224, 256, 512)  # vLLM 0.32's CPU attention


def check_cpu_model(name: str, path: str) -> None:
    """vLLM on CPU runs only some attention head sizes: say so before an engine dies on it."""
    config = Path(path) / "config.json"
    if not config.is_file():
        return
    cfg = json.loads(config.read_text())
    heads = cfg.get("num_attention_heads")
    size = cfg.get("head_dim") or (cfg.get("hidden_size", 0) // heads if heads else None)
    if size and size not in CPU_HEAD_SIZES:
        raise ValueError(
            f"model {name!r} has attention heads of size {size}, which vLLM's CPU backend does "
            f"not run (it runs {', '.join(map(str, CPU_HEAD_SIZES))}): serve it with --engine hf, "
            "or on a GPU"
        )


def resolve(kind: str, gpus: float) -> str:
    """``auto`` is vLLM where it is installed and the replica has a GPU, else our engine."""
    if kind not in ENGINES:
        raise ValueError(f"unknown engine {kind!r}: use one of {', '.join(ENGINES)}")
    if kind != "auto":
        if kind == "vllm":
            python()  # fail here, before anything starts, when vLLM is nowhere
        return kind
    try:
        python()
    except ValueError:
        return "hf"
    return "vllm" if gpus > 0 else "hf"


def runtime_env() -> dict:
    """What a vLLM replica runs with: vLLM's interpreter, this checkout on its path, a small CPU
    KV cache unless told otherwise, and vLLM's own log lines kept to warnings."""
    env = {
        "PYTHONPATH": str(Path(__file__).resolve().parent.parent),
        "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1"),
        "VLLM_LOGGING_LEVEL": os.environ.get("VLLM_LOGGING_LEVEL", "WARNING"),
    }
    interpreter = python()
    return {"env_vars": env, **({"py_executable": interpreter} if interpreter else {})}
