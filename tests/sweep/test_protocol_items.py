"""The protocol report reads what runs: every item of the paper's protocol (mlit/paper/
protocol.json), beside the value taken from the object that runs, and DIFFERS when that changes."""

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import polars as pl
import pytest

from mlit.judging import judgments
from mlit.judging.judge import Judge
from mlit.method import experiments, languages
from mlit.planning.config import SweepConfig
from mlit.providers import llm
from mlit.results import scores
from mlit.sweep import protocol_report
from mlit.training import selection

ROOT = Path(__file__).parents[2]
REFERENCE = ROOT.parent / "shared" / "reference" / "000_35bb7f13077f6a2c.txt"
# Known to read "check" before a run: the data is not read in a paper dry run, and the base
# model's dropout settings and tokenizer are not fetched from the hub at plan time.
UNKNOWN_BEFORE_RUN = {"training sources", "dropout", "inference inputs"}


def _paper_plan(experiment: str = "monolingual", **kw):
    from mlit.planning import plan

    cfg = SweepConfig(
        experiment=experiment,
        preset="paper",
        dry_run=True,
        base_model=kw.pop("base_model", "X/y"),
        judge="openai/x",
        **kw,
    )
    return plan.prepare(cfg)


def _item(p, name: str):
    return {i.name: i for i in protocol_report.items(p)}[name]


