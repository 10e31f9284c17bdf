"""A sweep never reports success for work it did not do, never caches a failure, and checks what it
can before it spends compute. The faults come from a scripted OpenAI-compatible endpoint
(tests/judge_server.py) and from damage the tests do to the store."""

import json
import socket
import time
from dataclasses import replace

import helpers
import pytest

from mlit.judging import judge, judgments
from mlit.judging.judge import Judge, Pair
from mlit.planning.config import SweepConfig
from mlit.plumbing.heartbeat import heartbeat
from mlit.results import analysis
from mlit.results.run_folder import RunFolder, RunFolderError
from mlit.store.artifacts import Store
from mlit.store.checksums import verify_dir
from mlit.sweep import phases, pipeline, preflight


def pairs(n: int) -> list[Pair]:
    return [
        Pair("cand", "base", "en", f"ex{i}", f"Q{i}?", "a good answer", "a poor answer", "k1", "k2")
        for i in range(n)
    ]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# 1. A reply without choices is an error record, not a crash -------------------------------------


def test_a_reply_with_no_choices_is_an_error_not_a_crash(endpoint, tmp_path):
    _, url = endpoint
    store = Store(str(tmp_path))
    out = judge.judge_pairs(
        pairs(2), Judge("openai/no-choices", api_base=url), store, progress=False
    )
    assert out["verdict"].to_list() == ["error", "error"]
    assert "has no choices" in out["error"][0]
    assert store.keys("verdicts") == []


# 2. Unparseable replies and null content are never stored ---------------------------------------


def test_unparseable_and_null_replies_are_reasked_then_recorded_never_stored(endpoint, tmp_path):
    script, url = endpoint
    store = Store(str(tmp_path))
    mute = judge.judge_pairs(
        pairs(1), Judge("openai/mute", api_base=url, reasks=2), store, progress=False
    )
    assert mute["verdict"].to_list() == ["error"]
    assert "unparseable judge reply after 3 tries" in mute["error"][0]
    assert script.calls["mute"] == 2 * 3  # both orders, each asked three times
    null = judge.judge_pairs(
        pairs(1), Judge("openai/null-content", api_base=url), store, progress=False
    )
    assert "no content" in null["error"][0]
    assert store.keys("verdicts") == []
    # A judge that answers properly when asked again gives a verdict, and only that is stored.
    script.garbage_first = 1
    out = judge.judge_pairs(
        pairs(1),
        Judge("openai/garbage-first", api_base=url, concurrency=1),
        store,
        progress=False,
    )
    assert out["verdict"].to_list() == ["win"] and len(store.keys("verdicts")) == 2
    assert "asked again on the next run" in judgments.error_summary(mute)


def test_a_timeout_is_called_a_timeout(endpoint, tmp_path):
    script, url = endpoint
    script.delay_s = 2.0
    j = Judge("openai/slow", api_base=url, timeout_s=0.3, retries=0, patience_s=0)
    out = judge.judge_pairs(pairs(1), j, Store(str(tmp_path)), progress=False)
    assert "timed out" in out["error"][0] and "unreachable" not in out["error"][0]


# 4. The store verifies what it holds --------------------------------------------------------------


