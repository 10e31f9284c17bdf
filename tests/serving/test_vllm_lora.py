"""LoRA models served through vLLM's multi-LoRA: every adapter of one base on one engine, each
scoring text as its merged weights do (`make test-vllm`)."""

import shutil

import httpx
import pytest

from mlit.plumbing.ports import free_port
from mlit.serving import app as serving
from mlit.training import trainer
from mlit.training.trainer import TrainConfig

DATA = [
    ("Name a colour.", "Blue is a colour."),
    ("Name a fruit.", "An apple is a fruit."),
    ("Name an animal.", "A cat is an animal."),
    ("Name a city.", "Paris is a city."),
]
TEXT = "Name a fruit. An apple is a fruit, and a cat is an animal."


def _loglik(url: str, model: str) -> float:
    """The log-likelihood of TEXT under a served model (echoed prompt log-probabilities)."""
    body = {"model": model, "prompt": TEXT, "echo": True, "logprobs": 1, "max_tokens": 1}
    r = httpx.post(f"{url}/v1/completions", json=body, timeout=300)
    assert r.status_code == 200, r.text
    lps = r.json()["choices"][0]["logprobs"]["token_logprobs"]
    return sum(lp for lp in lps[1:-1] if lp is not None)  # the prompt's tokens, not the new one


@pytest.mark.vllm
def test_lora_models_share_their_base_engine_and_match_their_merged_weights(
    ray_session, tiny_base, tmp_path
):
    from ray import serve

    from mlit.planning import engine_choice
    from mlit.serving.engines import vllm

    try:
        engine_choice.python()
    except ValueError as err:
        pytest.skip(str(err))
    cfg = TrainConfig.demo(max_steps=6, eval_every=3, lora_rank=4, dev_max_new_tokens=8)
    a, b = tmp_path / "lora-a", tmp_path / "lora-b"
    trainer.train_model(str(tiny_base), DATA * 2, DATA[:2], cfg, a)
    trainer.train_model(str(tiny_base), DATA[::-1] * 3, DATA[:2], cfg, b)
    merged = tmp_path / "a-merged"  # lora-a without its adapter: served from its merged weights
    shutil.copytree(a, merged, ignore=shutil.ignore_patterns("adapter"))
    models = {"lora-a": str(a), "lora-b": str(b), "a-merged": str(merged), "base": str(tiny_base)}
    loras = vllm.lora_targets(models)
    assert {n: (x.base, x.rank) for n, x in loras.items()} == {
        "lora-a": (str(tiny_base), 4),
        "lora-b": (str(tiny_base), 4),
        "base": (str(tiny_base), 0),  # the base itself runs on that engine, without an adapter
    }

    cfg = serving.ServeConfig(models=models, port=free_port(), num_cpus=1, engine="vllm")
    url = serving.start(cfg)
    try:
        scores = {name: _loglik(url, name) for name in models}
        stats = httpx.get(f"{url}/v1/stats", timeout=30).json()
    finally:
        serving.stop()
        serve.shutdown()
    # Two engines for four models: the base's (both adapters and the base) and the merged copy's.
    assert stats["engine_starts"] == {f"base:{tiny_base}": 1, "model:a-merged": 1}
    assert scores["lora-a"] == pytest.approx(scores["a-merged"], abs=1e-3)
    assert abs(scores["lora-a"] - scores["lora-b"]) > 1e-3  # each request got its own adapter
    assert abs(scores["lora-a"] - scores["base"]) > 1e-3
