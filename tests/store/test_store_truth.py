"""The store's truth: keys cover content, stored models are verified before reuse, sweeps sharing
a store cooperate, a judge that refuses is stopped at once, disk failures are one line, a run
folder holds one run, `store verify` checks records against their keys, and data that cannot
run is refused before compute. One test per point of issue 29 (the end-to-end ones are slow)."""

import json
import multiprocessing
import os
import subprocess
import sys
import time
from pathlib import Path

import helpers
import polars as pl
import pytest
from click.testing import CliRunner
from helpers import fill_disk, tmpfs

from mlit.cli.main import app
from mlit.data import dataset
from mlit.judging import judge
from mlit.judging.judge import Judge, Pair
from mlit.planning import plan
from mlit.planning.config import SweepConfig
from mlit.results.run_folder import RunFolder
from mlit.store import leases, model_refs
from mlit.store.artifacts import Store, atomic_write
from mlit.sweep import pipeline, preflight, preview

ROOT = Path(__file__).resolve().parents[2]


_cfg = helpers.sweep_config


def _fake_base(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text('{"max_position_embeddings": 256}')
    (folder / "model.safetensors").write_bytes(bytes(range(256)) * 4096)  # 1 MiB: a "shard"
    return folder


def _model(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(bytes(range(256)) * 8)
    return folder


# 1. Every key covers the content that determines the artifact --------------------------------


def test_changed_training_text_with_the_same_ids_is_a_new_model(tmp_path, sample):
    base = _fake_base(tmp_path / "base")
    store = Store(str(tmp_path / "store"))
    first = plan.prepare(_cfg(tmp_path, base_model=str(base)))
    for m in first.mixtures:  # as if the first run had trained every model
        store.publish_model(_model(tmp_path / "m" / m.name), first.key_of[m.name], {})
    assert "models to train: 0 new" in preview.describe(first, store)

    changed = sample.with_columns(
        response=pl.when(pl.col("split") == "train")
        .then(pl.lit("I do not know."))
        .otherwise(pl.col("response"))
    )
    path = dataset.save(changed, tmp_path / "changed.jsonl")
    second = plan.prepare(_cfg(tmp_path, base_model=str(base), data=str(path)))
    assert [m.hash for m in second.mixtures] == [m.hash for m in first.mixtures]  # same ids
    assert all(second.key_of[m.name] != first.key_of[m.name] for m in second.mixtures)
    described = preview.describe(second, store)
    assert "models to train: 3 new, 0 stored" in described
    assert all(f"{m.hash} new" in described for m in second.mixtures)


def test_a_same_size_change_to_a_base_shard_or_its_chat_template_is_a_new_base(
    tmp_path, monkeypatch
):
    monkeypatch.setenv("MLIT_DIGEST_CACHE", str(tmp_path / "digests.json"))
    base = _fake_base(tmp_path / "base")
    shard = base / "model-00001-of-00002.safetensors"  # a real shard's size: over 64 MiB
    shard.write_bytes(bytes(65 * 2**20))
    before = model_refs.identity(str(base))
    assert model_refs.identity(str(base)) == before  # from the digest cache, the same
    with open(shard, "r+b") as fh:  # one byte, same size
        fh.seek(2**20)
        fh.write(b"\x01")
    after = model_refs.identity(str(base))
    assert after != before
    (base / "tokenizer_config.json").write_text('{"chat_template": "{{ messages }}"}')
    assert model_refs.identity(str(base)) not in (before, after)


# 2. The judge probe runs on every run; a refusing judge stops at once --------------------------


def test_a_key_revoked_between_runs_is_found_at_preflight(endpoint, monkeypatch):
    script, url = endpoint
    script.refuse_after["revoked"] = 1  # the first run's probe is answered, then 401
    j = Judge("openai/revoked", api_base=url)
    preflight.probe(j)
    with pytest.raises(
        preflight.PreflightError, match=r"openai/revoked .*HTTP 401 \(unauthorized\)"
    ):
        preflight.probe(j)
    assert script.calls["revoked"] == 2  # nothing remembered: each run asks


def test_a_hung_judge_is_reported_at_preflight_within_30_s(endpoint):
    script, url = endpoint
    script.delay_s = 40
    start = time.time()
    with pytest.raises(preflight.PreflightError, match="timed out"):
        preflight.probe(Judge("openai/slow", api_base=url))
    assert time.time() - start < 30


def test_a_judge_answering_401_stops_judging_within_a_dozen_calls(endpoint, tmp_path):
    script, url = endpoint
    script.refuse_after["revoked"] = 3
    many = [
        Pair("c", "b", "en", f"e{i}", f"Q{i}?", "a good answer", "a poor one", "k1", "k2")
        for i in range(50)
    ]
    store = Store(str(tmp_path))
    with pytest.raises(judge.JudgeError, match=r"openai/revoked refused a call .*rejected"):
        judge.judge_pairs(many, Judge("openai/revoked", api_base=url, concurrency=32), store)
    assert script.calls["revoked"] <= 3 + 12  # not the 100 calls of the phase
    assert len(store.keys("verdicts")) <= 3  # what was answered is kept, nothing else


# 3. Stored models are verified (sha256) before they are skipped -------------------------------


def test_a_same_size_flip_in_a_stored_model_is_found_before_it_is_skipped(tmp_path, capsys):
    store = Store(str(tmp_path / "store"))
    store.publish_model(_model(tmp_path / "a"), "ka", {})
    store.publish_model(_model(tmp_path / "b"), "kb", {})
    weights = tmp_path / "store" / "models" / "kb" / "model.safetensors"
    weights.write_bytes(bytes(reversed(weights.read_bytes())))  # same size
    assert store.valid_model("kb")  # the size check cannot see it
    assert list(store.check_models(["ka", "kb", "kc"])) == ["kb"]
    assert str(weights.parent) in capsys.readouterr().err


# 4. Two sweeps sharing a store cooperate ------------------------------------------------------


def _hold_lease(root: str, key: str, seconds: float, ready) -> None:
    with leases.Leases(Store(root)) as held:
        assert held.acquire(key)
        ready.set()
        time.sleep(seconds)


def test_a_lease_is_held_by_one_sweep_and_waited_for_by_the_other(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    ready = ctx.Event()
    other = ctx.Process(target=_hold_lease, args=(str(tmp_path), "k1", 3.0, ready))
    other.start()
    assert ready.wait(60)
    store = Store(str(tmp_path))
    with leases.Leases(store) as held:
        assert not held.acquire("k1") and held.held_elsewhere("k1")
        start = time.time()
        held.wait_for(["k1"], store.has_model, poll_s=0.2)
        assert time.time() - start > 0.5  # waited for the holder to give it back
        assert held.acquire("k1")
    other.join()


def test_a_dead_holders_lease_is_taken_over(tmp_path, monkeypatch):
    store = Store(str(tmp_path))
    lock = tmp_path / "leases" / "k1.lock"
    lock.parent.mkdir()
    lock.write_text('{"pid": 1}')
    old = time.time() - leases.TTL_S - 5
    os.utime(lock, (old, old))  # its holder stopped renewing it long ago
    with leases.Leases(store) as held:
        assert held.acquire("k1")


def test_a_lease_of_a_killed_process_on_this_machine_is_taken_over_at_once(tmp_path):
    import signal
    import socket

    dead = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    dead.send_signal(signal.SIGKILL)
    dead.wait()
    lock = tmp_path / "leases" / "k1.lock"
    lock.parent.mkdir()
    lock.write_text(json.dumps({"host": socket.gethostname(), "pid": dead.pid}))
    with leases.Leases(Store(str(tmp_path))) as held:  # fresh, but its holder is gone
        assert not held.held_elsewhere("k1") and held.acquire("k1")


def test_publishing_never_replaces_a_model_another_sweep_published(tmp_path):
    store = Store(str(tmp_path / "store"))
    store.publish_model(_model(tmp_path / "first"), "k", {"by": "first"})
    served = tmp_path / "store" / "models" / "k" / "model.safetensors"
    inode = served.stat().st_ino
    store.publish_model(_model(tmp_path / "second"), "k", {"by": "second"})
    assert served.stat().st_ino == inode and store.model_info("k")["by"] == "first"


# 5. Disk failures: one line, rc 2, nothing partial ---------------------------------------------


def test_a_full_disk_leaves_no_partial_file_and_names_the_path(tmp_path):
    with tmpfs(tmp_path / "disk", "1m") as disk:
        fill_disk(disk)
        with pytest.raises(OSError) as err:
            atomic_write(disk / "records" / "a.json", "x" * 200_000)
        assert err.value.filename == str(disk / "records" / "a.json")
        assert not list(disk.rglob("*.tmp"))
        (disk / "filler").unlink()
        big = _model(tmp_path / "big")
        (big / "model.safetensors").write_bytes(os.urandom(1_500_000))  # more than the disk
        store = Store(str(disk / "store"))
        with pytest.raises(OSError):
            store.publish_model(big, "k", {})
        assert store.model_folders() == []  # no half-copied folder left


def _sweep_cmd(tiny_base, disk: Path) -> list[str]:
    return [
        sys.executable,
        str(ROOT / "sweeps" / "language_count.py"),
        "--base-model",
        str(tiny_base),
        "--languages",
        "fi,en,cs",
        "--store",
        str(disk / "store"),
        "--output",
        str(disk / "run"),
    ]


def test_a_sweep_on_a_full_disk_fails_in_one_line_with_nothing_partial(tmp_path, tiny_base):
    with tmpfs(tmp_path / "disk", "2m") as disk:
        filler = fill_disk(disk)
        done = subprocess.run(
            _sweep_cmd(tiny_base, disk), capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 2, done.stderr
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and "no space left on the device" in lines[0], done.stderr
        assert not [p for p in disk.rglob("*") if p.is_file() and p != filler]


# 6. A run folder holds one run ---------------------------------------------------------------


def test_report_refuses_a_folder_whose_files_come_from_two_runs(tmp_path):
    run = tmp_path / "run"
    cfg = SweepConfig(experiment="monolingual", judge="openai/old-judge")
    first = RunFolder(run, "run-a")
    first.start(cfg, "monolingual", {"mono-en": {"hash": "h"}})
    first.write_frame("judgments", pl.DataFrame({"verdict": ["win"]}))
    # A rerun into the same folder with another judge, stopped before its judge phase:
    second = RunFolder(run, "run-b")
    second.start(SweepConfig(experiment="monolingual", judge="openai/new-judge"), "mono", {})
    out = CliRunner().invoke(app, ["report", str(run)])
    assert out.exit_code == 2
    assert "mixes runs: judgments.parquet" in out.stderr
    assert json.loads((run / "run.json").read_text())["_run_id"] == "run-b"


# 7. store verify checks records against their keys and finds unfinished folders ---------------


def test_store_verify_finds_swapped_records_and_unfinished_model_folders(tmp_path):
    store = Store(str(tmp_path))
    a = helpers.legacy_put(tmp_path, "verdicts", "aa11", {"choice": 1})
    b = helpers.legacy_put(tmp_path, "verdicts", "bb22", {"choice": 2})
    a_text, b_text = a.read_text(), b.read_text()
    a.write_text(b_text)
    b.write_text(a_text)
    assert store.get("verdicts", "aa11") is None  # a swapped record is a miss, not a verdict
    (tmp_path / "models" / "no-marker").mkdir(parents=True)
    (tmp_path / "models" / "no-marker" / "config.json").write_text("{}")
    (tmp_path / "models" / "k.0123.tmp").mkdir()
    out = CliRunner().invoke(app, ["store", "verify", "--store", str(tmp_path)])
    assert out.exit_code == 1
    assert "verdicts aa11: record was made for key bb22" in out.stdout
    assert "verdicts bb22: record was made for key aa11" in out.stdout
    assert "without its _COMPLETE.json marker" in out.stdout
    assert "half-copied" in out.stdout


def test_store_verify_repair_on_a_read_only_store_says_what_it_could_not_delete(tmp_path):
    with tmpfs(tmp_path / "ro", "4m") as disk:
        path = helpers.legacy_put(disk, "verdicts", "aa11", {"choice": 1})
        path.write_text(path.read_text().replace('"choice": 1', '"choice": 2'))
        subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
        out = CliRunner().invoke(app, ["store", "verify", "--store", str(disk), "--repair"])
        assert out.exit_code == 2
        assert "NOT deleted" in out.stdout and "  -> deleted" not in out.stdout
        assert "read-only file system" in out.stderr


# 8. Data that cannot run is named before compute ----------------------------------------------


def test_undecodable_data_is_named_with_its_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    good = json.dumps(dict(zip(dataset.COLUMNS, ["e1", "en", "train", "Hi", "Hello"], strict=True)))
    path.write_bytes(good.encode() + b"\n" + b'{"instruction": "caf\xe9"}\n')
    with pytest.raises(dataset.DataError, match=r"bad\.jsonl:2: not valid UTF-8"):
        dataset.load(path)
    out = CliRunner().invoke(app, ["data", "validate", str(path)])
    assert out.exit_code == 2 and "bad.jsonl:2" in out.stderr


def test_instructions_longer_than_the_context_are_refused_before_compute(
    tmp_path, sample, tiny_base
):
    long = " ".join(["word"] * 400)
    frame = sample.with_columns(
        instruction=pl.when(
            (pl.col("split") == "eval") & (pl.col("example_id") == "sample-eval-01")
        )
        .then(pl.lit(long))
        .otherwise(pl.col("instruction"))
    )
    path = dataset.save(frame, tmp_path / "long.jsonl")
    out = CliRunner().invoke(
        app, ["data", "validate", str(path), "--base-model", str(tiny_base), "--max-tokens", "32"]
    )
    assert out.exit_code == 1 and "too_long: 17" in out.stdout  # the sample's 17 languages
    assert "sample-eval-01 [ar]" in out.stdout and "> the context of 256" in out.stdout
    # Sent whole (--prompt-tokens 0), they are refused before any compute.
    cfg = _cfg(tmp_path, base_model=str(tiny_base), data=str(path), prompt_tokens=0)
    assert cfg.sampling_params().max_tokens == 32  # the demo preset's: short prompts fit 256
    with pytest.raises(
        preflight.PreflightError, match=r"3 of \d+ evaluation instructions do not fit"
    ):
        pipeline.run_sweep(cfg)
    assert not (tmp_path / "run").exists()
    # Cut as training cuts them (the default: the training input limit), they fit.
    cut = plan.prepare(_cfg(tmp_path, base_model=str(tiny_base), data=str(path)))
    assert cut.prompt_limit == cut.train.max_input_tokens
    preflight.prompts_fit(cut)
