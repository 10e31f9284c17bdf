import json
import subprocess
import sys

from click.testing import CliRunner

from mlit.cli.main import app

runner = CliRunner()


def test_mixtures_json_is_machine_readable():
    result = runner.invoke(app, ["mixtures", "language_count", "--json", "--seed", "1"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert len(rows) == 16
    assert all(set(r) >= {"name", "counts", "hash"} for r in rows)
    assert all(sum(r["counts"].values()) == 48 for r in rows)


def test_mixtures_at_paper_budget_without_data():
    result = runner.invoke(
        app, ["mixtures", "multilingual_fraction", "--data", "none", "--budget", "4640"]
    )
    assert result.exit_code == 0, result.output
    assert "frac12-p001" in result.stdout and "en:4598" in result.stdout


def test_mixtures_errors_are_readable():
    result = runner.invoke(app, ["mixtures", "language_count", "--budget", "4640"])
    assert result.exit_code == 2
    assert "larger than the data" in result.stderr
    result = runner.invoke(app, ["mixtures", "nope"])
    assert result.exit_code == 2 and "unknown experiment" in result.stderr


def test_data_validate_exit_codes(tmp_path):
    assert runner.invoke(app, ["data", "validate", "sample"]).exit_code == 0
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        '{"example_id": "a", "lang": "en", "split": "train", "instruction": "x", "response": "y"}\n'
        '{"example_id": "a", "lang": "en", "split": "train", "instruction": "x", "response": "y"}\n'
    )
    result = runner.invoke(app, ["data", "validate", str(bad)])
    assert result.exit_code == 1 and "duplicate: 1" in result.stdout
    result = runner.invoke(app, ["data", "validate", str(tmp_path / "none.jsonl")])
    assert result.exit_code == 2 and "no such file" in result.stderr


def test_python_dash_m_works():
    out = subprocess.run(
        [sys.executable, "-m", "mlit", "mixtures", "bilingual", "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert len(json.loads(out.stdout)) == 6


def test_import_mlit_is_light():
    code = (
        "import sys, mlit, mlit.cli.main, mlit.data.dataset, mlit.method.mixtures, mlit.method.experiments\n"
        "heavy = [m for m in ('torch', 'ray', 'transformers', 'litellm', 'deepspeed') "
        "if m in sys.modules]\n"
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def _main(argv, monkeypatch, capsys) -> tuple[int, str]:
    """`mlit ARGV` as the installed command runs it (mlit.cli.main.main): (exit code, stderr)."""
    from mlit.cli.main import main

    monkeypatch.setattr(sys, "argv", ["mlit", *argv])
    try:
        main()
        code = 0
    except SystemExit as done:
        code = done.code
    return code, capsys.readouterr().err


def test_expected_failures_of_every_kind_are_one_line_with_exit_code_2(
    monkeypatch, capsys, tmp_path
):
    for argv, says in [
        (["report", str(tmp_path / "nowhere")], "is this a run folder"),
        (["data", "validate", str(tmp_path / "none.parquet")], "no such file"),
        (["estimate", "language_count", "--gpu", "b200x"], "unknown GPU"),
        (["train", "language_count", "--data", str(tmp_path / "x.parquet")], "no such file"),
        (["serve", "--model", f"a={tmp_path}"], "has no config.json"),
        (["store", "verify", "--store", str(tmp_path / "absent")], "absent"),
    ]:
        code, err = _main(argv, monkeypatch, capsys)
        assert code == 2, (argv, err)
        assert err.startswith("error: ") and says in err, (argv, err)
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, (argv, err)


def test_a_bug_prints_its_traceback_and_exits_1(monkeypatch, capsys):
    from mlit.method import experiments

    def broken(*args, **kwargs):
        raise KeyError("a bug")

    monkeypatch.setattr(experiments, "get", broken)
    code, err = _main(["estimate", "language_count"], monkeypatch, capsys)
    assert code == 1
    assert "Traceback" in err and "KeyError" in err and "a bug in mlit" in err
