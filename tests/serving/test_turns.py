"""Models served in turns (`mlit.serving.model_turns`), driven without Ray: a burst over more models
than fit loads each about once, a model is never evicted under a running request, a model with
steady traffic yields its slot, and a load that fails fails its waiters alone."""

import asyncio
import random

import pytest

from mlit.serving.model_turns import TURN_MIN_S, Turns


class Replica:
    """A replica's loader as the LRU sees it: what is loaded, how often, and use under eviction."""

    def __init__(self, capacity: int, load_s: float = 0.01, broken: tuple = ()):
        self.capacity, self.load_s, self.broken = capacity, load_s, set(broken)
        self.loaded: dict[str, int] = {}  # the LRU: name -> last use
        self.loads: list[str] = []
        self.clock = 0
        self.in_use: dict[str, int] = {}

    async def load(self, name: str):
        await asyncio.sleep(self.load_s)
        if name in self.broken:
            raise RuntimeError(f"{name} is broken")
        if len(self.loaded) >= self.capacity:
            victim = min(self.loaded, key=self.loaded.get)
            assert not self.in_use.get(victim), f"{victim} evicted under a running request"
            del self.loaded[victim]
        self.loads.append(name)
        return await self.touch(name)

    async def touch(self, name: str):
        self.clock += 1
        self.loaded[name] = self.clock
        return name


async def _request(turns: Turns, replica: Replica, name: str, work_s: float) -> str:
    async with turns.turn(name) as model:
        assert model == name and name in replica.loaded
        replica.in_use[name] = replica.in_use.get(name, 0) + 1
        try:
            await asyncio.sleep(work_s)
        finally:
            replica.in_use[name] -= 1
    return name


def test_a_burst_over_three_times_the_models_that_fit_loads_each_once():
    async def burst():
        replica = Replica(capacity=4)
        turns = Turns(4, replica.load, replica.touch)
        rng = random.Random(0)
        names = [f"m{rng.randrange(12)}" for _ in range(200)]
        done = await asyncio.gather(
            *(_request(turns, replica, n, rng.uniform(0.01, 0.05)) for n in names)
        )
        return names, done, replica

    names, done, replica = asyncio.run(burst())
    assert done == names  # every request answered by its own model
    assert sorted(replica.loads) == sorted(set(names))  # 12 loads, each model once


async def _trickle(rate: float, seed: int) -> tuple[int, float]:
    """Four models held, then 200 requests over 12 models reaching the replica at ``rate`` a
    second, interleaved, as a burst does through the proxy and gateway: loads in the burst, and
    how long its last request took after the last one arrived."""
    replica = Replica(capacity=4, load_s=0.07)
    turns = Turns(4, replica.load, replica.touch)
    for name in ("m0", "m1", "m2", "m3"):
        await _request(turns, replica, name, 0.01)
    await asyncio.sleep(0.6)
    rng = random.Random(seed)
    tasks = []
    for i in range(200):
        work = rng.uniform(0.05, 0.3)
        tasks.append(asyncio.create_task(_request(turns, replica, f"m{i % 12}", work)))
        await asyncio.sleep(rng.expovariate(rate))
    arrived = asyncio.get_running_loop().time()
    await asyncio.gather(*tasks)
    return len(replica.loads) - 4, asyncio.get_running_loop().time() - arrived


@pytest.mark.parametrize(("rate", "most"), [(200, 12), (20, 48)])
def test_a_burst_that_reaches_the_replica_over_seconds_loads_few_models_again(rate, most):
    # At 20 requests a second a model is asked for every ~0.6 s: evicted in such a gap, it is
    # loaded again for its next request (43-61 loads over 12 models before, 33-41 now; the span
    # is 10 s, so turns of ~1.5 s rotate each model through its slot about three times).
    loads, tail = asyncio.run(_trickle(rate, seed=0))
    assert loads <= most
    assert tail < 6  # the waiting models got their turns once the burst was in


def test_a_slow_first_load_does_not_give_its_model_a_long_turn():
    async def cold():
        times = iter([1.5, 0.02, 0.02])  # the replica's first load also imports the model's code
        replica = Replica(capacity=3)

        async def load(name):
            replica.load_s = next(times)
            return await replica.load(name)

        turns = Turns(3, load, replica.touch)
        for name in "abc":
            await _request(turns, replica, name, 0.01)
        return turns

    turns = asyncio.run(cold())
    # a's turn is 20 x the replica's median load (under the minimum of 1 s), not 20 x 1.5 s
    assert turns._turn_s(turns._held["a"]) == TURN_MIN_S


def test_a_model_with_steady_traffic_yields_its_slot_after_its_turn():
    async def steady():
        replica = Replica(capacity=1)
        turns = Turns(1, replica.load, replica.touch, turn_s=0.2)
        stop = asyncio.Event()

        async def hot():  # a client that always has a request for model a
            while not stop.is_set():
                await _request(turns, replica, "a", 0.01)

        clients = [asyncio.create_task(hot()) for _ in range(4)]
        await asyncio.sleep(0.05)
        started = asyncio.get_running_loop().time()
        await asyncio.wait_for(_request(turns, replica, "b", 0.01), 5)
        waited = asyncio.get_running_loop().time() - started
        stop.set()
        await asyncio.gather(*clients)
        return waited, replica

    waited, replica = asyncio.run(steady())
    assert waited < 1.0  # b got its turn after a's 0.2 s, not never
    assert replica.loads[:2] == ["a", "b"]


def test_a_model_that_fails_to_load_fails_its_waiters_and_frees_its_slot():
    async def failing():
        replica = Replica(capacity=1, broken={"bad"})
        turns = Turns(1, replica.load, replica.touch)
        results = await asyncio.gather(
            *(_request(turns, replica, n, 0.01) for n in ["bad", "bad", "good", "bad"]),
            return_exceptions=True,
        )
        again = await asyncio.gather(_request(turns, replica, "bad", 0), return_exceptions=True)
        return results, again, turns

    results, again, turns = asyncio.run(failing())
    assert [type(r).__name__ for r in results] == ["RuntimeError"] * 2 + ["str", "RuntimeError"]
    assert isinstance(again[0], RuntimeError)  # a later request tries the load again
    assert turns.held() == []  # "good" made way for the second try, which failed too


def test_a_waiting_request_that_is_cancelled_leaves_no_trace():
    async def cancelled():
        replica = Replica(capacity=1)
        turns = Turns(1, replica.load, replica.touch)
        busy = asyncio.create_task(_request(turns, replica, "a", 0.2))
        await asyncio.sleep(0.05)
        gone = asyncio.create_task(_request(turns, replica, "b", 0.01))
        await asyncio.sleep(0.01)
        gone.cancel()
        with pytest.raises(asyncio.CancelledError):
            await gone
        await busy
        assert turns.waiting() == {}
        await _request(turns, replica, "c", 0.01)  # the slot went to the next model
        return replica

    assert asyncio.run(cancelled()).loads == ["a", "c"]


def test_capacity_is_at_least_one():
    with pytest.raises(ValueError, match="at least one model"):
        Turns(0, lambda name: None)
