"""The store (and Tune's storage) on a real S3-compatible server started on loopback (moto)."""

import json
import os
import socket
import time
from pathlib import Path

import helpers
import pytest

from mlit.store import artifacts as store_mod
from mlit.store.artifacts import COMPLETE, Store


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    with helpers.s3_server("mlit-test") as bucket:
        yield bucket


def _model_dir(tmp_path: Path) -> Path:
    d = tmp_path / "model"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"max_position_embeddings": 64}))
    (d / "weights.bin").write_bytes(os.urandom(2048))
    return d


def test_records_write_list_and_read(s3):
    st = Store(f"{s3}/records-test")
    assert st.get("verdicts", "abc123") is None
    st.put("verdicts", "abc123", {"choice": 1})
    st.put("verdicts", "abd999", {"choice": 2})
    assert st.get("verdicts", "abc123") == {"choice": 1}
    assert st.keys("verdicts") == ["abc123", "abd999"]
    assert not st.is_local


def test_models_publish_atomically_list_read_and_resume(s3, tmp_path):
    st = Store(f"{s3}/models-test")
    local = _model_dir(tmp_path)
    # An attempt that died mid-upload: files but no completion marker. It is not a model.
    fs, base = store_mod.filesystem(st.model_uri("k1"))
    fs.create_dir(base)
    with fs.open_output_stream(f"{base}/config.json") as fh:
        fh.write(b"{}")
    assert not st.has_model("k1") and st.model_keys() == []
    # Publishing again (the resume) replaces the leftovers and completes.
    st.publish_model(local, "k1", {"mixture": "mono-en"})
    assert st.has_model("k1") and st.model_keys() == ["k1"]
    info = st.model_info("k1")
    assert info["mixture"] == "mono-en"
    assert set(info["files"]) == {"config.json", "weights.bin"}  # sizes and sha256s, verified
    assert st.model_problem("k1") is None
    got = st.local_model_dir("k1", cache=tmp_path / "cache")
    assert (got / "weights.bin").read_bytes() == (local / "weights.bin").read_bytes()
    assert (got / COMPLETE).exists()
    # The marker is uploaded last: every other file is there once it exists.
    listed = {
        i.path.rsplit("/", 1)[1] for i in fs.get_file_info(helpers.fs_selector(st.model_uri("k1")))
    }
    assert {"config.json", "weights.bin", COMPLETE} <= listed


def test_leases_on_s3_are_conditional_writes(s3, monkeypatch):
    from mlit.store import leases

    store = Store(f"{s3}/leased")
    with leases.Leases(store) as first, leases.Leases(store) as second:
        assert first.acquire("k1")
        assert not second.acquire("k1") and second.held_elsewhere("k1")  # If-None-Match refused
        first.release("k1")
        assert second.acquire("k1")
        monkeypatch.setattr(leases, "TTL_S", 1.0)
        time.sleep(1.5)  # the holder "died": it stopped renewing
        assert first.acquire("k1")


def test_tune_storage_on_s3(s3, ray_session):
    from ray import tune

    fs, path = store_mod.filesystem(f"{s3}/tune")

    def trainable(config):
        tune.report({"x": config["x"] * 2})

    tuner = tune.Tuner(
        trainable,
        param_space={"x": tune.grid_search([1, 2])},
        run_config=tune.RunConfig(
            name="s3-check", storage_path=path, storage_filesystem=fs, verbose=0
        ),
    )
    results = tuner.fit()
    assert sorted(r.metrics["x"] for r in results) == [2, 4]
    assert any(
        i.path.endswith("experiment_state") or "s3-check" in i.path
        for i in fs.get_file_info(helpers.fs_selector(f"{s3}/tune"))
    )


def test_mlit_serve_serves_a_model_from_the_s3_store(s3, ray_session, tiny_base):
    """`mlit serve --store s3://...`: every model of the store, downloaded through the store's one
    download cache (which honours AWS_ENDPOINT_URL), answers through the OpenAI API."""
    import httpx

    from mlit.serving import app as serving

    st = Store(f"{s3}/serve-test")
    st.publish_model(tiny_base, "abcdef0123456789", {"mixture": "mono-en"})
    models = serving.collect_models(None, st.root, [])
    assert models == {"mono-en-abcdef01": st.model_uri("abcdef0123456789")}
    port = _port()
    url = serving.start(serving.ServeConfig(models=models, port=port))
    try:
        listed = httpx.get(f"{url}/v1/models", timeout=60).json()
        assert [m["id"] for m in listed["data"]] == ["mono-en-abcdef01"]
        reply = httpx.post(
            f"{url}/v1/completions",
            timeout=120,
            json={"model": "mono-en-abcdef01", "prompt": "Hello", "max_tokens": 4, "seed": 1},
        )
        assert reply.status_code == 200, reply.text
        assert reply.json()["usage"]["completion_tokens"] >= 1
    finally:
        serving.stop()
