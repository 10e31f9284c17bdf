"""The hf engine's own process (`mlit.serving.engines.engine_process`), driven as the replica drives
it (`mlit.serving.engines.hf.HFEngine`), without Ray."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import pytest

from mlit.generation import chat, decoding
from mlit.serving import preparation
from mlit.serving.engines import GenerationError
from mlit.serving.engines.hf import HFEngine

PROMPT = "Tell me a story."


def _job(loaded, max_new: int = 16, seed: int = 3, content: str = PROMPT) -> preparation.Job:
    sampling = {
        "max_new_tokens": max_new,
        "temperature": 0.7,
        "top_p": 0.9,
        "seed": seed,
        "stop": [],
        "top_logprobs": None,
        "ignore_eos": True,
    }
    item = {
        "kind": "chat",
        "messages": [{"role": "user", "content": content}],
        "sampling": sampling,
    }
    return preparation.prepare(loaded.tokenizer, item, loaded.vocab, loaded.context)


async def _answer(engine, loaded, job, stream: bool):
    return [event async for event in engine.events(loaded, job, stream)]


@pytest.fixture()
def engine():
    engine = HFEngine(max_batch=8, threads=1)
    yield engine
    engine.close()


def test_answers_come_from_another_process_streamed_and_whole_alike(engine, tiny_base):
    loaded = engine.load("tiny", str(tiny_base))
    assert engine._process._proc.pid != os.getpid()

    async def both():
        jobs = [_job(loaded, seed=s) for s in range(4)]
        streamed = await asyncio.gather(*(_answer(engine, loaded, j, True) for j in jobs))
        whole = await asyncio.gather(*(_answer(engine, loaded, j, False) for j in jobs))
        return streamed, whole

    streamed, whole = asyncio.run(both())
    for s, w in zip(streamed, whole, strict=True):
        assert s[-1][0] == "done" and w == [s[-1]]  # a whole answer is one event
        assert "".join(v for k, v in s if k == "token") == w[0][1].text
        assert w[0][1].completion_tokens == 16
    # The same seed gives the same answer as the static engine in this process.
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_base).eval()
    job = _job(loaded, seed=2)
    prompt = chat.format_messages(loaded.tokenizer, [{"role": "user", "content": PROMPT}])
    sampling = decoding.Sampling(**{**job.params, "stop": ()})
    alone = decoding.generate(model, loaded.tokenizer, [prompt], [sampling])[0]
    assert whole[2][0][1].text == alone.text
    stats = engine.stats()
    assert stats["batch_sizes"]  # the process reports its steps, and their rows ever
    assert stats["decode_steps"] == len(stats["batch_sizes"])
    assert stats["decode_rows"] == sum(stats["batch_sizes"]) >= 8 * 15  # 8 answers of 16 tokens


def test_a_cancelled_request_stops_taking_decode_steps(engine, tiny_base):
    loaded = engine.load("tiny", str(tiny_base))

    async def cancel_then_ask():
        events = engine.events(loaded, _job(loaded, max_new=200), True)
        await events.__anext__()
        await events.aclose()
        return await _answer(engine, loaded, _job(loaded, max_new=40), False)

    assert asyncio.run(cancel_then_ask())[-1][0] == "done"
    # The next request decodes alone: the cancelled one (200 tokens) left the batch.
    assert engine.stats()["batch_sizes"][-20:] == [1] * 20


def test_a_model_the_process_does_not_hold_fails_that_request_alone(engine, tiny_base):
    loaded = engine.load("tiny", str(tiny_base))
    engine.unload(loaded)

    with pytest.raises(GenerationError, match="could not take the request"):
        asyncio.run(_answer(engine, loaded, _job(loaded), False))
    again = engine.load("tiny", str(tiny_base))
    assert asyncio.run(_answer(engine, again, _job(again), False))[-1][0] == "done"


def test_a_dead_engine_process_fails_requests_and_the_health_check(engine, tiny_base):
    loaded = engine.load("tiny", str(tiny_base))

    async def killed_midway():
        events = engine.events(loaded, _job(loaded, max_new=200), True)
        await events.__anext__()
        os.kill(engine._process._proc.pid, signal.SIGKILL)
        async for _ in events:
            pass

    with pytest.raises(GenerationError, match="engine process exited"):
        asyncio.run(killed_midway())
    deadline = time.monotonic() + 10
    while engine._process.gone is None and time.monotonic() < deadline:
        time.sleep(0.05)
    with pytest.raises(RuntimeError, match="engine process exited"):
        engine.check_health()
    with pytest.raises(GenerationError, match="engine process exited"):
        asyncio.run(_answer(engine, loaded, _job(loaded), False))


def test_a_closed_engine_ends_its_process_and_refuses_requests(tiny_base):
    engine = HFEngine(max_batch=2, threads=1)
    loaded = engine.load("tiny", str(tiny_base))
    engine.close()
    assert engine._process._proc.poll() is not None  # ended, not left to idle
    with pytest.raises(GenerationError, match="engine was closed"):
        asyncio.run(_answer(engine, loaded, _job(loaded), False))
    with pytest.raises(RuntimeError, match="engine was closed"):
        engine.check_health()
