"""Continuous batching (`mlit.serving.engines.scheduler`) against the static engine, without Ray."""

from __future__ import annotations

import queue
import threading
import time

import pytest

from mlit.generation import decoding
from mlit.serving.engines.scheduler import Request, Scheduler


@pytest.fixture(scope="module")
def model(tiny_base):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_base)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return AutoModelForCausalLM.from_pretrained(tiny_base).eval(), tok


def _submit(sched, model, tok, prompt, sampling, stream=False):
    events: queue.Queue = queue.Queue()
    req = Request(decoding.encode_prompt(tok, prompt), sampling, events.put, stream=stream)
    sched.submit(model, tok, req)
    return req, events


def _result(events: queue.Queue, timeout: float = 120):
    pieces = []
    while True:
        kind, value = events.get(timeout=timeout)
        if kind == "token":
            pieces.append(value)
        elif kind == "done":
            return value, pieces
        else:
            raise AssertionError(value)


PROMPTS = [
    "Write a short note about rivers.",
    "Hola, ¿cómo estás hoy?",
    "Name three colours",
    "Translate: the cat sleeps on the mat, and the dog watches the door all day long.",
]


def test_requests_joining_a_running_batch_get_the_answers_they_get_alone(model):
    """Rows admitted mid-flight (different prompt lengths, so the cache is re-padded) and rows that
    finish early (so the cache shrinks) must not change anyone's tokens: greedy and seeded
    sampling give what the static engine gives for each request alone."""
    m, tok = model
    settings = [
        decoding.Sampling(max_new_tokens=60, temperature=0.0, ignore_eos=True),
        decoding.Sampling(max_new_tokens=6, temperature=0.7, top_p=0.9, seed=7, ignore_eos=True),
        decoding.Sampling(max_new_tokens=17, temperature=1.0, seed=3, ignore_eos=True),
        decoding.Sampling(max_new_tokens=11, temperature=0.0, ignore_eos=True),
    ]
    alone = [decoding.generate(m, tok, [p], [s])[0] for p, s in zip(PROMPTS, settings, strict=True)]
    sched = Scheduler(max_batch=8)
    head, first = _submit(sched, m, tok, PROMPTS[0], settings[0])
    waiting = [first]
    for n, (prompt, sampling) in enumerate(zip(PROMPTS[1:], settings[1:], strict=True)):
        # The first request is mid-answer when each joins; the second (6 tokens) is still running
        # when the third joins, so sampled rows with and without a nucleus share steps.
        while len(head.out) < 3 * (n + 1):
            time.sleep(0.001)
        waiting.append(_submit(sched, m, tok, prompt, sampling)[1])
    got = [_result(q)[0] for q in waiting]
    for a, b in zip(alone, got, strict=True):
        assert b.text == a.text
        assert b.completion_tokens == a.completion_tokens
    assert max(sched.steps) >= 2  # they did share decode steps


def test_a_seeded_rows_token_does_not_depend_on_its_neighbours_nucleus():
    """Each row's draw lands on the same token alone or beside rows with other sampling: a top_p-1
    row used to walk the CDF in sorted order whenever a neighbour had a nucleus, and in id order
    alone, so the same seed gave a different answer depending on who shared its batch."""
    import torch

    logits = torch.randn(3, 1024, generator=torch.Generator().manual_seed(0))
    rows = [
        decoding.Sampling(temperature=1.0, top_p=1.0, seed=3),
        decoding.Sampling(temperature=0.7, top_p=0.9, seed=7),
        decoding.Sampling(temperature=0.0),
    ]

    def pick(indices):
        params = [rows[i] for i in indices]
        return decoding.pick_batch(
            logits[indices],
            params,
            [decoding.generator(p.seed, "cpu") for p in params],
            torch.tensor([p.temperature for p in params]),
            torch.tensor([p.top_p for p in params]),
        )

    alone = [pick([i])[0] for i in range(3)]
    for together in ([0, 1, 2], [1, 0], [2, 0], [2, 1]):
        assert pick(together) == [alone[i] for i in together], together


