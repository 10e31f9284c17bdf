"""Stored models checked where their bytes are (issue 48): a rerun on S3 sends no weight file,
a same-size overwrite in the store is found with or without a local copy, a damaged download is
replaced and never makes a model train again, the download cache keeps to its limit, a local
store hashes a file once while it is unchanged, and each model is checked once per process."""

import json
import os
import re
import time
from pathlib import Path

import boto3
import helpers
import pytest
from click.testing import CliRunner

from mlit.cli.main import app
from mlit.store import artifacts, checksums, downloads
from mlit.store.artifacts import Store

WEIGHTS = "model.safetensors"


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """moto behind 15 ms of latency (each request), its request log kept."""
    log = tmp_path_factory.mktemp("moto") / "requests.log"
    with helpers.s3_server("mlit-bytes", log=log, latency_ms=15) as bucket:
        yield bucket, log


@pytest.fixture(autouse=True)
def fresh_process(tmp_path, monkeypatch):
    """A new machine for each test: an empty home (download cache, digest cache), and nothing
    remembered of earlier checks."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MLIT_DIGEST_CACHE", str(tmp_path / "home" / "digests.json"))


def _model(folder: Path, size: int = 1 << 20) -> Path:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"max_position_embeddings": 64}))
    (folder / WEIGHTS).write_bytes(os.urandom(size))
    return folder


def _weight_gets(log: Path, since: int) -> list[str]:
    lines = log.read_text(errors="replace").splitlines()[since:]
    return [line for line in lines if re.search(rf'"GET [^"]*{WEIGHTS}', line)]


def _log_lines(log: Path) -> int:
    return len(log.read_text(errors="replace").splitlines())


def _overwrite_64_bytes(uri: str) -> None:
    """64 bytes of a stored file replaced, the object's size unchanged (a plain PUT)."""
    bucket, _, key = uri[len("s3://") :].partition("/")
    client = boto3.client("s3")
    body = bytearray(client.get_object(Bucket=bucket, Key=key)["Body"].read())
    body[100:164] = os.urandom(64)
    client.put_object(Bucket=bucket, Key=key, Body=bytes(body))


def test_a_rerun_on_s3_checks_every_model_without_fetching_a_weight_file(s3, tmp_path):
    bucket, log = s3
    store = Store(f"{bucket}/rerun")
    keys = [f"k{i}" for i in range(4)]
    for key in keys:
        store.publish_model(_model(tmp_path / key), key, {"mixture": key})
    assert all(w.get("etag") for w in store.model_info("k0")["files"].values())
    since = _log_lines(log)
    start = time.perf_counter()
    assert store.check_models(keys) == {}  # what the training phase asks before it skips
    took = time.perf_counter() - start
    assert _weight_gets(log, since) == [], "a weight file was downloaded to check it"
    assert took < 10, took
    assert not downloads.root().exists()  # nothing downloaded at all
    # What a sweep writes into models.json for the serving phase: where the model is, not a copy.
    assert store.model_uri("k0").startswith("s3://")


def test_a_same_size_overwrite_in_the_store_is_found_with_or_without_a_local_copy(
    s3, tmp_path, monkeypatch
):
    bucket, _ = s3
    root = f"{bucket}/overwrite"
    store = Store(root)
    for key in ("good", "bad"):
        store.publish_model(_model(tmp_path / key), key, {"mixture": key})
    store.local_model_dir("bad")  # a machine that downloaded it before the overwrite
    _overwrite_64_bytes(f"{store.model_uri('bad')}/{WEIGHTS}")
    for copy in ("with a local copy", "without"):
        out = CliRunner().invoke(app, ["store", "verify", "--store", root])
        assert out.exit_code == 1, (copy, out.output)
        assert f"models/bad: {WEIGHTS} changed since it was published" in out.output, copy
        assert "models/good" not in out.output
        assert store.check_models(["good", "bad"]).keys() == {"bad"}  # retrained: only that one
        monkeypatch.setenv("HOME", str(tmp_path / "another-machine"))
    # The stale copy is not served: the store's object changed, so the next use downloads
    # again, and the store's damaged bytes do not pass the manifest.
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    with pytest.raises(downloads.DownloadError, match=f"{WEIGHTS} does not match"):
        store.local_model_dir("bad")


def test_a_damaged_download_is_replaced_and_never_retrains_a_model(s3, tmp_path):
    bucket, log = s3
    root = f"{bucket}/download"
    store = Store(root)
    local = _model(tmp_path / "m")
    store.publish_model(local, "m", {"mixture": "m"})
    copy = store.local_model_dir("m")
    since = _log_lines(log)
    assert store.local_model_dir("m") == copy and _weight_gets(log, since) == []  # reused
    with open(copy / WEIGHTS, "r+b") as fh:  # a bit flipped on this node's disk
        fh.seek(10)
        fh.write(b"\xff")
    out = CliRunner().invoke(app, ["store", "verify", "--store", root])
    assert out.exit_code == 1 and f"download {copy}" in out.output, out.output
    assert store.check_models(["m"]) == {}  # the store's model is whole: nothing to retrain
    since = _log_lines(log)
    again = store.local_model_dir("m")  # the next use replaces it
    assert len(_weight_gets(log, since)) == 1
    assert (again / WEIGHTS).read_bytes() == (local / WEIGHTS).read_bytes()
    # A model republished under its key (after `verify --repair`) is fetched anew, not the
    # copy of the old one.
    store.delete_model("m")
    store.publish_model(_model(tmp_path / "m2"), "m", {"mixture": "m"})
    assert (store.local_model_dir("m") / WEIGHTS).read_bytes() == (
        tmp_path / "m2" / WEIGHTS
    ).read_bytes()
    assert CliRunner().invoke(app, ["store", "verify", "--store", root]).exit_code == 0


