"""A three-language sweep generating and judging through the vLLM engine (`make test-vllm`)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]


@pytest.mark.vllm
def test_three_language_sweep_through_vllm(tmp_path):
    from mlit.planning import engine_choice as vllm_engine

    try:
        vllm_engine.python()
    except ValueError as err:
        pytest.skip(str(err))
    run_dir = tmp_path / "run"
    run = subprocess.run(
        [
            sys.executable,
            str(ROOT / "sweeps" / "monolingual.py"),
            "--languages",
            "en,es,fi",
            "--engine",
            "vllm",
            "--store",
            str(tmp_path / "store"),
            "--output",
            str(run_dir),
        ],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    phases = json.loads((run_dir / "run.json").read_text())["phases"]
    assert phases["generate"]["answered"] == phases["generate"]["answers"] == 144
    assert phases["judge"]["errors"] == 0
