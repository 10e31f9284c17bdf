"""The engines by name: the one place that builds one. The model server calls `create` once per
replica and talks to what it returns through `mlit.serving.engines.Engine`."""

from __future__ import annotations

from mlit.serving.engines import Engine


def create(
    kind: str, models: list[str], max_models: int, max_batch: int, loras: dict, threads: int
) -> Engine:
    """The engine of one model-server replica (``kind`` already resolved: hf or vllm); ``threads``
    is the CPUs the replica was given."""
    if kind == "vllm":
        from mlit.serving.engines import vllm

        return vllm.VLLMEngine(models, max_models, loras)
    if kind == "hf":
        from mlit.serving.engines import hf

        return hf.HFEngine(max_batch, threads)
    raise ValueError(f"unknown engine {kind!r}: use one of hf, vllm")
