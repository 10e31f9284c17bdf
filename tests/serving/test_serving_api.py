"""The OpenAI API as real clients use it, against the Serve app on loopback: token streaming,
log-likelihoods (lm-evaluation-harness), several choices, newer message shapes, request limits
and a schemathesis run over the served schema. Each test runs against both engines: ``hf`` in the
default suite, ``vllm`` with `make test-vllm` (it needs `make vllm-env`)."""

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time

import httpx
import pytest

from mlit.plumbing.ports import free_port
from mlit.serving import app as serving

KEY = "api-test-key"
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture(scope="module", params=["hf", pytest.param("vllm", marks=pytest.mark.vllm)])
def server(request, ray_session, tiny_base):
    """The same app on each engine: every test below is the API contract for both."""
    from ray import serve

    from mlit.planning import engine_choice as vllm_engine

    if request.param == "vllm":
        try:
            vllm_engine.python()
        except ValueError as err:
            pytest.skip(str(err))

    cfg = serving.ServeConfig(
        models={"tiny-a": str(tiny_base), "tiny-b": str(tiny_base)},
        port=free_port(),
        api_key_sha256=serving.hash_key(KEY),
        num_cpus=1,
        engine=request.param,
    )
    url = serving.start(cfg)
    yield url
    serving.stop()
    serve.shutdown()


