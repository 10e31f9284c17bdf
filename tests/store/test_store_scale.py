"""The store at paper scale (issue 23): records in segments, read in bulk and written off the
event loop, on a real S3 server (moto) behind a proxy that adds latency to every request, with
instant model endpoints on loopback; damage, old stores, compaction races and kill -9."""

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import helpers
import pytest
from click.testing import CliRunner

from mlit.cli.main import app
from mlit.generation import answer_client
from mlit.generation.answer_client import Client, SamplingParams, Task
from mlit.store import record_writer, segments, upkeep
from mlit.store.artifacts import Store

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
import loopback  # noqa: E402

PARAMS = SamplingParams(max_tokens=64)


def _tasks(n: int, tag: str = "t") -> list[Task]:
    return [Task("m", "k" * 24, f"{tag}{i}", "en", f"Instruction {tag}{i}") for i in range(n)]


@pytest.fixture(scope="module")
def chat():
    proc, port = loopback.start("chat")
    yield port
    proc.terminate()


@pytest.fixture(scope="module")
def slow_s3():
    """A bucket on moto behind a proxy adding 50 ms to every request: (root URI, proxy port)."""
    moto, moto_port = loopback.start_moto("scale-test")
    proxy, port = loopback.start("proxy", str(moto_port), "--ms", "50")
    old = {k: os.environ.get(k) for k in loopback.s3_env(port)}
    loopback.use_s3(port)
    yield "s3://scale-test", port
    for proc in (proxy, moto):
        proc.terminate()
    for k, v in old.items():
        os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)


