"""Which engine serves (`resolve`), and where vLLM runs: the interpreter that has it (its own
environment, `make vllm-env`), the runtime environment of a vLLM replica, and what vLLM's CPU
backend cannot run.

Imports no engine and no vLLM: the planner and `mlit serve` ask here before anything starts, so a
missing vLLM is an error then, not after training. The engines themselves are built in
`mlit.serving.engines.registry.create`.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parents[2]  # the checkout that holds the mlit package
CHECKOUT_VENV = CHECKOUT / ".venv-vllm" / "bin" / "python"
ENGINES = ("hf", "vllm", "auto")


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


def runtime_env() -> dict:
    """What a vLLM replica runs with: vLLM's interpreter, this checkout on its path, a small CPU
    KV cache unless told otherwise, and vLLM's own log lines kept to warnings."""
    env = {
        "PYTHONPATH": str(CHECKOUT),
        "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1"),
        "VLLM_LOGGING_LEVEL": os.environ.get("VLLM_LOGGING_LEVEL", "WARNING"),
    }
    interpreter = python()
    return {"env_vars": env, **({"py_executable": interpreter} if interpreter else {})}
