"""End to end: a reduced demo sweep (2-3 languages) through Tune, Serve, the judge and Polars."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import helpers
import mlflow_server
import polars as pl
import pytest
from click.testing import CliRunner

from mlit.cli.main import app
from mlit.demo import judge_model
from mlit.generation.answer_client import SamplingParams
from mlit.planning.config import SweepConfig
from mlit.plumbing.ports import free_port
from mlit.results import analysis
from mlit.store.artifacts import Store
from mlit.sweep import pipeline, preview

LANGS = ("fi", "en", "cs")  # language_count reduced: count-fi, count-fi-en, scored on cs


@pytest.fixture(scope="module")
def tiny_judge(tiny_base, tmp_path_factory):
    cfg = judge_model.DemoJudgeConfig(steps=80, batch_size=8, learning_rate=3e-3)
    out = tmp_path_factory.mktemp("judge") / "tiny-judge"
    return judge_model.build_demo_judge(out, tiny_base, cfg, progress=False)


@pytest.fixture(scope="module")
def shared_store(tmp_path_factory):
    return str(tmp_path_factory.mktemp("store"))


def _config(tiny_base, tiny_judge, store, out, **extra):
    return SweepConfig(
        experiment="language_count",
        base_model=str(tiny_base),
        judge_model_dir=str(tiny_judge),
        languages=LANGS,
        output=str(out),
        store=store,
        max_steps=4,
        eval_every=2,  # two dev evaluations: a curve of two points per model
        workers=1,
        sampling=SamplingParams(max_tokens=12, seed=0),
        n_boot=200,
        **extra,
    )


def test_reduced_demo_sweep_end_to_end_and_rerun(
    ray_session, tiny_base, tiny_judge, shared_store, tmp_path, capsys
):
    # The demo judge is checked on the sample by default; the tiny judge is asked to be.
    cfg = _config(tiny_base, tiny_judge, shared_store, tmp_path / "run", judge_check_data="sample")
    with mlflow_server.running(tmp_path / "mlflow") as tracking_uri:  # issue 52: a real server
        cfg = replace(cfg, tracking_uri=tracking_uri)
        first = pipeline.run_sweep(cfg)
        run = first.run_dir
        _tracked_as_it_ran(tracking_uri, run)
        second = pipeline.run_sweep(replace(cfg, output=str(tmp_path / "second")))
        _reused_models_link_to_the_runs_that_trained_them(tracking_uri, second.run_dir)
        # `mlit compare` from the MLflow run ids: the same verdicts, no cell differs.
        ids = [json.loads((r / "run.json").read_text())["tracking"]["run_id"]
               for r in (run, second.run_dir)]  # fmt: skip
        done = CliRunner().invoke(
            app, ["compare", *ids, "--tracking-uri", tracking_uri, "--out",
                  str(tmp_path / "compare.html")],
        )  # fmt: skip
        assert done.exit_code == 0, done.output
        assert "0 of 2 cells differ significantly" in done.output
    assert first.trained == 3  # count-fi, count-fi-en and the baseline mono-cs
    assert first.generation_requests == 3 * 16 and first.judge_calls == 2 * 2 * 16
    table = pl.read_csv(run / "tables" / "fig5_language_count.csv")
    assert table["k"].to_list() == [1, 2]
    assert table.columns == ["k", "cs", "avg", "avg_ci_low", "avg_ci_high"]
    assert {p.name for p in (run / "figures").iterdir()} == {
        "fig5_language_count.png",
        "training_curves.png",  # issue 52: each model's loss and dev ROUGE-L
    }
    assert "Training curves" in (run / "report.html").read_text()
    for name in (
        "run.json",
        "models.json",
        "train.parquet",
        "generations.parquet",
        "judgments.parquet",
        "scores.parquet",
        "mixtures/count-fi-en.json",
        "tables/order_consistency.csv",
        "tables/appE_response_language.csv",
    ):
        assert (run / name).exists(), name
    # scores.parquet is the discounted-tie mean of judgments.parquet.
    s = pl.read_parquet(run / "scores.parquet")
    assert (s["n"] > 0).all()  # the tiny judge's verdicts parse (digit or log-probabilities)
    again = helpers.recompute_from_judgments(pl.read_parquet(run / "judgments.parquet"))
    joined = s.join(again, on=["model", "baseline", "eval_lang"], suffix="_re")
    assert joined.height == s.height == 2
    assert (joined["score"] - joined["score_re"]).abs().max() < 1e-9
    # run.json's protocol is read from what the run did (issue 54).
    protocol = {i["name"]: i for i in json.loads((run / "run.json").read_text())["protocol"]}
    assert "as 3 model(s) trained" in protocol["learning rate"]["note"]
    assert protocol["learning rate"]["ours"] == "0.002 constant"  # the demo's, as it ran
    assert protocol["sampling"]["note"] == "read from 48 requests sent"
    assert protocol["judge decoding"]["note"] == "read from 64 calls sent"
    assert protocol["averages"]["matches"] is True
    assert "generations.parquet" in protocol["evaluation instructions per language"]["note"]
    # The demo judge checked on the bundled sample in the run's evaluation language (issue 51).
    check = pl.read_parquet(run / "judge_check.parquet")
    assert check["language"].to_list() == ["cs"] and check["pairs"][0] == 16
    checked = json.loads((run / "run.json").read_text())["phases"]["judge_check"]
    assert checked["calls"] == 32
    assert "The judge's reliability per language" in (run / "report.html").read_text()

    assert (second.trained, second.generation_requests, second.judge_calls) == (0, 0, 0)
    # A tracking server that does not answer is one warning; the run goes on (and fast).
    start = time.time()
    third = pipeline.run_sweep(replace(cfg, tracking_uri=f"http://127.0.0.1:{free_port()}"))
    assert third.trained == 0 and "[tracking] starting the run failed" in capsys.readouterr().err
    rerun = json.loads((third.run_dir / "run.json").read_text())["phases"]["judge_check"]
    assert rerun["calls"] == 0  # the check's verdicts are stored too
    assert time.time() - start < 0.5 * first.seconds
    # `mlit report` rebuilds the tables from the files alone.
    (run / "tables" / "fig5_language_count.csv").unlink()
    analysis.rebuild(run)
    assert pl.read_csv(run / "tables" / "fig5_language_count.csv").equals(table)
    # ... and from a copy on a machine where the dataset is absent (the config names a file that
    # is not there): the run folder alone is enough.
    copy = tmp_path / "copied-run"
    shutil.copytree(run, copy)
    meta = json.loads((copy / "run.json").read_text())
    meta["config"]["data"] = str(tmp_path / "absent" / "parallel.parquet")
    (copy / "run.json").write_text(json.dumps(meta))
    shutil.rmtree(copy / "tables")
    analysis.rebuild(copy)
    assert pl.read_csv(copy / "tables" / "fig5_language_count.csv").equals(table)


def _tracked_as_it_ran(uri: str, run):
    """MLflow holds the experiment, the sweep's run with its params, table metrics and
    results page, and a child run per trained model with live loss and dev ROUGE-L curves."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("mlit-language_count")
    run_id = json.loads((run / "run.json").read_text())["_run_id"]
    [parent] = client.search_runs([experiment.experiment_id], f"tags.`mlit/run_id` = '{run_id}'")
    assert parent.info.status == "FINISHED"
    assert parent.data.params["base_model"] and parent.data.params["run_id"] == run_id
    assert "k_1/cs" in parent.data.metrics and "k_2/avg_ci_high" in parent.data.metrics
    assert {"report.html", "run.json", "tables", "figures"} <= {
        a.path for a in client.list_artifacts(parent.info.run_id)
    }
    children = client.search_runs(
        [experiment.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'"
    )
    assert sorted(c.data.params["mixture"] for c in children) == [
        "count-fi", "count-fi-en", "mono-cs"
    ]  # fmt: skip
    for child in children:
        loss = client.get_metric_history(child.info.run_id, "loss")
        dev = client.get_metric_history(child.info.run_id, "dev_rouge_l")
        assert len(loss) == 4 and [m.step for m in dev] == [2, 4], child.data.params["mixture"]
        assert "learning_rate" in child.data.metrics and "best_step" in child.data.metrics
        assert child.info.status == "FINISHED"
    trained = pl.read_parquet(run / "train.parquet")
    assert set(trained["mlflow_run_id"]) == {c.info.run_id for c in children}


def _reused_models_link_to_the_runs_that_trained_them(uri: str, run):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    run_id = json.loads((run / "run.json").read_text())["_run_id"]
    [parent] = client.search_runs(
        [client.get_experiment_by_name("mlit-language_count").experiment_id],
        f"tags.`mlit/run_id` = '{run_id}'",
    )
    trained = pl.read_parquet(run / "train.parquet")
    links = {k.removeprefix("mlit/reused/"): v for k, v in parent.data.tags.items()
             if k.startswith("mlit/reused/")}  # fmt: skip
    assert links == dict(zip(trained["mixture"], trained["mlflow_run_id"], strict=True))
    assert not client.search_runs(
        [parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'"
    )  # nothing trained, nothing logged again


KILL = """
import sys, ray
from mlit.sweep import pipeline
from mlit.generation.answer_client import SamplingParams
from mlit.planning.config import SweepConfig
from mlit.store.artifacts import Store
# Answers filed every 0.1 s, not every 2 s: on a fast host all 48 fit in one 2-s flush, and the
# test saw them only when the run had finished generating (1 run in 3 failed that way).
Store.writer.__defaults__ = (0.1,)
ray.init(address=sys.argv[1])
cfg = SweepConfig(
    experiment="language_count", base_model=sys.argv[2], judge_model_dir=sys.argv[3],
    languages=("fi", "en", "cs"), output=sys.argv[4], store=sys.argv[5], max_steps=4, eval_every=2, workers=1,
    sampling=SamplingParams(max_tokens=24, seed=7), generation_concurrency=1, n_boot=50)
pipeline.run_sweep(cfg)
"""


def test_a_run_killed_during_generation_resumes(
    ray_session, tiny_base, tiny_judge, shared_store, tmp_path
):
    script = tmp_path / "kill.py"
    script.write_text(KILL)
    store = Store(shared_store)
    before = set(store.keys("generations"))
    address = ray_session.get_runtime_context().gcs_address
    proc = subprocess.Popen(
        [
            sys.executable,
            str(script),
            address,
            str(tiny_base),
            str(tiny_judge),
            str(tmp_path / "run"),
            shared_store,
        ],
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 400
    try:
        while len(set(store.keys("generations")) - before) < 3:
            assert proc.poll() is None, "the run ended before it could be killed"
            assert time.time() < deadline
            time.sleep(0.2)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    done = len(set(store.keys("generations")) - before)
    assert 3 <= done < 48
    cfg = _config(tiny_base, tiny_judge, shared_store, tmp_path / "run", generation_concurrency=4)
    cfg = replace(cfg, sampling=SamplingParams(max_tokens=24, seed=7), n_boot=50)
    rerun = pipeline.run_sweep(cfg)
    assert rerun.trained == 0
    assert rerun.generation_requests == 48 - done  # nothing stored is asked for again
    assert (
        pl.read_parquet(tmp_path / "run" / "generations.parquet")["status"].to_list() == ["ok"] * 48
    )


def test_a_same_size_flip_in_a_stored_model_is_healed_by_the_next_run(
    ray_session, tiny_base, tiny_judge, shared_store, tmp_path, capsys
):
    cfg = _config(tiny_base, tiny_judge, shared_store, tmp_path / "run")
    pipeline.run_sweep(cfg)  # everything stored (from the end-to-end test when run together)
    models = json.loads((tmp_path / "run" / "models.json").read_text())
    weights = next(Path(models["mono-cs"]["path"]).glob("*.safetensors"))
    raw = bytearray(weights.read_bytes())
    raw[len(raw) // 2] ^= 0xFF  # one byte flipped: same size, found by its sha256 only
    weights.write_bytes(bytes(raw))
    rerun = pipeline.run_sweep(cfg)
    assert rerun.trained == 1
    assert str(weights.parent) in capsys.readouterr().err  # reported with its path
    again = pipeline.run_sweep(cfg)
    assert (again.trained, again.generation_requests, again.judge_calls) == (0, 0, 0)


def test_a_judge_failing_mid_run_ends_non_zero_with_the_causes(
    ray_session, tiny_base, tiny_judge, shared_store, tmp_path, endpoint, capsys
):
    """The endpoint answers the probe, then never names an answer: the run ends with rc 1, says
    why, keeps what it did, and stores no verdict."""
    from mlit.cli import flags

    _script, url = endpoint
    cfg = _config(tiny_base, tiny_judge, shared_store, tmp_path / "run")
    cfg = replace(cfg, judge="openai/mute", judge_api_base=url, judge_model_dir=None)
    before = len(Store(shared_store).keys("verdicts"))
    with pytest.raises(SystemExit) as done:
        flags.command(cfg, pipeline.run_sweep).main([], standalone_mode=True)
    assert done.value.code == 1
    err = capsys.readouterr().err
    assert "judging: 32 of 32 pairs have no verdict" in err and "unparseable" in err
    meta = json.loads((tmp_path / "run" / "run.json").read_text())
    assert meta["status"] == "failed" and meta["phases"]["judge"]["answered"] == 0
    assert (tmp_path / "run" / "judgments.parquet").exists()
    assert len(Store(shared_store).keys("verdicts")) == before


def _api_judge(cfg, url, **extra):
    return replace(
        cfg,
        judge="openai/good",
        judge_api_base=url,
        judge_model_dir=None,
        judge_input_price=1.0,
        judge_output_price=0.0,
        **extra,
    )


def test_batch_judging_in_a_sweep_gives_the_online_verdicts_at_half_the_cost(
    ray_session, tiny_base, tiny_judge, shared_store, tmp_path
):
    """The same sweep judged online and through the Batch API (each against its own server, so
    neither finds the other's verdicts): identical verdicts; batch mode's only online call is
    the probe; run.json records the mode, the batches and the cost."""
    from judge_server import Script, start

    runs = {}
    for mode in ("online", "batch"):
        script = Script()
        script.prompt_tokens = 100  # every call costs the same
        server, url = start(script)
        cfg = _config(tiny_base, tiny_judge, shared_store, tmp_path / mode)
        cfg = _api_judge(cfg, url, judge_mode=mode, judge_batch_poll=0.2)
        result = pipeline.run_sweep(cfg)
        meta = json.loads((result.run_dir / "run.json").read_text())
        runs[mode] = (script, meta, pl.read_parquet(result.run_dir / "judgments.parquet"))
        server.shutdown()
    (online, online_meta, online_j), (batch, batch_meta, batch_j) = runs["online"], runs["batch"]
    # Two models may answer an instruction alike: their comparisons with the baseline are then
    # one prompt, which a batch asks once (online asks each order it schedules).
    distinct = _distinct_prompts(tmp_path / "online", online_j)
    assert 0 < distinct <= 64
    assert online.calls["good"] == 1 + 64 and online_meta["phases"]["judge"]["mode"] == "online"
    assert batch.calls["good"] == 1 and batch.batch_calls["good"] == distinct  # 1: the probe
    assert batch_j["verdict"].to_list() == online_j["verdict"].to_list()
    judged = batch_meta["phases"]["judge"]
    assert judged["mode"] == "batch" and judged["batches_submitted"] == 1
    assert judged["calls"] == 64 and judged["answered"] == 64
    cost = online_meta["phases"]["judge"]["cost_usd"]
    assert cost > 0 and judged["cost_usd"] == pytest.approx(cost / 2 * distinct / 64)
    assert batch_meta["cost_usd"] == {"generate": 0.0, "judge": judged["cost_usd"]}


def _distinct_prompts(run_dir, judged: pl.DataFrame) -> int:
    """The judge prompts a run's comparisons make, both orders, alike ones counted once."""
    gens = pl.read_parquet(run_dir / "generations.parquet")
    answer = {(g["model"], g["lang"], g["example_id"]): (g["instruction"], g["response"])
              for g in gens.iter_rows(named=True)}  # fmt: skip
    prompts = set()
    for j in judged.filter(~pl.col("self_comparison")).iter_rows(named=True):
        instruction, a = answer[(j["candidate"], j["eval_lang"], j["example_id"])]
        b = answer[(j["baseline"], j["eval_lang"], j["example_id"])][1]
        prompts |= {(instruction, a, b), (instruction, b, a)}
    return len(prompts)


def test_a_rerun_with_every_verdict_stored_sends_the_judge_nothing_not_even_a_probe(
    ray_session, tiny_base, tiny_judge, shared_store, tmp_path
):
    from judge_server import Script, start

    script = Script()
    server, url = start(script)
    try:
        cfg = _api_judge(_config(tiny_base, tiny_judge, shared_store, tmp_path / "run"), url)
        pipeline.run_sweep(cfg)
        first = script.calls["good"]
        assert first == 1 + 64  # the probe and every call
        pipeline.run_sweep(cfg)
        assert script.calls["good"] == first  # nothing new: no probe either
    finally:
        server.shutdown()


def test_max_cost_stops_a_sweep_before_any_judge_call_or_before_passing_it(
    ray_session, tiny_base, tiny_judge, shared_store, tmp_path, endpoint, capsys
):
    from mlit.cli import flags

    script, url = endpoint
    cfg = _api_judge(_config(tiny_base, tiny_judge, shared_store, tmp_path / "a"), url)
    # The plan: 64 calls x ~324 tokens at $1 per million, ~$0.02: over $0.001, nothing runs.
    with pytest.raises(SystemExit) as done:
        flags.command(replace(cfg, max_cost=0.001), pipeline.run_sweep).main(
            [], standalone_mode=True
        )
    assert done.value.code == 2 and sum(script.calls.values()) == 0
    assert "over the budget --max-cost $0.0010: nothing was run" in capsys.readouterr().err
    assert not (tmp_path / "a" / "run.json").exists()
    # Calls cost more than planned ($0.002 each): the run stops before passing $0.05.
    script.prompt_tokens = 2000
    out = tmp_path / "b"
    with pytest.raises(SystemExit) as done:
        flags.command(replace(cfg, max_cost=0.05, output=str(out)), pipeline.run_sweep).main(
            [], standalone_mode=True
        )
    assert done.value.code == 1
    assert "rerun with a larger --max-cost" in capsys.readouterr().err
    meta = json.loads((out / "run.json").read_text())
    assert meta["status"] == "stopped: budget"
    spent = meta["phases"]["judge"]["cost_usd"]
    assert 0 < spent <= 0.05 and meta["cost_usd"]["judge"] == spent
    assert script.calls["good"] - 1 == pytest.approx(spent / 0.002)  # the probe costs nothing here
    assert (out / "judgments.parquet").exists()


def test_a_days_retry_after_mid_run_stops_the_judge_phase_at_once_with_rc_1(
    ray_session, tiny_base, tiny_judge, shared_store, tmp_path, endpoint, capsys
):
    """A daily quota spent mid-run (429, Retry-After: 86400): the phase ends within a minute
    with one line saying when to rerun, rc 1, what was judged kept; the rerun goes on."""
    from mlit.cli import flags

    script, url = endpoint
    script.day_quota_after = 21  # the probe and 20 judge calls, then a day's wait
    out = tmp_path / "run"
    cfg = _api_judge(_config(tiny_base, tiny_judge, shared_store, out), url)
    with pytest.raises(SystemExit) as done:
        flags.command(cfg, pipeline.run_sweep).main([], standalone_mode=True)
    assert done.value.code == 1
    err = capsys.readouterr().err
    assert err.count("asks to wait 24 h") == 1 and "rerun after" in err
    meta = json.loads((out / "run.json").read_text())
    assert meta["status"] == "stopped: provider"
    judged = meta["phases"]["judge"]
    assert judged["seconds"] < 60 and "asks to wait 24 h" in judged["stopped"]
    assert script.refused <= 32  # the calls in flight (--judge-concurrency 32), once each
    script.day_quota_after, script.quota_until = None, 0
    pipeline.run_sweep(cfg)  # the rerun asks only what the first did not get
    assert json.loads((out / "run.json").read_text())["status"] == "ok"
    assert script.calls["good"] == 1 + 64 + script.refused + 1  # and one more probe


def test_a_judge_refusing_its_key_mid_run_stops_at_once_with_rc_2(
    ray_session, tiny_base, tiny_judge, shared_store, tmp_path, endpoint, capsys
):
    """The probe and three calls are answered, then 401: judging stops within a dozen calls,
    with one line naming the judge and the status, and rc 2."""
    from mlit.cli import flags

    script, url = endpoint
    script.refuse_after["revoked"] = 1 + 3
    cfg = _config(tiny_base, tiny_judge, shared_store, tmp_path / "run")
    cfg = replace(cfg, judge="openai/revoked", judge_api_base=url, judge_model_dir=None)
    with pytest.raises(SystemExit) as done:
        flags.command(cfg, pipeline.run_sweep).main([], standalone_mode=True)
    assert done.value.code == 2
    assert script.calls["revoked"] <= 1 + 3 + 12  # of the 64 calls the phase has
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and "openai/revoked refused a call" in errors[0], errors
    assert "rejected the API key" in errors[0]


TWO_SWEEPS = """
import sys, ray
from mlit.sweep import pipeline
from mlit.generation.answer_client import SamplingParams
from mlit.planning.config import SweepConfig
ray.init(address="local", num_cpus=2, include_dashboard=False)
cfg = SweepConfig(
    experiment="language_count", base_model=sys.argv[1], judge_model_dir=sys.argv[2],
    languages=("fi", "en", "cs"), output=sys.argv[3], store=sys.argv[4], max_steps=4, eval_every=2, workers=1,
    sampling=SamplingParams(max_tokens=12, seed=0), n_boot=50)
result = pipeline.run_sweep(cfg)
print("TRAINED", result.trained)
"""


@pytest.mark.slow
def test_two_identical_sweeps_started_together_train_each_model_once(
    tiny_base, tiny_judge, tmp_path
):
    """Two processes, each with its own Ray, one store: both finish, 3 models trained in all."""
    script = tmp_path / "sweep.py"
    script.write_text(TWO_SWEEPS)
    store = tmp_path / "store"
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                str(script),
                str(tiny_base),
                str(tiny_judge),
                str(tmp_path / r),
                str(store),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for r in ("run-a", "run-b")
    ]
    outs = [p.communicate(timeout=1500) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-2000:] for o in outs]
    trained = [int(o[0].split("TRAINED")[-1].split()[0]) for o in outs]
    assert sum(trained) == 3, trained
    assert len(Store(str(store)).model_keys()) == 3


@pytest.mark.slow
def test_changed_training_text_retrains_exactly_the_changed_models(
    ray_session, tiny_base, tiny_judge, shared_store, tmp_path, sample
):
    from mlit.data import dataset

    cfg = _config(tiny_base, tiny_judge, shared_store, tmp_path / "run")
    pipeline.run_sweep(cfg)  # everything stored
    changed = sample.with_columns(
        response=pl.when((pl.col("split") == "train") & (pl.col("lang") == "cs"))
        .then(pl.lit("I do not know."))
        .otherwise(pl.col("response"))
    )
    path = dataset.save(changed, tmp_path / "changed.jsonl")
    dry = pipeline.plan_sweep(replace(cfg, data=str(path)))
    assert "models to train: 1 new, 2 stored" in preview.describe(dry, Store(shared_store))
    rerun = pipeline.run_sweep(replace(cfg, data=str(path)))
    assert rerun.trained == 1  # mono-cs: the only mixture with cs training rows


@pytest.mark.slow
def test_a_sweep_fails_on_a_full_disk_then_completes_once_space_is_freed(
    ray_session, tiny_base, tiny_judge, tmp_path
):
    from helpers import fill_disk, tmpfs

    from mlit.cli import flags

    with tmpfs(tmp_path / "disk", "64m") as disk:
        filler = fill_disk(disk)
        cfg = _config(tiny_base, tiny_judge, str(disk / "store"), disk / "run")
        with pytest.raises(SystemExit) as done:
            flags.command(cfg, pipeline.run_sweep).main([], standalone_mode=True)
        assert done.value.code == 2
        filler.unlink()
        result = pipeline.run_sweep(cfg)
        assert result.trained == 3 and result.main_table is not None