def _answered(port: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/count") as resp:
        return json.loads(resp.read())["answered"]


# 1-2. Bulk checks, writes off the event loop, the table written once ---------------------------


def test_a_phase_on_slow_object_storage_neither_reads_nor_writes_record_by_record(
    chat, slow_s3, tmp_path
):
    """At 50 ms a request, one request per record would take 20 s for 400 answers (writes) and
    20 s for the rerun's check (reads). Bulk reads and segment writes take a few requests."""
    store = Store(f"{slow_s3[0]}/phase")
    tasks, saved = _tasks(400), []
    start = time.perf_counter()
    first = answer_client.generate(
        tasks, Client(f"http://127.0.0.1:{chat}"), store, PARAMS, saved.append
    )
    took = time.perf_counter() - start
    assert (first["status"] == "ok").all() and took < 8, f"{took:.1f} s for 400 answers"
    assert len(saved) == 1  # the run folder's table: once, at the end, never on a timer
    start = time.perf_counter()
    _, hits = answer_client.stored_answers(tasks, PARAMS, store)
    check = time.perf_counter() - start
    assert hits.height == 400 and check < 2, f"the rerun's check took {check:.1f} s"
    before = _answered(chat)
    again = answer_client.generate(tasks, Client(f"http://127.0.0.1:{chat}"), store, PARAMS)
    assert again["cached"].all() and _answered(chat) == before
    assert again.drop("cached", "latency_s").equals(first.drop("cached", "latency_s"))


def test_fast_generation_keys_are_the_keys_of_every_earlier_store():
    tasks = [
        Task("m", "k1", "e1", "ru", 'Привет "мир" \\ {x}\n\t\x01 ✓'),
        Task("n", "k2", "e2", "zh", "你好"),
    ]
    for engine in ("hf", "vllm"):
        want = [answer_client.generation_key(t, PARAMS, engine) for t in tasks]
        assert answer_client.generation_keys(tasks, PARAMS, engine) == want


# 3. Segments: integrity, damage, repair, old stores, compaction ---------------------------------


def _segment_files(root: Path, kind: str) -> list[Path]:
    return sorted((root / "segments" / kind).glob("*.parquet"))


def test_an_edited_segment_loses_only_its_damaged_records_reported_once(tmp_path, capsys):
    import pyarrow as pa
    import pyarrow.parquet as pq

    store = Store(str(tmp_path))
    with store.writer("verdicts") as writer:
        for i in range(5):
            writer.put(f"key{i}", {"choice": 1 + i % 2})
    (segment,) = _segment_files(tmp_path, "verdicts")
    table = pq.read_table(segment)
    docs = table.column("doc").to_pylist()
    docs[2] = docs[2].replace('"choice":1', '"choice":2')  # an edit: the record's sha fails
    pq.write_table(pa.table({"key": table.column("key"), "doc": docs}), segment)
    found = store.records("verdicts", [f"key{i}" for i in range(5)])
    assert sorted(found) == ["key0", "key1", "key3", "key4"]
    assert store.records("verdicts") and store.get("verdicts", "key2") is None
    err = capsys.readouterr().err
    assert err.count(str(segment)) == 1 and "1 of 5 records damaged" in err
    out = CliRunner().invoke(app, ["store", "verify", "--store", str(tmp_path), "--repair"])
    assert out.exit_code == 0 and "1 of 5 records damaged" in out.stdout and "deleted" in out.stdout
    assert sorted(store.keys("verdicts")) == ["key0", "key1", "key3", "key4"]
    clean = CliRunner().invoke(app, ["store", "verify", "--store", str(tmp_path)])
    assert clean.exit_code == 0 and "all good" in clean.stdout


def test_a_store_of_the_one_file_layout_is_read_and_compacted_into_segments(tmp_path):
    for i in range(3):
        helpers.legacy_put(tmp_path, "generations", f"old{i}", {"response": f"r{i}"})
    store = Store(str(tmp_path))
    with store.writer("generations") as writer:
        writer.put("new0", {"response": "n0"})
    want = {"old0": "r0", "old1": "r1", "old2": "r2", "new0": "n0"}
    assert {k: v["response"] for k, v in store.records("generations").items()} == want
    out = CliRunner().invoke(app, ["store", "compact", "--store", str(tmp_path)])
    assert out.exit_code == 0, out.output
    assert not list((tmp_path / "records").rglob("*.json"))
    assert len(_segment_files(tmp_path, "generations")) == 1
    assert {k: v["response"] for k, v in store.records("generations").items()} == want


def test_a_reader_racing_a_compaction_finds_every_record(tmp_path, monkeypatch):
    store = Store(str(tmp_path))
    for i in range(4):  # four small segments, as four short runs leave them
        store.put("verdicts", f"k{i}", {"choice": 1})
    real, raced = segments.read_segment, []

    def compact_first(*args, **kwargs):
        if not raced:  # another process merges everything just after this one listed
            raced.append("merging")
            with monkeypatch.context() as m:
                m.setattr(segments, "read_segment", real)
                raced.append(upkeep.compact(store, "verdicts", at=2))
        return real(*args, **kwargs)

    monkeypatch.setattr(segments, "read_segment", compact_first)
    assert sorted(store.records("verdicts")) == ["k0", "k1", "k2", "k3"]
    assert raced == ["merging", 4] and len(_segment_files(tmp_path, "verdicts")) == 1


def test_two_writers_filing_the_same_records_are_read_once(tmp_path):
    store = Store(str(tmp_path))
    for _ in range(2):  # two sweeps sharing the store answered the same tasks
        with store.writer("generations") as writer:
            writer.put("same", {"response": "x"})
            writer.put("other", {"response": "y"})
    frame = store.record_frame("generations", ["same", "other"], {"response": str})
    assert sorted(frame["key"]) == ["other", "same"]


def test_a_write_that_fails_stops_the_phase_and_leaves_no_partial_segment(tmp_path):
    from helpers import fill_disk, tmpfs

    with tmpfs(tmp_path / "disk", "1m") as disk:
        fill_disk(disk)
        store = Store(str(disk))
        writer = store.writer("generations", flush_s=0.05)
        writer.put("a", {"response": "x" * 300_000})
        time.sleep(0.5)
        with pytest.raises(OSError) as err:
            writer.put("b", {"response": "y"})
        assert "segments/generations" in str(err.value.filename)
        with pytest.raises(OSError):
            writer.close()
        assert not list(disk.rglob("*.tmp")) and not list(disk.rglob("*.parquet"))


# 4. kill -9 during generation on S3, then a rerun ---------------------------------------------

KILLED_RUN = """
import sys
from mlit.generation import answer_client
from mlit.generation.answer_client import Client, SamplingParams, Task
from mlit.store.artifacts import Store
tasks = [Task("m", "k" * 24, f"t{i}", "en", f"Instruction t{i}") for i in range(3000)]
answer_client.generate(tasks, Client(sys.argv[1], concurrency=8), Store(sys.argv[2]),
                  SamplingParams(max_tokens=64), progress=False)
"""


def test_kill_9_during_generation_on_s3_redoes_only_the_work_in_flight(slow_s3, tmp_path):
    """The killed process answered A tasks; the store kept S of them. The rerun asks exactly the
    3000 - S others; what was lost is at most the last flush interval plus the requests in
    flight, and `store verify` finds nothing damaged."""
    slow, port = loopback.start("chat", "--delay", "0.02")  # ~400 answers/s at 8 in flight
    try:
        root, url = f"{slow_s3[0]}/killed", f"http://127.0.0.1:{port}"
        store = Store(root)
        proc = subprocess.Popen([sys.executable, "-c", KILLED_RUN, url, root], cwd=ROOT)
        deadline = time.time() + 60
        while len(segments.segments(store, "generations")) < 2:
            assert time.time() < deadline and proc.poll() is None, "no segment was written"
            time.sleep(0.2)
        time.sleep(0.7)  # in the middle of the next flush interval
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        answered, stored = _answered(port), len(store.keys("generations"))
        assert 0 < stored < 3000
        rate = 400  # answers a second, at most
        assert answered - stored <= 8 + rate * (record_writer.FLUSH_S + 0.5), (answered, stored)
        tasks = [Task("m", "k" * 24, f"t{i}", "en", f"Instruction t{i}") for i in range(3000)]
        out = answer_client.generate(
            tasks, Client(url, concurrency=8), store, PARAMS, progress=False
        )
        assert (out["status"] == "ok").all()
        assert _answered(port) - answered == 3000 - stored  # nothing stored is asked again
        found = store.verify()
        assert found.damaged == () and found.records == 3000
    finally:
        with contextlib.suppress(Exception):
            slow.terminate()
