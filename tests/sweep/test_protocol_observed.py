"""The protocol report reads what runs (issue 54): each kind of bug a contributor could bring in,
applied here in the test process to the function that takes effect (never to the config), must
read DIFFERS, in the dry run where it can be seen before compute and in a run's own records."""

from collections import Counter
from dataclasses import replace

import polars as pl
import pytest

from mlit.generation import answer_client, chat
from mlit.judging import judge, pairs
from mlit.method import experiments, mixtures
from mlit.planning import plan as planning
from mlit.planning.config import SweepConfig
from mlit.planning.plan import Plan
from mlit.providers import llm
from mlit.results import scores
from mlit.results.run_folder import RunFolder
from mlit.sweep import phases, protocol_readings, protocol_report, protocol_run, protocol_tables
from mlit.training import trainer_arguments

LANGS = ["ar", "cs", "en", "es", "et", "fi", "he", "hi", "it", "ru", "sw", "zh"]


@pytest.fixture(scope="module")
def paper_data(tmp_path_factory):
    """A dataset of the paper's shape: 12 languages, 1,000 LIMA and 3,640 OpenAssistant training
    rows and 617 evaluation instructions each."""
    rows = [
        (f"{'lima' if i < 1000 else 'oasst'}-{i:05d}", lang, "train",
         f"Instruction {i} ({lang}): explain topic {i}.", f"Response {i} ({lang})" + " more" * (i % 9))
        for lang in LANGS for i in range(4640)
    ] + [
        (f"eval-{i:04d}", lang, "eval", f"Evaluation question {i} ({lang})?", "ref")
        for lang in LANGS for i in range(617)
    ]  # fmt: skip
    path = tmp_path_factory.mktemp("paper") / "paper_shaped.parquet"
    columns = ["example_id", "lang", "split", "instruction", "response"]
    pl.DataFrame(rows, schema=columns, orient="row").write_parquet(path)
    return path


def _config(paper_data, tiny_base, **kw) -> SweepConfig:
    return SweepConfig(
        experiment=kw.pop("experiment", "monolingual"),
        preset="paper",
        dry_run=True,
        data=str(paper_data),
        base_model=str(tiny_base),
        judge="openai/x",
        **kw,
    )


@pytest.fixture(scope="module")
def paper_plan(paper_data, tiny_base) -> Plan:
    return planning.prepare(_config(paper_data, tiny_base))


def _item(p: Plan, name: str, run=None):
    return {i.name: i for i in protocol_report.items(p, run)}[name]


def _differs(p: Plan, name: str, run=None) -> str:
    item = _item(p, name, run)
    assert item.matches is False, (name, item)
    return item.ours


def test_the_paper_preset_on_paper_shaped_data_reads_every_item_ok(paper_plan):
    report = protocol_report.items(paper_plan)
    assert [i for i in report if i.matches is not True] == []
    assert {i.name for i in report} >= {"order swap", "averages", "sampling", "learning rate"}


# 1. Training --------------------------------------------------------------------------------


def test_a_schedule_or_a_rate_changed_in_the_trainers_arguments_differs(paper_plan, monkeypatch):
    built = trainer_arguments.keywords

    def linear(cfg, work, world, on_gpu):
        return {
            **built(cfg, work, world, on_gpu),
            "lr_scheduler_type": "linear",
            "warmup_steps": 50,
        }

    monkeypatch.setattr(trainer_arguments, "keywords", linear)
    assert _differs(paper_plan, "learning rate") == "1e-05 linear after 50 warmup"
    monkeypatch.setattr(
        trainer_arguments,
        "keywords",
        lambda cfg, work, world, gpu: {
            **built(cfg, work, world, gpu),
            "learning_rate": cfg.learning_rate * world,  # scaled by the worker count
        },
    )
    assert _differs(paper_plan, "learning rate") == "2e-05 constant"


def test_rows_dropped_while_materialising_differ(paper_data, tiny_base, monkeypatch):
    whole = mixtures.materialize

    def short_only(mixture, frame):
        train, dev = whole(mixture, frame)
        return [(i, r) for i, r in train if len(r) < 40], dev

    monkeypatch.setattr(mixtures, "materialize", short_only)
    p = planning.prepare(_config(paper_data, tiny_base))
    assert _differs(p, "training examples per mixture").startswith("2")  # under 4,640


# 2. What the clients send --------------------------------------------------------------------


def test_the_bodies_the_clients_build_are_read_before_the_run(paper_plan, monkeypatch):
    body = answer_client.request_body

    def swapped(task, params):
        return body(task, replace(params, temperature=params.top_p, top_p=params.temperature))

    monkeypatch.setattr(answer_client, "request_body", swapped)
    assert _differs(paper_plan, "sampling") == "nucleus p=0.7, T=0.9, up to 512 tokens"
    monkeypatch.undo()
    chat_body = llm.chat_body

    def no_temperature(*args):
        return {k: v for k, v in chat_body(*args).items() if k != "temperature"}

    monkeypatch.setattr(llm, "chat_body", no_temperature)
    assert _differs(paper_plan, "judge decoding").startswith("the provider's default temperature")


