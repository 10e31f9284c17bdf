import pytest
from click.testing import CliRunner

from mlit.cli.main import app
from mlit.method import experiments
from mlit.planning import estimate


def test_estimate_matches_a_hand_calculation():
    a = estimate.Assumptions(
        params=1e9,
        gpu="h100",
        gpus=2,
        train_mfu=0.5,
        generation_mfu=0.1,
        steps=10,
        batch=2,
        input_tokens=10,
        target_tokens=20,
        dev_size=5,
        eval_every=5,
        new_tokens=30,
        eval_instructions=4,
        judge_template_tokens=10,
        judge_input_price=1.0,
        judge_output_price=2.0,
    )
    e = estimate.estimate(["monolingual"], a)
    peak = 989e12
    per_model_h = (
        (6e9 * 600 + 2e9 * 10 * 40) / (peak * 0.5) / 3600
    )  # 600 train tokens, 10 dev answers
    assert (e.model_slots, e.distinct_models) == (12, 12)
    assert e.train_tokens == 12 * 600
    assert e.train_gpu_hours == pytest.approx(12 * per_model_h)
    assert e.generations == 144 * 4  # 12 models x 12 languages x 4 instructions
    assert e.generation_tokens == 576 * 40
    assert e.generation_gpu_hours == pytest.approx(2e9 * 23040 / (peak * 0.1) / 3600)
    assert e.judge_calls == 2 * (144 - 12) * 4  # the diagonal is a self-comparison: no call
    assert e.judge_input_tokens == 1056 * 80
    assert e.judge_dollars == pytest.approx(0.08448 + 1056 * 2 / 1e6)
    assert e.wall_hours == pytest.approx((e.train_gpu_hours + e.generation_gpu_hours) / 2)
    assert e.store_saves_models == 0


def test_the_store_saving_across_the_paper():
    e = estimate.estimate(list(experiments.NAMES), estimate.Assumptions())
    assert e.distinct_models == 57 and e.model_slots == 129
    assert e.store_saves_models == 72 and e.store_saves_gpu_hours > 0


def test_cli_prints_assumptions_and_rejects_bad_input():
    runner = CliRunner()
    out = runner.invoke(app, ["estimate", "paper", "--params", "1.5e9", "--gpu", "h100"])
    assert out.exit_code == 0 and "assumptions:" in out.stdout and "57 models" in out.stdout
    bad = runner.invoke(app, ["estimate", "paper", "--gpu", "tpu9"])
    assert bad.exit_code == 2 and "unknown GPU 'tpu9'" in bad.stderr
