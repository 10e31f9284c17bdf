"""Shared fixtures. Heavy stacks (Ray, torch) are imported only by the tests that need them."""

from __future__ import annotations

import os
from pathlib import Path

import polars as pl
import pytest

# Nothing in the test suite may reach a model hub; set before anything imports transformers or
# starts Ray (whose workers inherit this environment).
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")

from mlit.data import dataset

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="session")
def sample() -> pl.DataFrame:
    return dataset.sample()


def rows(*specs: tuple[str, str, str, str, str | None]) -> pl.DataFrame:
    """Tiny dataset from (example_id, lang, split, instruction, response) tuples."""
    return dataset.from_records(dict(zip(dataset.COLUMNS, spec, strict=True)) for spec in specs)


TINY_DEMO = dict(
    vocab_size=1024,
    hidden_size=64,
    intermediate_size=128,
    num_layers=2,
    num_heads=2,
    context=256,
    pretrain_steps=40,
    batch_size=8,
    seq_len=64,
)


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory) -> Path:
    """A tiny demo-style base model (tokenizer trained on the sample, Llama config, short
    pretraining), built once per session in a few seconds."""
    from mlit.demo import base_model

    cfg = base_model.DemoModelConfig(**TINY_DEMO)
    return base_model.build_demo_model(
        tmp_path_factory.mktemp("base") / "tiny", cfg, progress=False
    )


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray instance for the whole test session: 2 CPUs like the target machine, and 2
    fake GPUs (Ray does not check them) for the resource-arbitration tests; no test puts work
    on them that needs CUDA."""
    import ray

    from mlit.plumbing import ingress

    if not ray.is_initialized():
        os.environ.setdefault("MLIT_BODY_TIMEOUT_S", "4")  # slow uploads time out within a test
        ingress.install()
        ray.init(num_cpus=2, num_gpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture()
def endpoint():
    """A scripted OpenAI-compatible server on loopback (tests/judge_server.py): (script, url)."""
    from judge_server import Script, start

    script = Script()
    server, url = start(script)
    yield script, url
    server.shutdown()