def test_what_the_clients_sent_is_read_after_the_run(paper_plan, endpoint, tmp_path, monkeypatch):
    """The generation client and the judge, run against a loopback server with their bodies
    changed where they are built: the run's record of what was sent reads DIFFERS."""
    from mlit.store.artifacts import Store

    _, url = endpoint
    body = answer_client.request_body
    monkeypatch.setattr(
        answer_client,
        "request_body",
        lambda t, p: body(t, replace(p, temperature=p.top_p, top_p=p.temperature)),
    )
    tasks = [answer_client.Task("good", "k", f"e{i}", "en", f"Question {i}?") for i in range(4)]
    sent = Counter()
    answer_client.generate(
        tasks, answer_client.Client(url), Store(str(tmp_path)), paper_plan.sampling,
        progress=False, sent=sent,
    )  # fmt: skip
    chat_body = llm.chat_body
    monkeypatch.setattr(
        llm, "chat_body", lambda *a: {k: v for k, v in chat_body(*a).items() if k != "temperature"}
    )
    monkeypatch.setattr(
        pairs.Pair, "orders", lambda p: ((p.candidate_answer, p.baseline_answer),) * 2
    )
    seen = pairs.Seen()
    work = [
        pairs.Pair("c", "b", "en", f"e{i}", f"Question {i}?", f"good answer number {i}",
                   f"other answer number {i}", "kc", "kb")
        for i in range(3)
    ]  # fmt: skip
    judge.judge_pairs(work, judge.Judge("openai/good", api_base=url), Store(str(tmp_path / "v")),
                      progress=False, seen=seen)  # fmt: skip
    record = {
        "generate": {"sampling_sent": dict(sent)},
        "judge": {"sent": {"seen": seen.as_dict()}},
    }
    observed = protocol_run.observed(paper_plan, RunFolder(tmp_path / "run", "r"), record)
    assert _differs(paper_plan, "sampling", observed) == "nucleus p=0.7, T=0.9, up to 512 tokens"
    assert "provider's default temperature" in _differs(paper_plan, "judge decoding", observed)
    assert _differs(paper_plan, "order swap", observed) == (
        "3 of 6 calls showed the pair in one order twice"
    )


def test_the_judge_that_runs_is_the_one_read(paper_plan, monkeypatch):
    monkeypatch.setattr(judge, "DEFAULT_TEMPLATE", "rubric")  # a changed default template
    assert _differs(paper_plan, "judge rule") == "template rubric (another rule)"


def test_a_pair_shown_in_one_order_twice_differs(paper_plan, monkeypatch):
    assert _item(paper_plan, "order swap").matches is True
    monkeypatch.setattr(
        pairs.Pair, "orders", lambda p: ((p.candidate_answer, p.baseline_answer),) * 2
    )
    assert _differs(paper_plan, "order swap") == "1 of 2 calls showed the pair in one order twice"


def test_an_unreadable_tokenizer_reads_not_cut(
    paper_data, tiny_base, paper_plan, tmp_path, monkeypatch
):
    import shutil

    broken = tmp_path / "base"
    shutil.copytree(tiny_base, broken)
    (broken / "tokenizer.json").write_text("{not json")
    p = planning.prepare(replace(_config(paper_data, tiny_base), base_model=str(broken)))
    assert _differs(p, "inference inputs").startswith("not cut (the tokenizer cannot be read")

    def unreadable(model, limit):
        raise OSError("no tokenizer here")

    # The run says what generation did: no cut, where the dry run read a cut.
    monkeypatch.setattr(chat, "instruction_cutter", unreadable)
    record = {
        "generate": {"instructions": phases.cut_as_run(paper_plan, phases.prompt_cut(paper_plan))}
    }
    seen = protocol_run.observed(paper_plan, RunFolder("/nonexistent-run", "r"), record)
    item = _item(paper_plan, "inference inputs", seen)
    assert item.matches is False and item.ours.startswith("not cut (the tokenizer of")
    assert "the dry run read 'cut at 1024 tokens'" in item.note


# 3. What generation and judging go through -------------------------------------------------------


def test_fewer_instructions_generated_or_judged_differ(paper_plan, monkeypatch):
    tasks = Plan.generation_tasks

    def first_200(self, cut=None):
        return [t for t in tasks(self, cut) if int(t.example_id.split("-")[1]) < 200]

    monkeypatch.setattr(Plan, "generation_tasks", first_200)
    assert (
        _differs(paper_plan, "evaluation instructions per language") == "200 generated, 617 judged"
    )
    monkeypatch.undo()
    judged = Plan.judge_pairs
    monkeypatch.setattr(
        Plan,
        "judge_pairs",
        lambda self, answers, cut=None: [
            p for p in judged(self, answers, cut) if int(p.example_id.split("-")[1]) < 200
        ],
    )
    assert (
        _differs(paper_plan, "evaluation instructions per language") == "617 generated, 200 judged"
    )


