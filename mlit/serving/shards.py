"""How the gateway reaches a shard's model server: through Serve, or in its own process.

The gateway talks to every shard through the same calls (`Shard`): one request answered whole,
one request streamed, the shard's counters, its health. Behind them is either

- `Remote`: a model-server deployment, through its Serve handle (the request's ``model`` as the
  multiplexed model id, so Serve routes it to a replica that holds the model); used where the
  models are split over shards, or a shard has several replicas or autoscales, or the engine is
  vLLM (its replica runs in vLLM's interpreter); or
- `Local`: the app's one model server, run inside the gateway's replica (`InProcess`). With one
  replica there is nothing to route, and the hop through Serve cost a third of the HTTP path's
  CPU: on the demo model under 64 clients on 2 cores, the gateway and the model-server
  replica used 2.6 + 2.1 ms of CPU per 64-token answer apart, and 2.3-2.5 ms together (Serve's
  gRPC call on both sides, its request wrappers and router, pickling), and the served share of
  the engine alone's tokens/s rose from 74-79% to 80-86% (`benchmarks/serve_load.py`).

Either way the model server is the same code (`mlit.serving.model_server`), and each request names
its model.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class InProcess:
    """A model server for the gateway to run in its own replica: its arguments."""

    models: dict[str, str]  # served name -> model directory
    max_models: int
    max_batch: int
    kind: str  # the engine, resolved (hf: vLLM's LoRA adapters need its own replica)


class Shard(Protocol):
    async def complete(self, model: str, item: dict) -> dict: ...

    def stream(self, model: str, item: dict) -> AsyncIterator[dict]: ...

    async def stats(self) -> dict: ...

    def check_health(self) -> None: ...


class Remote:
    """A model-server deployment, through its Serve handle."""

    def __init__(self, handle):
        self.handle = handle

    async def complete(self, model: str, item: dict) -> dict:
        return await self.handle.options(multiplexed_model_id=model).complete.remote(item, model)

    def stream(self, model: str, item: dict) -> AsyncIterator[dict]:
        server = self.handle.options(multiplexed_model_id=model, stream=True)
        return server.stream.remote(item, model)

    async def stats(self) -> dict:
        return await self.handle.stats.remote()

    def check_health(self) -> None:
        """Serve checks the deployment's own replicas."""


class Local:
    """The model server in this process (`InProcess`): its calls are plain calls."""

    def __init__(self, spec: InProcess):
        from mlit.serving.model_server import ModelServer

        # The deployment's class itself, not a replica of it.
        self.server = ModelServer.func_or_class(
            spec.models, spec.max_models, spec.max_batch, spec.kind
        )

    async def complete(self, model: str, item: dict) -> dict:
        return await self.server.complete(item, model)

    def stream(self, model: str, item: dict) -> AsyncIterator[dict]:
        return self.server.stream(item, model)

    async def stats(self) -> dict:
        return self.server.stats()

    def check_health(self) -> None:
        self.server.check_health()  # a gateway whose engine is gone is replaced


def connect(servers: list) -> list[Shard]:
    """The gateway's shards, from what the app bound: Serve handles and `InProcess` specs."""
    return [Local(s) if isinstance(s, InProcess) else Remote(s) for s in servers]
