"""A Serve app split over shards (one model-server deployment per GPU in a sweep on GPUs), and
generation sending each shard its own models at the same time."""

import httpx
import pytest

from mlit.generation import answer_client
from mlit.plumbing.ports import free_port
from mlit.serving import app as serving
from mlit.store.artifacts import Store


def test_one_shard_per_gpu_at_most_one_per_model_and_one_on_cpu():
    assert serving.shards_for(1.0, 8, 57) == 8
    assert serving.shards_for(1.0, 8, 3) == 3
    assert serving.shards_for(0.0, 8, 57) == 1  # serving on CPU: one shard, as before
    assert serving.shards_for(0.5, 2, 57) == 4
    cfg = serving.ServeConfig(models={n: "x" for n in "abcde"}, shards=2)
    assert cfg.shard_of() == {"a": 0, "b": 1, "c": 0, "d": 1, "e": 0}
    with pytest.raises(ValueError, match="shards must be between 1 and the 2 models"):
        serving.ServeConfig(models={"a": "x", "b": "y"}, shards=3)


def test_requests_go_one_model_per_shard_and_the_shards_in_turn():
    tasks = [
        (answer_client.Task(m, m, f"e{i}", "en", "q"), f"{m}{i}") for m in "abcd" for i in range(3)
    ]
    lanes = {"a": 0, "b": 1, "c": 0, "d": 1}
    order = [t.model for t, _ in answer_client.in_lanes(tasks[::-1], lanes)]
    # a and b (the first model of each shard) interleave, then c and d.
    assert order == ["a", "b"] * 3 + ["c", "d"] * 3
    assert [t.model for t, _ in answer_client.in_lanes(tasks[::-1], None)] == sorted(order)


def test_a_sweep_on_gpus_serves_on_them():
    from mlit.planning import plan
    from mlit.planning.config import SweepConfig

    on_gpu = plan.prepare(
        SweepConfig(experiment="monolingual", dry_run=True, base_model="x/base", gpus_per_worker=1)
    )
    assert on_gpu.serving.gpus_per_replica == 1.0
    on_cpu = plan.prepare(SweepConfig(experiment="monolingual", dry_run=True, base_model="x/base"))
    assert on_cpu.serving.gpus_per_replica == 0.0


def test_two_shards_each_on_a_gpu_answer_their_own_models(ray_session, tiny_base, tmp_path):
    """The session's Ray has 2 fake GPUs: each shard's replica takes one (torch sees no CUDA, so
    the models run on CPU), and each model is loaded once, by its own shard."""
    import ray
    from ray import serve

    models = {name: str(tiny_base) for name in ("m-a", "m-b", "m-c", "m-d")}
    cfg = serving.ServeConfig(
        models=models, port=free_port(), num_cpus=0.5, num_gpus=1, shards=2, max_batch_size=8
    )
    url = serving.start(cfg)
    try:
        deployments = serve.status().applications[serving.APP_NAME].deployments
        assert {"ModelServer0", "ModelServer1"} <= set(deployments)
        assert ray.available_resources().get("GPU", 0) == 0  # both fake GPUs are held
        rows = [
            answer_client.Task(m, m, f"e{i}", "en", f"Say {i}.") for m in models for i in range(4)
        ]
        client = answer_client.Client(url, concurrency=8, lanes=cfg.shard_of())
        params = answer_client.SamplingParams(max_tokens=4)
        out = answer_client.generate(
            rows, client, Store(str(tmp_path / "store")), params, progress=False
        )
        assert (out["status"] == "ok").all() and out.height == 16
        stats = httpx.get(f"{url}/v1/stats", timeout=30).json()
        assert stats["shards"] == 2
        assert stats["loads"] == {name: 1 for name in models}
        assert stats["loads_by_shard"] == [{"m-a": 1, "m-c": 1}, {"m-b": 1, "m-d": 1}]
    finally:
        serving.stop()
        serve.shutdown()