def test_paper_dry_run_prints_a_protocol_report_without_a_difference(tmp_path):
    out = subprocess.run(
        [sys.executable, str(ROOT / "sweeps" / "monolingual.py"), "--preset", "paper",
         "--dry-run", "--base-model", "X/base", "--judge", "openai/x"],
        capture_output=True, text=True, cwd=tmp_path, env={**os.environ, "MLIT_STORE": str(tmp_path)},
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    n = len(protocol_report.items(_paper_plan()))
    assert f"protocol (paper vs this run): {n - 3} of {n} items match, 3 cannot be told" in (
        out.stdout
    )
    assert "DIFFERS" not in out.stdout
    demo = subprocess.run(
        [sys.executable, str(ROOT / "sweeps" / "monolingual.py"), "--dry-run"],
        capture_output=True, text=True, cwd=tmp_path, env={**os.environ, "MLIT_STORE": str(tmp_path)},
    )  # fmt: skip
    assert "DIFFERS training steps" in " ".join(demo.stdout.split())


def test_every_item_that_applies_matches_in_the_paper_preset_and_no_other_shows():
    only = {
        "P grid (%)": lambda e: e.table_kind == "fraction",
        "language orders": lambda e: e.table_kind == "count",
        "§4.2 shares": lambda e: e.table_kind == "pretraining",
        "translation script": lambda e: "sr" in e.all_languages(),
    }
    for name in experiments.NAMES:
        p = _paper_plan(name, pretraining_shares="x.json" if name.startswith("pre") else None)
        report = protocol_report.items(p)
        for i in report:
            assert i.matches is (None if i.name in UNKNOWN_BEFORE_RUN else True), (name, i)
        for item, applies in only.items():
            assert (item in {i.name for i in report}) == applies(p.experiment), (name, item)


def test_each_training_item_reads_the_trainconfig_the_trainer_receives():
    p = _paper_plan()
    changed = {
        "dropout": replace(p.train, dropout=0.1),
        "training steps": replace(p.train, max_steps=1000),
        "learning rate": replace(p.train, learning_rate=2e-5),
        "batch": replace(p.train, batch_size=64),
        "input / target tokens": replace(p.train, max_input_tokens=512),
        "dev answers": replace(p.train, dev_max_new_tokens=128),
    }
    for name, train in changed.items():
        assert _item(replace(p, train=train), name).matches is False, name
    assert _item(_paper_plan(dev_max_tokens=128), "dev answers").ours == "up to 128 tokens"


def test_the_judge_items_read_the_judge_that_runs(monkeypatch):
    p = _paper_plan()
    monkeypatch.setattr(llm, "JUDGE_TEMPERATURE", 0.7)
    assert _item(p, "judge decoding").matches is False
    monkeypatch.undo()
    monkeypatch.setattr(judgments, "pair_verdict", lambda a, b: "win" if a == 1 else "loss")
    assert _item(p, "both orders, tie rule").matches is False
    monkeypatch.undo()
    monkeypatch.setitem(scores.VALUES, "tie", 0.25)
    assert _item(p, "both orders, tie rule").matches is False
    monkeypatch.undo()
    assert _item(_paper_plan(judge_prompt="rubric"), "judge rule").matches is False


def test_the_checkpoint_rule_is_read_off_selection_and_rouge(monkeypatch):
    p = _paper_plan()
    assert _item(p, "checkpoint rule").ours == "best dev ROUGE-L"

    def keeps_the_last(self, step, score):
        self.curve.append([step, score])
        self.best, self.best_step = score, step
        return True

    monkeypatch.setattr(selection.Selection, "record", keeps_the_last)
    assert _item(p, "checkpoint rule").matches is False
    monkeypatch.undo()
    from mlit.method import rouge

    monkeypatch.setattr(rouge, "rouge_l", lambda a, b: 1.0)  # a bag of words
    assert _item(p, "checkpoint rule").matches is False


def test_the_averages_item_runs_the_table_function_on_a_known_matrix(monkeypatch):
    p = _paper_plan()
    assert _item(p, "averages").matches is True
    original = scores.matrix_table
    monkeypatch.setattr(scores, "matrix_table", lambda s, e: original(s, e, diagonal=False))
    assert "(diagonal left out)" in _item(p, "averages").ours
    assert _item(p, "averages").matches is False


def test_inference_inputs_are_cut_as_training_cuts_them():
    assert _item(_paper_plan(), "inference inputs").ours == "cut at 1024 tokens"
    uncut = _paper_plan(prompt_tokens=0)
    assert uncut.prompt_limit is None and _item(uncut, "inference inputs").matches is False


def test_the_translation_script_item_reads_the_prompt(monkeypatch):
    p = _paper_plan("language_similarity")
    assert _item(p, "translation script").ours == "sr Cyrillic"
    monkeypatch.setattr(languages, "MULTI_SCRIPT", frozenset({"sr"}))
    monkeypatch.setattr(languages, "prompt_name", lambda code: languages.get(code).name)
    assert _item(p, "translation script").matches is False


def test_a_reduced_run_reports_its_orders_and_the_run_counts_its_sources(tiny_base):
    reduced = _paper_plan("language_count", languages=("fi", "en", "ru", "cs", "zh"))
    assert _item(reduced, "language orders").matches is False
    from mlit.planning import plan

    demo = plan.prepare(SweepConfig(experiment="monolingual", base_model=str(tiny_base)))
    assert _item(demo, "training sources").ours == "LIMA 0 + OpenAssistant 0"
    assert _item(demo, "training sources").matches is False


def test_dropout_says_where_it_goes_and_differs_when_only_attention_is_reached(tiny_base):
    # The tiny base is Llama-style: attention dropout only.
    full = _item(_paper_plan(base_model=str(tiny_base)), "dropout")
    assert full.matches is True
    assert full.ours == "0.05 on attention_dropout, residual (added) (model has: attention_dropout)"
    attention = _item(_paper_plan(base_model=str(tiny_base), dropout_scope="config"), "dropout")
    assert attention.matches is False and attention.ours.startswith("0.05 on attention_dropout (")


def test_residual_dropout_hooks_act_in_training_only(tiny_base):
    import torch

    from mlit.method.hyperparameters import TrainConfig
    from mlit.training import trainer

    cfg = TrainConfig.demo(dropout=0.5)
    model, _ = trainer.load_model_and_tokenizer(str(tiny_base), cfg)
    assert trainer.residual_dropout(model, cfg) == ["attention_dropout", "residual (added)"]
    mlp = model.model.layers[0].mlp
    x = torch.ones(1, 3, model.config.hidden_size)
    model.train()
    assert (mlp(x) == 0).float().mean() > 0.3  # about half dropped
    model.eval()
    assert (mlp(x) == 0).float().mean() < 0.05
    bare, _ = trainer.load_model_and_tokenizer(str(tiny_base), replace(cfg, dropout_scope="config"))
    assert trainer.residual_dropout(bare, replace(cfg, dropout_scope="config")) == [
        "attention_dropout"
    ]
    assert not bare.model.layers[0].mlp._forward_hooks


def test_figure_9s_placeholders_are_accepted(tmp_path):
    # In mlit's own words, with the paper's placeholder names (the paper's sentences are not
    # copied into the project); the verbatim prompt is checked below where the paper is at hand.
    own = tmp_path / "own.txt"
    own.write_text("Which answer follows {instruction} better?\n1: {response 1}\n2: {response 2}\n")
    j = Judge("openai/x", template=str(own))
    assert "1: an apple\n2: a pear" in j.prompt("Q?", "an apple", "a pear")
    assert _item(_paper_plan(judge_prompt=str(own)), "judge rule").matches is False


@pytest.mark.skipif(not REFERENCE.exists(), reason="the reference paper is not beside this clone")
def test_the_papers_fig9_prompt_pasted_verbatim_runs_and_is_the_papers_rule(tmp_path):
    lines = REFERENCE.read_text("utf-8").splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("Below is an instruction"))
    last = next(i for i in range(first, len(lines)) if lines[i].startswith("Figure 9:"))
    fig9 = tmp_path / "fig9.txt"
    fig9.write_text("\n".join(lines[first:last]).strip() + "\n")
    j = Judge("openai/x", template=str(fig9))
    assert "Answer1:\nan apple" in j.prompt("Q?", "an apple", "a pear")
    item = _item(_paper_plan(judge_prompt=str(fig9)), "judge rule")
    assert item.matches is True and item.ours == "Fig. 9"
    out = subprocess.run(
        [sys.executable, str(ROOT / "sweeps" / "monolingual.py"), "--preset", "paper",
         "--dry-run", "--base-model", "X/base", "--judge", "openai/x", "--judge-prompt", str(fig9)],
        capture_output=True, text=True, cwd=tmp_path, env={**os.environ, "MLIT_STORE": str(tmp_path)},
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "ok      judge rule                            Fig. 9" in out.stdout


def test_compare_paper_counts_fig10s_diagonal_a_real_score():
    from mlit.results import comparison

    frame = pl.DataFrame(
        {"train_lang": ["ar", "ar", "en", "en"], "eval_lang": ["ar", "en", "ar", "en"],
         "paper": [60.0, 40.0, 30.0, 70.0], "ours": [61.0, 41.0, 31.0, 71.0]}
    )  # fmt: skip
    base = experiments.get("base_model").restricted(("ar", "en"))
    mono = experiments.get("monolingual").restricted(("ar", "en"))
    assert comparison.ranked_cells(frame, base).height == 4
    assert comparison.ranked_cells(frame, mono).height == 2


def test_the_readme_table_lists_every_item_of_the_protocol_file():
    readme = (ROOT / "README.md").read_text("utf-8")
    table = readme[readme.index("| protocol item |") : readme.index("Beyond the report:")]
    rows = {line.split("|")[1].strip() for line in table.splitlines() if line.startswith("| ")}
    for spec in protocol_report.paper_protocol()["items"]:
        assert any(spec["name"] in row for row in rows), spec["name"]


def test_generation_cuts_instructions_as_training_does(tiny_base):
    from transformers import AutoTokenizer

    from mlit.generation import chat
    from mlit.planning import plan

    p = plan.prepare(SweepConfig(experiment="monolingual", base_model=str(tiny_base)))
    assert p.prompt_limit == p.train.max_input_tokens
    cut = chat.instruction_cutter(str(tiny_base), 5)
    tok = AutoTokenizer.from_pretrained(str(tiny_base))
    cut_tasks, whole = p.generation_tasks(cut), p.generation_tasks()
    pairs = [
        (c, w) for c, w in zip(cut_tasks, whole, strict=True) if c.instruction != w.instruction
    ]
    assert pairs and all(len(c.instruction) < len(w.instruction) for c, w in pairs)
    # The same text training sees (`chat.truncate_text`; a cut inside a character re-encodes to
    # a token or two more).
    assert all(len(tok(c.instruction)["input_ids"]) <= 8 for c, _ in pairs)
    assert chat.instruction_cutter(str(tiny_base), None) is None


def test_many_differences_are_one_line_in_a_log_file_and_a_line_each_on_a_terminal():
    """Issue 52: a demo differs from the paper in a dozen items by design; in a log file that
    is one line naming them (each is on the results page), on a terminal a line each."""
    from mlit.sweep.protocol_report import SHOWN_AT_MOST, Item, render_differences

    many = [Item(f"item {i}", "paper", "ours", False) for i in range(SHOWN_AT_MOST + 3)]
    many.append(Item("same", "x", "x", True))
    log = render_differences(many, terminal=False)
    assert len(log.splitlines()) == 1
    assert "8 differ (item 0, item 1" in log and "same" not in log.split("differ")[1]
    assert len(render_differences(many, terminal=True).splitlines()) == 1 + SHOWN_AT_MOST + 3
    few = many[:SHOWN_AT_MOST] + many[-1:]
    assert len(render_differences(few, terminal=False).splitlines()) == 1 + SHOWN_AT_MOST
