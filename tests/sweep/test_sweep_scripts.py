"""Every sweep script's --dry-run prints the plan its experiment implies."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

from mlit.data import dataset
from mlit.method import experiments

ROOT = Path(__file__).parents[2]


def _expected(name: str) -> tuple[int, int]:
    """(model slots, judge calls) for the demo plan: pairs whose model is its own baseline (the
    same mixture, e.g. P=1% of 48 examples rounds to all-English = monolingual English) cost none."""
    exp = experiments.get(name)
    ids = dataset.train_ids(dataset.sample())
    hashes = {m.name: m.hash for m in experiments.build_all(exp, ids, include_baselines=True)}
    selfs = 0
    if exp.baseline != "base":
        selfs = sum(hashes[r.name] == hashes[f"mono-{lang}"] for r, lang in exp.eval_pairs())
    return len(hashes), 2 * (len(exp.eval_pairs()) - selfs) * 16  # 16 eval instructions


@pytest.mark.parametrize("name", experiments.NAMES)
def test_dry_run_counts_match_the_experiment(name, tmp_path):
    out = subprocess.run(
        [
            sys.executable,
            str(ROOT / "sweeps" / f"{name}.py"),
            "--dry-run",
            "--store",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
    )
    models, calls = _expected(name)
    text = out.stdout
    assert f"{len(experiments.get(name).recipes)} in the experiment" in text
    slots = int(re.search(r"(\d+) with baselines", text).group(1))
    assert slots == models
    assert int(re.search(r"judge calls: (\d+)", text).group(1)) == calls
    distinct = int(re.search(r"\((\d+) distinct models\)", text).group(1))
    assert distinct <= models and "new" in text
    assert not (tmp_path / "results").exists()  # a dry run writes nothing


def test_paper_plan_counts_shared_models_once(tmp_path):
    out = subprocess.run(
        [
            sys.executable,
            str(ROOT / "sweeps" / "paper.py"),
            "--preset",
            "paper",
            "--dry-run",
            "--base-model",
            "Qwen/Qwen2.5-1.5B",
            "--judge",
            "openai/gpt-4o",
            "--store",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
    )
    assert "the whole paper: 57 distinct models to train (129 model slots" in out.stdout
    assert "budget 4640" in out.stdout and "617 instructions" in out.stdout
    readme = (ROOT / "README.md").read_text()
    assert "**57 distinct models**" in readme


def test_paper_takes_the_bilingual_pairs(tmp_path):
    """--pairs chooses the bilingual experiment's pairs; the other seven run as they are."""
    cmd = [sys.executable, str(ROOT / "sweeps" / "paper.py"), "--dry-run", "--store", str(tmp_path)]
    out = subprocess.run([*cmd, "--pairs", "en-fi"], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "the whole paper: 49 distinct models to train (124 model slots" in out.stdout
    bad = subprocess.run([*cmd, "--pairs", "en-xx"], capture_output=True, text=True, cwd=tmp_path)
    assert bad.returncode != 0 and "xx" in bad.stderr


def test_paper_preset_needs_a_base_model_and_a_judge(tmp_path):
    out = subprocess.run(
        [sys.executable, str(ROOT / "sweeps" / "language_count.py"), "--preset", "paper"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert out.returncode == 2 and "needs --base-model and --judge" in out.stderr