def test_the_download_cache_keeps_to_its_limit_dropping_the_least_recently_used(
    s3, tmp_path, monkeypatch
):
    bucket, _ = s3
    store = Store(f"{bucket}/evict")
    for key in ("a", "b", "c"):
        store.publish_model(_model(tmp_path / key), key, {"mixture": key})
    monkeypatch.setenv("MLIT_DOWNLOAD_CACHE_GB", str(2.5 * (1 << 20) / 1e9))  # two models fit
    a = store.local_model_dir("a")
    b = store.local_model_dir("b")
    time.sleep(0.01)
    store.local_model_dir("a")  # used again: b is now the least recently used
    c = store.local_model_dir("c")
    assert a.exists() and c.exists() and not b.exists()
    monkeypatch.setenv("MLIT_DOWNLOAD_CACHE_GB", "lots")
    with pytest.raises(ValueError, match="MLIT_DOWNLOAD_CACHE_GB='lots' is not a number"):
        store.local_model_dir("b")


def test_a_local_store_hashes_a_model_once_while_its_files_are_unchanged(tmp_path, monkeypatch):
    store = Store(str(tmp_path / "store"))
    store.publish_model(_model(tmp_path / "m", 2 << 20), "m", {"mixture": "m"})
    weights = Path(store.model_uri("m")) / WEIGHTS
    hashed = []
    real = checksums.file_digest
    monkeypatch.setattr(checksums, "file_digest", lambda p: hashed.append(p.name) or real(p))
    assert store.check_models(["m"]) == {}
    first = hashed.count(WEIGHTS)
    assert store.check_models(["m"]) == {} and hashed.count(WEIGHTS) == first  # from the cache
    # A change that put the file's stamp back (size, mtime, inode) is past what the cache can
    # see; `mlit store verify` reads every file again and finds it.
    stamp = weights.stat()
    with open(weights, "r+b") as fh:
        fh.seek(5)
        fh.write(b"\x00\x01")
    os.utime(weights, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))
    out = CliRunner().invoke(app, ["store", "verify", "--store", store.root])
    assert out.exit_code == 1 and f"{WEIGHTS} does not match its sha256" in out.output
    # A same-size edit as it happens (its mtime changes): hashed again before reuse, and found.
    with open(weights, "r+b") as fh:
        fh.seek(9)
        fh.write(b"\x02")
    assert "does not match its sha256" in store.check_models(["m"])["m"]


def test_each_model_is_checked_once_per_paper_run_however_many_experiments_share_it(
    tmp_path, monkeypatch
):
    store = Store(str(tmp_path / "store"))
    for key in ("shared", "other"):
        store.publish_model(_model(tmp_path / key), key, {"mixture": key})
    checked = []
    real = Store.model_problem
    monkeypatch.setattr(
        Store,
        "model_problem",
        lambda self, k, *a, **kw: checked.append(k) or real(self, k, *a, **kw),
    )
    with artifacts.shared_checks():  # what `sweeps/paper.py` runs its experiments in
        for experiment in (["shared", "other"], ["shared"], ["other", "shared"]):
            assert store.check_models(experiment) == {}
        assert sorted(checked) == ["other", "shared"]
        store.delete_model("other")  # what was published again is checked again
        store.publish_model(_model(tmp_path / "again"), "other", {"mixture": "other"})
        checked.clear()
        store.check_models(["shared", "other"])
        assert checked == ["other"]
    checked.clear()
    store.check_models(["shared"])  # a later run checks again: it must see what changed since
    assert checked == ["shared"]


def test_a_model_published_before_etags_is_hashed_once_then_vouched_for_by_the_store(s3, tmp_path):
    bucket, log = s3
    store = Store(f"{bucket}/legacy")
    store.publish_model(_model(tmp_path / "old"), "old", {"mixture": "old"})
    info = store.model_info("old")  # as an earlier mlit wrote it: sizes and sha256s only
    files = {
        rel: {k: v for k, v in want.items() if k != "etag"} for rel, want in info["files"].items()
    }
    store._write_atomic(
        store._path("models", "old", artifacts.COMPLETE),
        json.dumps({**info, "files": files}).encode(),
    )
    since = _log_lines(log)
    assert store.check_models(["old"]) == {}
    assert len(_weight_gets(log, since)) == 1  # downloaded and hashed, once
    assert all(w.get("etag") for w in store.model_info("old")["files"].values())
    since = _log_lines(log)
    assert store.check_models(["old"]) == {} and _weight_gets(log, since) == []
