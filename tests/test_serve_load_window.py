"""`benchmarks/serve_load.py` counts throughput in a steady state: clients that start apart and a
window that leaves out the start and the drain. Served and engine-alone runs share this code."""

import asyncio
import importlib.util
import sys
import time
from pathlib import Path

ROOT = Path(__file__).parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))  # as when run as a script: its sibling `host`


def _serve_load():
    spec = importlib.util.spec_from_file_location("serve_load", ROOT / "benchmarks/serve_load.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_first_answers_are_spread_over_the_clients_and_later_ones_are_whole():
    sl = _serve_load()
    firsts = [sl._tokens(c, 0, 64) for c in range(64)]
    assert firsts[0] == 1 and firsts[-1] == sl.NEW_TOKENS
    assert len(set(firsts)) == 64  # every client ends its first answer at its own step
    assert {sl._tokens(c, n, 64) for c in range(64) for n in (1, 5)} == {sl.NEW_TOKENS}


def test_tokens_count_for_the_share_of_their_answer_inside_the_window():
    sl = _serve_load()
    done = [
        {"start": 0.0, "end": 10.0, "tokens": 100},  # half inside
        {"start": 6.0, "end": 8.0, "tokens": 64},  # all inside
        {"start": 12.0, "end": 14.0, "tokens": 64},  # after
    ]
    assert sl._in_window(done, 5.0, 11.0) == 50 + 64


def test_the_window_opens_once_every_client_settled_and_closes_at_the_deadline():
    sl = _serve_load()
    readings = []

    async def ask(c: int, n: int) -> dict:
        start = time.perf_counter()
        await asyncio.sleep(0.01 * sl._tokens(c, n, 4) / sl.NEW_TOKENS)
        return {"start": start, "end": time.perf_counter(), "tokens": 1}

    async def at_window():
        readings.append(len(readings))

    done, first, last = asyncio.run(sl._closed_loop(ask, 4, 0.3, at_window))
    assert readings == [0, 1]  # the counters are read at both ends
    assert first is not None and 0.1 < last - first <= 0.3
    assert len(done) > 8

    _, first, last = asyncio.run(sl._closed_loop(ask, 4, 0.0))  # no client settled: no window
    assert first is None and last is None
    before, after = (
        {"decode_steps": 10, "decode_rows": 100},
        {"decode_steps": 30, "decode_rows": 700},
    )
    assert sl._mean_batch(before, after) == 30.0
