"""A quiet console: library output (Python and C alike) to a log file, mlit's lines on screen."""

import subprocess
import sys

from mlit.plumbing import console

SCRIPT = """
import os, sys
from pathlib import Path
from mlit.plumbing import console
with console.quiet():
    print("library noise")
    os.system("echo noise from a subprocess")
    console.say("[phase] a line for the user")
    console.attach(Path(sys.argv[1]))
    print("noise after attach", file=sys.stderr)
    console.warn("[phase] a warning for the user")
print("back on the console")
"""


def test_library_output_goes_to_the_log_and_mlit_lines_to_the_console(tmp_path):
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path / "logs")],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.splitlines() == ["[phase] a line for the user", "back on the console"]
    assert out.stderr.splitlines() == ["[phase] a warning for the user"]
    log = (tmp_path / "logs" / "mlit.log").read_text()
    for noise in ("library noise", "noise from a subprocess", "noise after attach"):
        assert noise in log
    assert "a line for the user" not in log


def test_the_log_is_split_into_one_file_per_source(tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "mlit.log").write_text(
        "\x1b[36m(RayTrainWorker pid=5)\x1b[0m Writing model shards\n"
        "(ServeReplica:mlit:ModelServer pid=6) Loading weights\n"
        "(ServeController pid=7) Deploying\n"
        "\x1b[33m(raylet)\x1b[0m WARNING: 8 PYTHON worker processes\n"
        "View detailed results here: /tmp/run/ray\n"
    )
    assert console.split_sources(logs / "mlit.log") == {
        "train.log": 1,
        "serve.log": 2,
        "ray-workers.log": 1,
        "driver.log": 1,
    }
    assert "Writing model shards" in (logs / "train.log").read_text()
    assert "View detailed" in (logs / "driver.log").read_text()


def test_failures_of_the_environment_are_named_in_one_line_never_as_a_bug(capsys):
    import pytest

    from mlit.plumbing import console

    overloaded = Exception(
        "The current node timed out during startup. This could happen because some of the Ray "
        "processes failed to startup."
    )
    for error, said in (
        (overloaded, "Ray could not start on this machine"),
        (MemoryError(), "out of memory"),
        (OSError(98, "Address already in use"), "a port is taken"),
    ):
        with pytest.raises(SystemExit) as done:
            console.exit_for(error)
        err = capsys.readouterr().err
        assert done.value.code == 2 and err.startswith(f"error: the environment: {said}"), err
        assert "bug" not in err and len(err.strip().splitlines()) == 1


def test_a_taken_port_stops_mlit_serve_before_ray_starts():
    import socket

    from click.testing import CliRunner

    from mlit.cli.main import app
    from mlit.plumbing import ports

    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        taken = held.getsockname()[1]
        out = CliRunner().invoke(app, ["serve", "--model", "x=/nonexistent", "--port", str(taken)])
        assert out.exit_code == 2 and f"--port {taken} on 127.0.0.1 is in use" in out.output
        assert ports.http_port(None, default=taken) != taken  # left out: a free one instead
    assert ports.http_port(None, default=taken) == taken  # 8000's place: taken when free
