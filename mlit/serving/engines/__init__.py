"""The engines a model server runs, behind one interface.

An engine turns a prepared request (`mlit.serving.preparation.Job`) into text. The model server
(`mlit.serving.model_server`) talks to `Engine` only; `registry.create` is the only code that
knows which engines exist:

- ``hf`` (`mlit.serving.engines.hf`): transformers models in this process, stepped by our
  continuous-batching scheduler (`mlit.serving.engines.scheduler`);
- ``vllm`` (`mlit.serving.engines.vllm`): vLLM's ``AsyncLLM``, LoRA models as adapters on one
  engine of their base.

Which of them serves is resolved before anything runs (`mlit.planning.engine_choice.resolve`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol


class GenerationError(RuntimeError):
    """An engine failed a request it had accepted; the message is safe to show the client."""


class Loaded:
    """One served model on a replica, as Serve's multiplexing LRU holds it. What a request needs
    to be prepared (tokenizer, vocabulary size, context length) is here; ``handle`` is the
    engine's own. Serve calls ``__del__`` when it evicts the model: the engine unloads it."""

    def __init__(self, engine: Engine, name: str, tokenizer, vocab: int, context, handle):
        self.engine, self.name, self.handle = engine, name, handle
        self.tokenizer, self.vocab, self.context = tokenizer, vocab, context
        self._done = False

    def __del__(self):
        if not self._done:  # Serve calls it, and the garbage collector may again
            self._done = True
            self.engine.unload(self)


class Engine(Protocol):
    """What the model server asks of an engine. ``load`` blocks (the caller runs it off the
    event loop); ``events`` yields ``("token", text)`` pieces while streaming (each after a
    ``("logprobs", entries)`` of the tokens sampled since the last piece, where the job asks for
    logprobs), then ``("done", mlit.generation.decoding.Completion)``, or raises `GenerationError`.
    ``check_health`` raises when the engine cannot answer any more (Serve then replaces the
    replica)."""

    name: str

    def load(self, name: str, model_dir: str) -> Loaded: ...

    def events(self, loaded: Loaded, job, stream: bool) -> AsyncIterator[tuple]: ...

    async def prompt_logprobs(self, loaded: Loaded, ids: list[int], k: int) -> list: ...

    def stats(self) -> dict: ...

    def check_health(self) -> None: ...

    def unload(self, loaded: Loaded) -> None: ...