def test_the_run_reads_its_instructions_and_baselines_from_its_tables(paper_plan, tmp_path):
    run = RunFolder(tmp_path, "r")
    gens = pl.DataFrame(
        [(f"mono-{lang}", lang, f"eval-{i:04d}") for lang in ("en", "fi") for i in range(200)],
        schema=["model", "lang", "example_id"], orient="row",
    )  # fmt: skip
    run.write_frame("generations", gens)
    judged = pl.DataFrame(
        [("mono-fi", "mono-en", "en", f"eval-{i:04d}", False) for i in range(200)],
        schema=["candidate", "baseline", "eval_lang", "example_id", "self_comparison"], orient="row",
    )  # fmt: skip
    run.write_frame("judgments", judged)
    seen = protocol_run.observed(paper_plan, run, {})
    assert _differs(paper_plan, "evaluation instructions per language", seen) == "200"
    assert _item(paper_plan, "baseline", seen).matches is True
    run.write_frame("judgments", judged.with_columns(baseline=pl.lit("mono-fi")))
    seen = protocol_run.observed(paper_plan, run, {})
    assert _differs(paper_plan, "baseline", seen) == "mono-fi for en"


def test_a_constant_baseline_differs(paper_plan, monkeypatch):
    monkeypatch.setattr(
        experiments.Experiment,
        "baseline_for",
        lambda self, lang: experiments.monolingual_name("en"),
    )
    assert "mono-en for ar" in _differs(paper_plan, "baseline")


# 4. The tables written ---------------------------------------------------------------------------


def _paper(experiment: str, **kw) -> Plan:
    cfg = SweepConfig(experiment=experiment, preset="paper", dry_run=True, base_model="X/y",
                      judge="openai/x", **kw)  # fmt: skip
    return planning.prepare(cfg)


def test_every_experiments_averages_are_read_from_the_tables_written(monkeypatch):
    for name in experiments.NAMES:
        shares = "x.json" if name.startswith("pre") else None
        assert _item(_paper(name, pretraining_shares=shares), "averages").matches is True, name
    fraction = _paper("multilingual_fraction")
    made = scores.fraction_table

    def english_seen(s, exp):
        table = made(s, exp)
        seen = [
            scores._avg(s, [(r.name, lang, exp.baseline_for(lang)) for lang in exp.eval_languages
                            if lang in r.languages])[0]
            for r in sorted(exp.recipes, key=lambda r: r.meta_dict().get("percent"))
        ]  # fmt: skip
        return table.with_columns(seen_avg=pl.Series(seen))

    monkeypatch.setattr(scores, "fraction_table", english_seen)
    assert "(English counted in seen)" in _differs(fraction, "averages")
    monkeypatch.undo()
    matrix = scores.matrix_table
    monkeypatch.setattr(scores, "matrix_table", lambda s, e, diagonal=False: matrix(s, e, False))
    assert "(diagonal left out)" in _differs(_paper("monolingual"), "averages")


def test_english_in_the_correlation_differs_and_the_run_reads_its_own_table(monkeypatch, tmp_path):
    p = _paper("pretraining_fraction", pretraining_shares="x.json")
    assert _item(p, "§4.2 shares").ours == "pretraining documents, English excluded"
    made = scores.pretraining_table

    def with_english(s, exp, shares, *a, **k):
        per_lang, summary = made(s, exp, shares, *a, **k)
        en = scores.matrix_table(s, exp, diagonal=False).filter(pl.col("train_lang") == "en")
        row = en.select("train_lang", pl.col("avg").alias("avg_cross_score")).with_columns(
            share=pl.lit(shares["en"]), shares=pl.lit("x")
        )
        return pl.concat([per_lang, row]), summary

    monkeypatch.setattr(scores, "pretraining_table", with_english)
    assert _differs(p, "§4.2 shares") == "pretraining documents, English included"
    # A run's own tables: written by the changed function, read back beside its scores.
    cells = protocol_tables.known_cells(p.experiment)
    run = RunFolder(tmp_path, "r")
    known = protocol_tables.scores_of(cells)
    run.write_frame("scores", known.table)
    shares = {lang: 0.1 for lang in p.experiment.all_languages()}
    scores.write_tables(scores.tables_for(known, p.experiment, shares), run.tables)
    run.write_shares(shares, "x.json")
    seen = protocol_run.observed(p, run, {})
    assert _differs(p, "§4.2 shares", seen) == "pretraining documents, English included"
    assert _item(p, "averages", seen).matches is True


def test_the_table_writer_is_read_not_the_table_function(monkeypatch):
    """A bug in writing (a column rounded away, rows written twice) is in the file the user reads."""
    p = _paper("monolingual")
    write = scores.write_tables

    def rounded(tables, folder, notes=None):
        return write(
            {k: t.with_columns(pl.col("avg").round(0)) for k, t in tables.items()}, folder, notes
        )

    monkeypatch.setattr(scores, "write_tables", rounded)
    assert "by the paper's rule" in _differs(p, "averages")


def test_readings_name_what_they_read():
    assert protocol_readings.sampling_text(['{"max_tokens": 5, "temperature": 0.7}']) == (
        "nucleus p=server default, T=0.7, up to 5 tokens"
    )
    assert protocol_readings.counts_text([617, 617]) == "617"
    assert protocol_readings.counts_text([200, 617]) == "200 to 617 (not the same everywhere)"