def test_damaged_and_edited_records_are_misses_reported_once_with_their_path(tmp_path, capsys):
    store = Store(str(tmp_path))  # records of the one-file layout of earlier stores
    cut = helpers.legacy_put(tmp_path, "generations", "aa11", {"response": "hello"})
    edited = helpers.legacy_put(tmp_path, "generations", "bb22", {"response": "world"})
    assert store.get("generations", "aa11") == {"response": "hello"}
    cut.write_bytes(cut.read_bytes()[: len(cut.read_bytes()) // 2] + b"\xff")
    edited.write_text(edited.read_text().replace("world", "WORLD"))
    assert store.get("generations", "aa11") is None and store.get("generations", "bb22") is None
    assert store.get("generations", "aa11") is None  # reported once
    err = capsys.readouterr().err
    assert err.count(str(cut)) == 1 and "treated as missing and redone" in err
    assert str(edited) in err and "sha256" in err
    # A record written before records carried a sha256 is still read.
    legacy = tmp_path / "records" / "generations" / "cc" / "cc33.json"
    legacy.parent.mkdir(parents=True)
    legacy.write_text(json.dumps({"response": "old"}))
    assert store.get("generations", "cc33") == {"response": "old"}


def test_models_carry_sha256s_and_damage_is_found_by_size_and_by_content(tmp_path):
    model = tmp_path / "m"
    model.mkdir()
    (model / "config.json").write_text("{}")
    (model / "model.safetensors").write_bytes(bytes(range(256)) * 8)
    store = Store(str(tmp_path / "store"))
    store.publish_model(model, "k1", {"mixture": "mono-en"})
    stored = tmp_path / "store" / "models" / "k1"
    assert store.valid_model("k1") and verify_dir(stored) is None
    weights = stored / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1024])  # cut in half
    assert not store.valid_model("k1")
    assert "model.safetensors is 1024 bytes, 2048 expected" in store.model_problem("k1")
    weights.write_bytes(bytes(2048))  # same size, other content: only a full check finds it
    assert store.valid_model("k1")
    assert "sha256" in verify_dir(stored)


def test_store_verify_reports_and_repairs(tmp_path):
    from click.testing import CliRunner

    from mlit.cli.main import app

    store = Store(str(tmp_path))
    helpers.legacy_put(tmp_path, "verdicts", "aa11", {"choice": 1})
    path = helpers.legacy_put(tmp_path, "verdicts", "bb22", {"choice": 2})
    path.write_text(path.read_text().replace('"choice": 2', '"choice": 1'))
    runner = CliRunner()
    found = runner.invoke(app, ["store", "verify", "--store", str(tmp_path)])
    assert found.exit_code == 1 and "damaged verdicts bb22" in found.stdout
    fixed = runner.invoke(app, ["store", "verify", "--store", str(tmp_path), "--repair"])
    assert fixed.exit_code == 0 and "deleted" in fixed.stdout
    assert store.keys("verdicts") == ["aa11"]
    again = runner.invoke(app, ["store", "verify", "--store", str(tmp_path)])
    assert again.exit_code == 0 and "all good" in again.stdout


# 7. Checks before compute ------------------------------------------------------------------------


_cfg = helpers.sweep_config


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"base_model": "/nonexistent/model"},
            "--base-model /nonexistent/model: no such directory",
        ),
        ({"base_model": "not a name!"}, "neither a local directory nor a hub name"),
        ({"judge_model_dir": "/nowhere/judge"}, "--judge-model-dir /nowhere/judge: no such"),
        (
            {"judge": "openai/x", "judge_api_key_env": "MLIT_TEST_UNSET_KEY"},
            "MLIT_TEST_UNSET_KEY is not set",
        ),
        (
            {"pretraining_shares": "/nowhere/shares.json"},
            "--pretraining-shares /nowhere/shares.json",
        ),
        (
            {"judge": "anthropic/claude-3-5-haiku", "judge_mode": "batch"},
            "--judge-mode batch: batch mode speaks the OpenAI-compatible files and batches",
        ),
    ],
)
def test_bad_inputs_stop_before_anything_is_written(tmp_path, tiny_base, change, message):
    cfg = _cfg(tmp_path, **{"base_model": str(tiny_base), **change})
    with pytest.raises(preflight.PreflightError) as err:
        pipeline.run_sweep(cfg)
    assert message in str(err.value)
    assert not (tmp_path / "run").exists()


def test_a_template_without_answer_2_is_refused_before_compute(tmp_path, tiny_base):
    template = tmp_path / "t.txt"
    template.write_text("Which is better? {instruction} {answer_1}")
    with pytest.raises(preflight.PreflightError, match=r"lacks \{answer_2\}"):
        pipeline.run_sweep(_cfg(tmp_path, base_model=str(tiny_base), judge_prompt=str(template)))
    assert not (tmp_path / "run").exists()


