"""The sweep config, read once: flags generated from its fields, the script's values as defaults,
and one plan behind the dry run, the estimate and `mlit train`."""

import os
import subprocess
import sys
from dataclasses import fields

import click
import pytest

from mlit.cli import flags
from mlit.generation.answer_client import SamplingParams
from mlit.method import experiments
from mlit.planning import estimate, plan
from mlit.planning.config import SweepConfig

PINNED = '''"""A paper sweep pinned in its config."""
from mlit.planning.config import SweepConfig
from mlit.cli.flags import run_script

CONFIG = SweepConfig(experiment="monolingual", preset="paper", base_model="Qwen/Qwen2.5-1.5B",
                     judge="openai/gpt-4o", judge_api_key_env="OPENAI_API_KEY")

if __name__ == "__main__":
    run_script(CONFIG)
'''


def test_every_config_field_has_a_flag_with_help():
    names = {}
    for opt in flags.options(SweepConfig(experiment="monolingual")):
        names[opt.name] = opt
    for f in fields(SweepConfig):
        if f.name in flags.FIXED:
            continue
        assert f.name in names, f"no flag for SweepConfig.{f.name}"
        assert names[f.name].help, f"the flag of {f.name} has no help"
        assert flags.flag_name(f) in names[f.name].opts


def test_the_script_config_is_the_default_and_only_given_flags_override():
    config = SweepConfig(
        experiment="language_count",
        preset="demo",
        seed=3,
        languages=("fi", "en"),
        sampling=SamplingParams(max_tokens=9),
        workers=2,
    )
    seen = {}
    cmd = flags.command(config, lambda cfg: seen.setdefault("cfg", cfg))
    with pytest.raises(SystemExit) as done:
        cmd.main(["--max-steps", "5", "--port", "8123"], standalone_mode=True)
    assert done.value.code == 0
    got = seen["cfg"]
    assert (got.max_steps, got.serve_port) == (5, 8123)
    assert (got.seed, got.languages, got.sampling, got.workers) == (
        3,
        ("fi", "en"),
        SamplingParams(max_tokens=9),
        2,
    )
    seen.clear()
    with pytest.raises(SystemExit):
        cmd.main(["--languages", "cs,fi", "--sampling", "temperature=0,max_tokens=4"])
    assert seen["cfg"].languages == ("cs", "fi")
    assert seen["cfg"].sampling == SamplingParams(temperature=0.0, max_tokens=4)


def test_bad_flag_values_are_refused_before_anything_runs(capsys):
    cmd = flags.command(SweepConfig(experiment="monolingual"), lambda cfg: pytest.fail("ran"))
    for argv, message in (
        (["--workers", "0"], "--workers must be at least 1, got 0"),
        (["--max-steps", "0"], "--max-steps must be at least 1, got 0"),
        (["--zero-stage", "5"], "--zero-stage must be 0, 1, 2 or 3"),
    ):
        with pytest.raises(SystemExit) as done:
            cmd.main(argv, standalone_mode=True)
        assert done.value.code == 2, argv
        assert message in capsys.readouterr().err
    with pytest.raises(click.BadParameter):
        flags.apply(SweepConfig(experiment="monolingual"), {"sampling": "temp=1"})


def test_a_script_pinning_the_paper_preset_dry_runs_with_no_other_flag(tmp_path):
    script = tmp_path / "pinned.py"
    script.write_text(PINNED)
    env = {**os.environ, "MLIT_STORE": str(tmp_path / "store")}
    out = subprocess.run(
        [sys.executable, str(script), "--dry-run"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
    )
    assert out.returncode == 0, out.stderr
    assert "preset paper; base model Qwen/Qwen2.5-1.5B; judge openai/gpt-4o" in out.stdout
    assert "617 instructions" in out.stdout and "budget 4640" in out.stdout
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize("name", experiments.NAMES)
def test_the_estimate_and_the_plan_agree_at_demo_scale(name):
    """One owner for what a sweep costs: the dry run's plan and `mlit estimate` count the same
    models, generations and judge calls (demo scale: the sample's 16 eval instructions)."""
    p = plan.prepare(SweepConfig(experiment=name, dry_run=True, base_model="x/base"))
    c = p.counts()
    e = estimate.estimate([name], estimate.Assumptions(eval_instructions=16), preset="demo")
    assert c.eval_instructions == 16
    assert (e.model_slots, e.distinct_models) == (c.model_slots, c.distinct_models)
    assert e.generations == c.generations == len(p.generation_tasks())
    assert e.judge_calls == c.judge_calls
    answers = {(t.model, t.lang, t.example_id): "x" for t in p.generation_tasks()}
    pairs = p.judge_pairs(answers)
    assert 2 * sum(not pair.is_self for pair in pairs) == c.judge_calls


def test_a_reduced_run_says_which_languages_it_kept():
    """The paper's titles name 12 languages; a run over three must not claim them."""
    full = plan.prepare(SweepConfig(experiment="monolingual", dry_run=True, base_model="x/base"))
    assert full.experiment.title == "Monolingual tuning in each of 12 languages"
    cfg = SweepConfig(
        experiment="monolingual", dry_run=True, base_model="x/base", languages=("fi", "en", "es")
    )
    reduced = plan.prepare(cfg)
    assert reduced.experiment.title.endswith("(this run: en, es, fi only)")
