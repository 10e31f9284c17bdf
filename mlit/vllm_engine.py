"""vLLM behind the same model server: one ``AsyncLLM`` per model, tokens streamed as vLLM samples.

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

import asyncio
import importlib.util
import json
import logging
import os
import uuid
from collections import Counter, OrderedDict
from pathlib import Path

logger = logging.getLogger("ray.serve")


class VllmModels:
    """An LRU of vLLM engines, one per served model (a full fine-tune is a model of its own)."""

    def __init__(self, max_models: int):
        self._max = max(1, max_models)
        self._engines: OrderedDict[str, tuple] = OrderedDict()
        self._lock = asyncio.Lock()
        self.loads: Counter[str] = Counter()

    async def get(self, name: str, checked_dir):
        """(engine, tokenizer, vocabulary size, context length) of a model, started on first use;
        ``checked_dir()`` gives its verified directory, and is called only then."""
        async with self._lock:
            if name in self._engines:
                self._engines.move_to_end(name)
                return self._engines[name]
            while len(self._engines) >= self._max:  # the least recently used engine makes room
                _, (old, *_) = self._engines.popitem(last=False)
                old.shutdown()
            path = await asyncio.to_thread(checked_dir)
            entry = await asyncio.to_thread(_start, path, self._max)
            self._engines[name] = entry
            self.loads[name] += 1
            return entry


def _start(path: str, engines: int):
    """One engine. On a GPU the engines of a replica share its memory: each takes its part of
    vLLM's usual 90% (two engines at 90% each would not fit)."""
    import torch
    from transformers import AutoTokenizer
    from vllm import AsyncEngineArgs
    from vllm.v1.engine.async_llm import AsyncLLM

    args = AsyncEngineArgs(
        model=path,
        dtype="bfloat16" if torch.cuda.is_available() else "float32",
        disable_log_stats=True,
        max_logprobs=20,
        enforce_eager=not torch.cuda.is_available(),  # no graphs to capture on CPU
        gpu_memory_utilization=0.9 / engines,
    )
    engine = AsyncLLM.from_engine_args(args)
    tokenizer = AutoTokenizer.from_pretrained(path)
    cfg = engine.model_config
    return engine, tokenizer, cfg.get_vocab_size(), cfg.max_model_len


async def events(engine, tok, job, stream: bool):
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
    async for out in engine.generate({"prompt_token_ids": job.ids}, params, uuid.uuid4().hex):
        if prompt_lps is None and out.prompt_logprobs is not None:
            prompt_lps = _prompt_logprobs(tok, job.ids, out.prompt_logprobs, k)
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
