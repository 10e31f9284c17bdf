"""`benchmarks/gpu.py` cannot rot: its smoke mode runs the same code on tiny shapes here."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent


def test_gpu_benchmark_smoke_mode_measures_training_and_generation(tmp_path):
    out = tmp_path / "gpu.json"
    run = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu.py"), "--smoke", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["smoke"] is True and result["card"]
    assert result["limits"]["matmul_flops"] > 0 and result["limits"]["bandwidth_bytes_s"] > 0
    [row] = result["models"].values()
    train = row["train"]
    assert train["zero_stage"] == 2 and train["tokens_per_s"] > 0 and 0 < train["mfu"] < 1
    assert [g["batch"] for g in row["generate_hf"]] == [1, 4]
    assert all(0 < g["share_of_limit"] < 1 for g in row["generate_hf"])

    # `mlit estimate` reads such a file for its GPU type. No GPU here: the smoke result stands in
    # for one, relabelled (smoke results themselves are never used).
    from click.testing import CliRunner

    from mlit.cli.main import app

    runner = CliRunner()
    args = ["estimate", "paper", "--gpu", "h100", "--results", str(tmp_path)]
    assumed = runner.invoke(app, args)
    assert assumed.exit_code == 0 and "measured: nothing for this GPU" in assumed.stdout
    gpu_file = tmp_path / "gpu-nvidia-h100.json"
    gpu_file.write_text(
        json.dumps({**result, "smoke": False, "device": "cuda", "card": "NVIDIA H100 80GB HBM3"})
    )
    params = str(train["parameters"])
    got = runner.invoke(app, [*args, "--params", params])
    assert got.exit_code == 0, got.output
    assert f"at {train['mfu']:.0%} MFU" in got.stdout
    best = max(g["tokens_per_s"] for g in row["generate_hf"])
    assert f"{best:,.0f} new tokens/s per GPU (measured)" in got.stdout
    assert "gpu-nvidia-h100.json (NVIDIA H100 80GB HBM3, hf engine)" in got.stdout
    other = runner.invoke(app, ["estimate", "paper", "--gpu", "a100", "--results", str(tmp_path)])
    assert "measured: nothing for this GPU" in other.stdout


def test_gpu_benchmark_refuses_full_mode_without_a_gpu():
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is here: full mode runs")
    run = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu.py")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 2 and "no CUDA GPU" in run.stderr
