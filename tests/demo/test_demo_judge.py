"""The demo judge: trained on pairs from the training split, well above chance on held-out pairs."""

import json
import os
import shutil
import subprocess
import sys

from mlit.data import dataset
from mlit.demo import judge_model


def test_pairs_cover_three_negatives_in_both_orders():
    pairs = judge_model.build_pairs(dataset.sample(), "train", seed=0)
    assert len(pairs) % 2 == 0
    for first, second in zip(pairs[::2], pairs[1::2], strict=True):
        assert first[0] == second[0] and first[1] == second[2] and first[2] == second[1]
        assert (first[3], second[3]) == ("1", "2")
    eval_instructions = set(dataset.split(dataset.sample(), "eval")["instruction"])
    assert not eval_instructions & {p[0] for p in pairs}  # held-out pairs are never trained on


def test_demo_judge_beats_chance_on_held_out_pairs(tmp_path):
    """Built in a cache of its own (never the user's), which then moves whole to another home:
    the judge's marker names its base relative to itself, so the moved judge is still built."""
    cache = tmp_path / "cache"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "MLIT_CACHE": str(cache)}
    out = subprocess.run(
        [sys.executable, "-m", "mlit", "demo-judge"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert "held-out pair accuracy" in out.stdout and "order consistency" in out.stdout
    meta = json.loads((cache / "demo" / "judge" / judge_model.MARKER).read_text())
    held = meta["held_out"]
    assert held["pairs"] >= 1000
    assert held["accuracy"] >= 0.70, held
    assert 0 <= held["order_consistency"] <= 1

    moved = tmp_path / "elsewhere" / "cache"
    shutil.move(cache, moved)
    judge, base = moved / "demo" / "judge", moved / "demo" / "base"
    assert judge_model.is_built(judge, base, judge_model.DemoJudgeConfig())