@pytest.fixture(scope="module")
def local(tiny_base):
    """The same model in this process, for values to compare with."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(tiny_base).eval(), AutoTokenizer.from_pretrained(
        tiny_base
    )


def _post(url, route, body, timeout=120):
    return httpx.post(f"{url}{route}", json=body, headers=AUTH, timeout=timeout)


def _stream_chat(url, body):
    """(seconds to the first text chunk, seconds to the end, the streamed text)."""
    start, first, text = time.perf_counter(), None, ""
    with httpx.stream(
        "POST", f"{url}/v1/chat/completions", json=body, headers=AUTH, timeout=120
    ) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            piece = json.loads(line[6:])["choices"][0]["delta"].get("content")
            if piece:
                first = first or time.perf_counter() - start
                text += piece
    return first, time.perf_counter() - start, text


def _story(**extra) -> dict:
    """A chat request for a fixed-length sampled answer."""
    return {
        "model": "tiny-a",
        "messages": [{"role": "user", "content": "Tell me a long story."}],
        "temperature": 0.8,
        "ignore_eos": True,
        **extra,
    }


def test_tokens_stream_as_they_are_sampled_and_match_the_whole_answer(server):
    body = _story(max_tokens=200, seed=42)
    whole = _post(server, "/v1/chat/completions", body).json()  # the model is loaded by now
    first, total, streamed = _stream_chat(server, {**body, "stream": True})
    assert streamed == whole["choices"][0]["message"]["content"]
    assert first is not None and first < 0.5 * total, (first, total)


def test_openai_client_streams_completions(server):
    import openai

    client = openai.OpenAI(base_url=f"{server}/v1", api_key=KEY)
    chunks = list(
        client.completions.create(
            model="tiny-b", prompt="Once upon a time", max_tokens=24, stream=True, seed=1
        )
    )
    # Text leaves the replica in chunks (a piece at once, then every 0.1 s): a first piece, the
    # rest, the finish; together the answer the same seed gives whole.
    assert len(chunks) >= 3
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")
    whole = client.completions.create(
        model="tiny-b", prompt="Once upon a time", max_tokens=24, seed=1
    )
    assert "".join(c.choices[0].text for c in chunks) == whole.choices[0].text


def _chunks(url, route, body) -> list[dict]:
    with httpx.stream("POST", f"{url}{route}", json=body, headers=AUTH, timeout=120) as r:
        assert r.status_code == 200, r.read()
        lines = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "[DONE]"
    return [json.loads(line)["choices"][0] for line in lines[:-1]]


def test_streamed_logprobs_are_the_whole_answers_split_over_its_chunks(server):
    chat = _story(max_tokens=40, seed=7, logprobs=True, top_logprobs=2)
    whole = _post(server, "/v1/chat/completions", chat).json()["choices"][0]
    chunks = _chunks(server, "/v1/chat/completions", {**chat, "stream": True})
    streamed = [e for c in chunks if c["logprobs"] for e in c["logprobs"]["content"]]
    expected = whole["logprobs"]["content"]
    assert len(expected) == 40 and [e["token"] for e in streamed] == [e["token"] for e in expected]
    for got, want in zip(streamed, expected, strict=True):
        assert got["logprob"] == pytest.approx(want["logprob"], abs=1e-4)
        assert len(got["top_logprobs"]) == 2
    # Each text piece came with its tokens' entries, not all of them at the end.
    assert sum(1 for c in chunks if c["logprobs"] and c["logprobs"]["content"]) >= 2
    assert "".join(e["token"] for e in streamed) == whole["message"]["content"]

    # Completions with the prompt echoed: its entries first, offsets counted over the stream.
    text = {"model": "tiny-b", "prompt": "Once upon a time", "max_tokens": 24, "seed": 3}
    text |= {"echo": True, "logprobs": 1, "ignore_eos": True}
    whole = _post(server, "/v1/completions", text).json()["choices"][0]["logprobs"]
    chunks = _chunks(server, "/v1/completions", {**text, "stream": True})
    parts = [c["logprobs"] for c in chunks if c["logprobs"]]
    for key in ("tokens", "text_offset"):
        assert [v for p in parts for v in p[key]] == whole[key], key
    got = [v for p in parts for v in p["token_logprobs"]]
    assert got == pytest.approx(whole["token_logprobs"], abs=1e-4)


def test_echoed_prompt_loglikelihoods_equal_in_process_values(server, local):
    import torch

    model, tok = local
    ids = tok("The river runs to the sea and the sea", add_special_tokens=False)["input_ids"]
    body = {"model": "tiny-a", "prompt": ids, "max_tokens": 0, "echo": True, "logprobs": 1}
    r = _post(server, "/v1/completions", body)
    assert r.status_code == 200, r.text
    lp = r.json()["choices"][0]["logprobs"]
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([ids])).logits[0].float(), -1)
    expected = [None] + [float(logp[i - 1, ids[i]]) for i in range(1, len(ids))]
    assert lp["token_logprobs"][0] is None and lp["top_logprobs"][0] is None
    for got, want in zip(lp["token_logprobs"][1:], expected[1:], strict=True):
        assert abs(got - want) < 1e-4
    text = r.json()["choices"][0]["text"]
    assert "".join(lp["tokens"]) == text
    assert all(text[o:].startswith(t) for o, t in zip(lp["text_offset"], lp["tokens"], strict=True))


def test_lm_evaluation_harness_loglikelihoods_equal_in_process_values(
    server, local, tiny_base, monkeypatch
):
    import torch
    from lm_eval.api.instance import Instance
    from lm_eval.models.openai_completions import LocalCompletionsAPI

    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    lm = LocalCompletionsAPI(
        model="tiny-a",
        base_url=f"{server}/v1/completions",
        tokenizer=str(tiny_base),
        tokenizer_backend="huggingface",
        max_retries=1,
    )
    pairs = [("The cat sat on", " the mat"), ("Hola, ¿cómo", " estás?")]
    requests = [
        Instance(request_type="loglikelihood", doc={}, arguments=pair, idx=i)
        for i, pair in enumerate(pairs)
    ]
    got = lm.loglikelihood(requests)
    model, tok = local
    for (context, continuation), (value, _greedy) in zip(pairs, got, strict=True):
        ctx = tok(context, add_special_tokens=False)["input_ids"]
        ids = ctx + tok(continuation, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([ids])).logits[0].float(), -1)
        want = sum(float(logp[i - 1, ids[i]]) for i in range(len(ctx), len(ids)))
        assert value != 0 and abs(value - want) < 1e-4, (value, want)


def test_several_choices_new_message_shapes_and_empty_stops(server):
    body = {
        "model": "tiny-a",
        "messages": [
            {"role": "developer", "content": "Answer briefly."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Name "},
                    {"type": "text", "text": "a fruit."},
                ],
            },
        ],
        "n": 3,
        "max_tokens": 12,
        "temperature": 1.0,
        "seed": 5,
        "stop": [""],
        "ignore_eos": True,
    }
    r = _post(server, "/v1/chat/completions", body)
    assert r.status_code == 200, r.text
    choices = r.json()["choices"]
    assert [c["index"] for c in choices] == [0, 1, 2]
    assert len({c["message"]["content"] for c in choices}) > 1  # seeds 5, 6, 7
    assert r.json()["usage"]["completion_tokens"] == 36  # an empty stop string stops nothing
    many = _post(
        server, "/v1/completions", {"model": "tiny-b", "prompt": ["a", "b"], "max_tokens": 4}
    )
    assert [c["index"] for c in many.json()["choices"]] == [0, 1]


def test_logit_bias_and_penalties_change_sampling(server, local):
    tok = local[1]
    forced = tok.encode(" river", add_special_tokens=False)[0]
    chat = {
        "model": "tiny-a",
        "messages": [{"role": "user", "content": "x"}],
        "max_tokens": 4,
        "temperature": 0.9,
        "seed": 4,
        "ignore_eos": True,
        "logit_bias": {str(forced): 100},
    }
    r = _post(server, "/v1/chat/completions", chat)
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"] == tok.decode([forced] * 4)

    def most_repeated(**extra):  # the answer's tokens, as its logprob entries name them
        body = {
            "model": "tiny-a",
            "prompt": "rivers",
            "max_tokens": 24,
            "logprobs": 0,
            "temperature": 0,
        }
        r = _post(server, "/v1/completions", {**body, "ignore_eos": True, **extra})
        assert r.status_code == 200, r.text
        got = r.json()["choices"][0]["logprobs"]["tokens"]
        return max(got.count(t) for t in set(got))

    assert most_repeated(frequency_penalty=2.0, presence_penalty=2.0) < most_repeated()


def test_limits_answer_with_4xx_and_never_stall_other_users(server):
    huge = "x" * (10 * 1024 * 1024)
    r = _post(server, "/v1/completions", {"model": "tiny-a", "prompt": huge})
    assert r.status_code == 413 and "limit" in r.json()["error"]["message"]
    deep = "[" * 100_000 + "]" * 100_000
    r = httpx.post(
        f"{server}/v1/completions",
        content=f'{{"model": "tiny-a", "prompt": "a", "x": {deep}}}',
        headers=AUTH,
        timeout=60,
    )
    assert r.status_code == 400, r.text
    r = _post(server, "/v1/completions", {"model": "tiny-a", "prompt": "", "max_tokens": 4})
    assert r.status_code in (200, 400), r.text
    r = _post(server, "/v1/completions", {"model": "tiny-a", "prompt": [], "max_tokens": 4})
    assert r.status_code == 400, r.text

    # Head of line: a prompt just under the body limit (tokenized, then refused for its
    # length) must not hold another user's small request on another model.
    small = {"model": "tiny-b", "prompt": "Hi", "max_tokens": 4}
    alone = min(_timed(server, small) for _ in range(3))
    big = {"model": "tiny-a", "prompt": "word " * 380_000, "max_tokens": 4}

    async def together():
        async with httpx.AsyncClient(timeout=120, headers=AUTH) as http:
            heavy = asyncio.create_task(http.post(f"{server}/v1/completions", json=big))
            await asyncio.sleep(0.3)  # the big one is being tokenized
            start = time.perf_counter()
            r = await http.post(f"{server}/v1/completions", json=small)
            took = time.perf_counter() - start
            return (await heavy).status_code, r.status_code, took

    heavy_code, code, took = asyncio.run(together())
    assert heavy_code == 400 and code == 200
    assert took < alone + 1.0, (took, alone)


def _timed(url, body) -> float:
    start = time.perf_counter()
    assert _post(url, "/v1/completions", body).status_code == 200
    return time.perf_counter() - start


def test_the_schema_declares_typed_request_bodies(server):
    doc = httpx.get(f"{server}/openapi.json", headers=AUTH, timeout=30).json()
    body = doc["paths"]["/v1/chat/completions"]["post"]["requestBody"]
    ref = body["content"]["application/json"]["schema"]["$ref"].split("/")[-1]
    assert "messages" in doc["components"]["schemas"][ref]["properties"]


@pytest.mark.skipif(
    not shutil.which("st", path=os.path.dirname(sys.executable)), reason="schemathesis"
)
def test_schemathesis_finds_no_server_errors(server):
    """Generated requests against every route of the schema: 4xx for what is wrong, never 5xx."""
    st = os.path.join(os.path.dirname(sys.executable), "st")
    run = subprocess.run(
        [
            st,
            "run",
            f"{server}/openapi.json",
            "--header",
            f"Authorization: Bearer {KEY}",
            "--checks",
            "not_a_server_error",
            "--max-examples",
            "40",
            # One worker: with two, hypothesis's threads parse lambda sources at once and crash
            # it about one run in four (CPython "AST constructor recursion depth mismatch"),
            # which is no server error; with one worker 5 runs in 5 passed.
            "--workers",
            "1",
            "--phases",
            "coverage,fuzzing",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