def test_a_judge_that_is_down_stops_the_sweep_before_training(tmp_path, tiny_base):
    port = _closed_port()
    cfg = _cfg(
        tmp_path,
        base_model=str(tiny_base),
        judge="openai/good",
        judge_api_base=f"http://127.0.0.1:{port}/v1",
    )
    start = time.time()
    with pytest.raises(preflight.PreflightError, match="did not answer a test prompt"):
        pipeline.run_sweep(cfg)
    assert time.time() - start < 60 and not (tmp_path / "run").exists()


def test_a_taken_port_and_an_unwritable_store_are_named(tmp_path, tiny_base):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        taken = s.getsockname()[1]
        with pytest.raises(preflight.PreflightError, match=f"--port {taken} is in use"):
            pipeline.run_sweep(_cfg(tmp_path, base_model=str(tiny_base), serve_port=taken))
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(preflight.PreflightError, match="cannot write there"):
        pipeline.run_sweep(_cfg(tmp_path, base_model=str(tiny_base), store=str(blocker / "s")))
    assert not (tmp_path / "run").exists()


# 8. Smaller holes ----------------------------------------------------------------------------------


def test_report_on_a_damaged_run_folder_names_the_file(tmp_path):
    from click.testing import CliRunner

    from mlit.cli.main import app

    run = tmp_path / "run"
    RunFolder(run).start(SweepConfig(experiment="monolingual"), "monolingual", {})
    (run / "judgments.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(RunFolderError, match=r"judgments\.parquet is damaged"):
        analysis.rebuild(run)
    out = CliRunner().invoke(app, ["report", str(run)])
    assert out.exit_code == 2 and "judgments.parquet is damaged" in out.stderr
    (run / "run.json").write_text('{"config": ')
    out = CliRunner().invoke(app, ["report", str(run)])
    assert out.exit_code == 2 and "run.json is damaged" in out.stderr


def test_progress_lines_when_output_is_not_a_terminal_spaced_out_as_the_phase_goes_on(
    monkeypatch, capsys
):
    """Issue 52: a log file stays short. The first line comes after MLIT_HEARTBEAT_S (a minute
    by default), each later one after twice the gap before: lines at 1, 3, 7, 15 gaps."""
    monkeypatch.setenv("MLIT_HEARTBEAT_S", "0.1")
    with heartbeat("generate"):
        time.sleep(1.2)  # 12 gaps: lines at 1, 3 and 7 gaps, not 12 (not 15 yet)
    lines = capsys.readouterr().err.count("[generate] still running")
    assert lines in (2, 3)  # 3; 2 only if a loaded machine holds the thread back


def test_failure_thresholds_make_a_run_fail_with_its_causes():
    ok = {
        "generate": {"answers": 100, "errors": 5, "first_error": "x"},
        "judge": {
            "pairs": 50,
            "self_comparisons": 10,
            "errors": 2,
            "calls": 80,
            "answered": 76,
            "failed_calls": 4,
            "first_error": "y",
        },
    }
    assert phases.failures(ok, 0.05) == []
    bad = {**ok, "judge": {**ok["judge"], "errors": 40, "first_error": "judge: unreachable"}}
    lines = phases.failures(bad, 0.05)
    assert len(lines) == 1 and "40 of 40 pairs have no verdict" in lines[0]
    assert "80 calls requested, 76 answered, 4 failed" in lines[0]
    assert phases.failures(bad, 1.0) == []


def test_a_generation_reply_without_an_answer_is_an_error_never_stored(endpoint, tmp_path):
    from mlit.generation import answer_client

    _, url = endpoint
    store = Store(str(tmp_path))
    tasks = [
        answer_client.Task(m, f"key-{m}", "ex1", "en", "Hi?")
        for m in ("no-choices", "null-content")
    ]
    client = answer_client.Client(url, concurrency=2, retries=0, patience_s=0)
    out = answer_client.generate(tasks, client, store, progress=False)
    assert out["status"].to_list() == ["error", "error"]
    errors = dict(zip(out["model"], out["error"], strict=True))
    assert "no choices" in errors["no-choices"] and "no content" in errors["null-content"]
    assert store.keys("generations") == []


def test_an_empty_answer_is_judged_not_called_a_failed_generation(endpoint, tmp_path):
    _, url = endpoint
    empty = [Pair("cand", "base", "en", "ex0", "Q?", "", "a good answer", "k1", "k2")]
    out = judge.judge_pairs(
        empty, Judge("openai/good", api_base=url), Store(str(tmp_path)), progress=False
    )
    assert out["verdict"].to_list() == ["loss"] and out["error"].to_list() == [None]


def test_confidence_intervals_are_the_same_on_every_rebuild():
    """The bootstrap draws per language from its own seeded stream: the intervals do not depend
    on the order Polars hands the languages over (they did: rebuilding a run changed them)."""
    import polars as pl
    from helpers import judgments

    from mlit.results import scores

    rows = [
        (m, "mono-x", lang, f"e{i}", ["win", "tie", "loss"][(i + len(m)) % 3])
        for m in ("a", "bb")
        for lang in ("cs", "fi", "sw", "zh", "he")
        for i in range(12)
    ]
    frame = judgments(rows)
    first = scores.score(frame, n_boot=200, seed=3).table
    for seed in range(4):
        shuffled = frame.sample(fraction=1.0, shuffle=True, seed=seed)
        again = scores.score(shuffled, n_boot=200, seed=3).table
        assert again.sort("eval_lang", "model").equals(first.sort("eval_lang", "model"))
    assert not scores.score(frame, n_boot=200, seed=4).table.equals(first)
    assert isinstance(first, pl.DataFrame)


def test_a_passing_failure_is_asked_again_for_the_whole_patience_window(endpoint, tmp_path):
    """A replica restarting on another node refuses for a while: the client outlasts it (four
    refusals against one retry's worth of tries), and still gives up once both are spent."""
    from mlit.generation import answer_client
    from mlit.providers import retries

    script, url = endpoint
    script.fail_first["good"] = 4
    task = [answer_client.Task("good", "key-good", "ex1", "en", "Hi?")]
    patient = answer_client.Client(url, retries=1, backoff_s=0.05, patience_s=5)
    out = answer_client.generate(task, patient, Store(str(tmp_path)), progress=False)
    assert out["status"].to_list() == ["ok"] and script.calls["good"] == 5
    assert retries.pause(1, 10.0, 1, 0.05, 5.0) is None  # past the tries and the window
    assert retries.pause(0, 10.0, 1, 0.05, 5.0) is not None  # the tries still hold
    assert retries.pause(5, 1.0, 1, 0.05, 5.0) is not None  # the window still holds


def test_the_judge_checks_cost_counts_in_the_sweeps_budget_before_any_call(tmp_path, tiny_base):
    """A paid judge checked on a preference set (`--judge-check-data`): the check spends from
    the same --max-cost as judging, so preflight counts both and refuses a budget that covers
    judging alone, naming the check; and a paid judge is never checked by default."""
    from mlit.sweep import judge_check, preview

    cfg = _cfg(
        tmp_path, base_model=str(tiny_base), judge="openai/good",
        judge_api_base="http://127.0.0.1:9/v1", judge_input_price=1.0, judge_output_price=1.0,
    )  # fmt: skip
    store = Store(str(tmp_path / "store"))
    plan = pipeline.plan_sweep(cfg)
    assert judge_check.source(plan) is None and judge_check.cost(plan, store) == 0.0
    judging = preview.judge_cost(plan, plan.counts().judge_calls)
    checked = pipeline.plan_sweep(replace(cfg, judge_check_data="sample"))
    extra = judge_check.cost(checked, store)
    chosen = judge_check.pairs(checked, "sample")
    assert set(chosen["language"]) == set(checked.experiment.eval_languages) and extra > 0
    limit = replace(cfg, judge_check_data="sample", max_cost=judging + extra / 2)
    with pytest.raises(preflight.PreflightError, match=r"judging \(online\) and the judge check"):
        pipeline.run_sweep(limit)
    assert not (tmp_path / "run").exists()
    enough = pipeline.plan_sweep(replace(limit, max_cost=judging + extra * 1.01))
    preflight.budget(enough, store)  # both fit: no error