def test_streamed_pieces_join_to_the_answer_and_the_first_comes_early(model):
    m, tok = model
    sched = Scheduler()
    sampling = decoding.Sampling(max_new_tokens=48, temperature=0.7, seed=11, ignore_eos=True)
    start = time.perf_counter()
    _, events = _submit(sched, m, tok, PROMPTS[1], sampling, stream=True)
    kind, first = events.get(timeout=60)
    first_at = time.perf_counter() - start
    assert kind == "token" and first
    done, rest = _result(events)
    total = time.perf_counter() - start
    assert first + "".join(rest) == done.text
    assert first_at < total / 2
    [plain] = decoding.generate(m, tok, [PROMPTS[1]], [sampling])
    assert done.text == plain.text  # streaming changes nothing for the same seed


def test_a_streamed_piece_comes_after_its_tokens_logprob_entries(model):
    m, tok = model
    sched = Scheduler()
    sampling = decoding.Sampling(24, temperature=0.7, seed=5, ignore_eos=True, top_logprobs=1)
    _, events = _submit(sched, m, tok, PROMPTS[1], sampling, stream=True)
    kinds, entries = [], []
    while (event := events.get(timeout=60))[0] != "done":
        kinds.append(event[0])
        entries += event[1] if event[0] == "logprobs" else ()
    assert kinds[0::2] == ["logprobs"] * (len(kinds) // 2) and set(kinds[1::2]) == {"token"}
    assert 0 < len(entries) <= 24 and tuple(entries) == event[1].logprobs[: len(entries)]


def test_stop_strings_are_never_streamed_past(model):
    m, tok = model
    sampling = decoding.Sampling(40, temperature=1.0, seed=2, ignore_eos=True)
    [free] = decoding.generate(m, tok, [PROMPTS[0]], [sampling])
    words = free.text.split()
    assert len(words) > 3, free.text
    stop = words[2][:3]
    sched = Scheduler()
    sampling = decoding.Sampling(40, temperature=1.0, seed=2, stop=(stop,), ignore_eos=True)
    _, events = _submit(sched, m, tok, PROMPTS[0], sampling, stream=True)
    done, pieces = _result(events)
    assert done.finish_reason == "stop"
    assert "".join(pieces) == done.text == free.text[: free.text.find(stop)]


def test_cancelled_requests_leave_the_batch_and_the_others_finish(model):
    m, tok = model
    sched = Scheduler()
    long = decoding.Sampling(max_new_tokens=200, ignore_eos=True)
    gone, gone_events = _submit(sched, m, tok, PROMPTS[0], long)
    _, events = _submit(sched, m, tok, PROMPTS[2], decoding.Sampling(20, ignore_eos=True))
    gone.cancelled = True
    done, _ = _result(events)
    assert done.completion_tokens == 20
    deadline = time.time() + 30
    while sched.busy() and time.time() < deadline:
        time.sleep(0.05)
    assert sched.busy() == 0
    assert gone_events.empty()  # a cancelled request gets nothing more


def test_logprob_tokens_concatenate_to_the_text_for_any_script(model):
    """Token strings are what each token adds to the text: a character split over two tokens is
    not two U+FFFD, and text offsets built from them index the text."""
    m, tok = model
    sampling = decoding.Sampling(40, temperature=1.0, seed=5, top_logprobs=2, ignore_eos=True)
    sched = Scheduler()
    _, events = _submit(sched, m, tok, "こんにちは。Привет! ¿Qué tal?", sampling)
    done, _ = _result(events)
    assert "".join(t.token for t in done.logprobs) == done.text.rstrip("\ufffd")
    # Text the tokenizer splits inside characters (byte fallback): no token is half a character.
    text = "こんにちは。Привет! ¿Qué tal? 🙂"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert len(ids) > len(text.split())
    lps = decoding.prompt_logprobs(m, tok, ids, 0)
    assert "".join(t.token for t in lps) == tok.decode(ids) == text
    assert all("\ufffd" not in t.token for t in lps)


def test_prompt_logprobs_match_a_plain_forward(model):
    import torch

    m, tok = model
    ids = decoding.encode_prompt(tok, PROMPTS[3])
    lps = decoding.prompt_logprobs(m, tok, ids, 1)
    with torch.no_grad():
        logp = torch.log_softmax(m(torch.tensor([ids])).logits[0].float(), -1)
    assert lps[0].logprob is None
    for i in range(1, len(ids)):
        assert abs(lps[i].logprob - float(logp[i - 1, ids[i]])) < 1e-5
    assert len(lps[5].top) == 1


def test_many_concurrent_submitters(model):
    m, tok = model
    sched = Scheduler(max_batch=16)
    results: list = []

    def client(i):
        s = decoding.Sampling(8 + i % 5, temperature=0.7, seed=i, ignore_eos=True)
        results.append(_result(_submit(sched, m, tok, PROMPTS[i % 4], s)[1])[0])

    threads = [threading.Thread(target=client, args=(i,)) for i in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert len(results) == 40
    assert max(sched.steps) > 4
    assert max(sched.steps) <= 16


def test_free_rows_go_to_requests_in_turn_not_to_the_one_with_most_sequences():
    from mlit.serving.engines.scheduler import _fair_share

    def rows(group, n):
        return [
            Request([1], decoding.Sampling(max_new_tokens=1), lambda e: None, group=group)
            for _ in range(n)
        ]

    big, small_a, small_b = rows("big", 16), rows("a", 1), rows("b", 1)
    picked = _fair_share(big + small_a + small_b, room=4)
    assert [r.group for r in picked] == ["big", "a", "b", "big"]  # each request its turn
    assert len(_fair_share(big + small_a, room=64)) == 17  # no one else waits: all of it
    loners = rows(None, 3)  # requests without a group are each their own
    assert _fair_share(loners, room=2) == loners[:2]


def test_penalties_and_logit_bias_change_sampling_as_openai_defines_them(model):
    """A +100 bias makes a token the answer; penalties take repeats out of a greedy answer; the
    scheduler and the static engine agree, and rows that ask for none are untouched."""
    import torch

    m, tok = model
    logits = torch.zeros((2, 6))
    plain = decoding.Sampling(4)
    pen = decoding.Sampling(4, frequency_penalty=0.5, presence_penalty=1.0, logit_bias=((5, -3.0),))
    got = decoding.adjusted(logits, [plain, pen], [[1, 1, 2], [1, 1, 2]])
    assert got[0].tolist() == [0.0] * 6  # untouched
    assert got[1].tolist() == [0.0, -2.0, -1.5, 0.0, 0.0, -3.0]  # 1: 2 x 0.5 + 1; 2: 0.5 + 1
    forced = tok.encode(" river", add_special_tokens=False)[0]
    bias = decoding.Sampling(
        8, temperature=0.7, seed=1, ignore_eos=True, logit_bias=((forced, 100),)
    )
    repeats = decoding.Sampling(40, ignore_eos=True, top_logprobs=0)
    penalised = decoding.Sampling(
        40, ignore_eos=True, top_logprobs=0, frequency_penalty=2.0, presence_penalty=2.0
    )
    alone = [decoding.generate(m, tok, [PROMPTS[0]], [s])[0] for s in (bias, repeats, penalised)]
    assert alone[0].text == tok.decode([forced] * 8)

    def most_repeated(completion):  # the answer's tokens, as its logprob entries name them
        tokens = [lp.token for lp in completion.logprobs]
        return max(tokens.count(t) for t in set(tokens))

    assert most_repeated(alone[2]) < most_repeated(alone[1])
    sched = Scheduler(max_batch=8)
    waiting = [_submit(sched, m, tok, PROMPTS[0], s)[1] for s in (bias, repeats, penalised)]
    assert [_result(q)[0].text for q in waiting] == [c.text for c in alone]
