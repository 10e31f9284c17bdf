"""The cluster path, for real, on this machine: `ray up` with ray_cluster.yaml's local-provider
variant against an SSH server on loopback, `ray job submit --working-dir .` of a sweep script, `ray
job logs`, then `ray down`.

Marked `cluster` (and slow): `ray up` and `ray down` run `ray stop`, which stops every Ray on the
machine, so this runs alone (`make test-cluster`, called by .ci/run), never beside the test
session's own Ray. Needs Debian's openssh-server, rsync and netcat-openbsd.
"""

import functools
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from helpers import CLUSTER_CONFIG, check_cluster_config, cluster_variants, uncomment_variant

from mlit.plumbing.ports import free_port

ROOT = Path(__file__).parents[2]
VENV_BIN = Path(sys.executable).parent
pytestmark = [pytest.mark.slow, pytest.mark.cluster]
DASHBOARD = "http://127.0.0.1:8265"


@pytest.fixture()
def sshd(tmp_path):
    """An SSH server on 127.0.0.1 that lets this user in with a fresh key: (key, port)."""
    missing = [t for t in ("/usr/sbin/sshd", "rsync", "nc") if not shutil.which(t)]
    if missing:
        pytest.skip(f"missing {missing}: apt-get install openssh-server rsync netcat-openbsd")
    for name in ("host", "client"):
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / name)], check=True
        )
    # The "node" logs in with a home of its own whose shell has mlit's environment on PATH, as
    # a cluster node's login shell has (Ray runs every command, its own `ray stop` in `ray down`
    # included, through `bash --login`).
    home = tmp_path / "node-home"
    home.mkdir()
    for rc in (".bashrc", ".profile"):
        (home / rc).write_text(f'export PATH="{VENV_BIN}:$PATH" RAY_AUTH_MODE=token\n')
    # The cluster's token (Ray reads ~/.ray/auth_token on the node; clients send it).
    (home / ".ray").mkdir()
    (home / ".ray" / "auth_token").write_text(secrets.token_hex(32))
    key = (tmp_path / "client.pub").read_text()
    (tmp_path / "authorized_keys").write_text(f'environment="HOME={home}" {key}')
    port = free_port()
    config = tmp_path / "sshd_config"
    config.write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {tmp_path / 'host'}\n"
        f"AuthorizedKeysFile {tmp_path / 'authorized_keys'}\nPidFile {tmp_path / 'sshd.pid'}\n"
        "PasswordAuthentication no\nPermitRootLogin prohibit-password\nStrictModes no\n"
        "UsePAM no\nPermitUserEnvironment yes\n"
    )
    Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege-separation directory
    proc = subprocess.Popen(["/usr/sbin/sshd", "-D", "-e", "-f", str(config)])
    time.sleep(1)
    assert proc.poll() is None, "sshd did not start"
    yield tmp_path / "client", port, home
    proc.terminate()
    proc.wait(10)


def local_cluster(key: Path, port: int) -> dict:
    """ray_cluster.yaml with its local variant, pointed at this machine over loopback SSH."""
    base = yaml.safe_load(CLUSTER_CONFIG.read_text())
    override, remove = uncomment_variant(cluster_variants()["local"])
    config = {k: v for k, v in base.items() if k not in remove}
    config.update(override)
    config["cluster_name"] = "mlit-loopback-test"
    config["provider"].update(head_ip="127.0.0.1", worker_ips=[])
    config["auth"] = {
        "ssh_user": os.environ.get("USER", "root"),
        "ssh_private_key": str(key),
        "ssh_proxy_command": f"nc 127.0.0.1 {port}",  # sshd listens on a free port, not 22
    }
    # This machine already has the project installed: no copy, no pip.
    config["file_mounts"] = {}
    config["setup_commands"] = []
    check_cluster_config(config)
    return config


def _ray(*args, token: str = "", timeout=600, check=True) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [str(VENV_BIN / "ray"), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        # Ray >= 2.59 starts clusters with token auth: the client sends the head's token.
        env={**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token}
        if token
        else os.environ,
    )
    if check and done.returncode:
        raise AssertionError(f"ray {' '.join(args)}: {done.returncode}\n{done.stdout}{done.stderr}")
    return done


def test_ray_up_job_submit_logs_and_down_on_loopback(sshd, tmp_path):
    key, port, home = sshd
    cluster = tmp_path / "cluster.yaml"
    cluster.write_text(yaml.safe_dump(local_cluster(key, port)))
    run_dir = tmp_path / "run"
    env = {
        "env_vars": {
            "MLIT_CACHE": os.environ.get("MLIT_CACHE", str(Path.home() / ".cache" / "mlit")),
            "MLIT_STORE": str(tmp_path / "store"),
        }
    }
    try:
        _ray("up", "-y", "--no-config-cache", str(cluster))
        # The head's token, fetched as from any remote cluster.
        said = _ray("exec", str(cluster), "ray get-auth-token").stdout
        token = (home / ".ray" / "auth_token").read_text()
        assert token in said
        ray = functools.partial(_ray, token=token)
        assert ray("job", "list", "--address", DASHBOARD, token="x" * 64, check=False).returncode
        # What --working-dir . ships: the package and the scripts, not the venv or results.
        listing = ray(
            "job", "submit", "--address", DASHBOARD, "--working-dir", ".", "--",
            "python", "-c", "import os; print(sorted(os.listdir('.')))",
        ).stdout  # fmt: skip
        assert "'mlit'" in listing and "'sweeps'" in listing, listing
        for absent in (".venv", ".git", "results", "tests"):
            assert f"'{absent}'" not in listing, listing
        job = "mlit-loopback-sweep"
        ray(
            "job", "submit", "--address", DASHBOARD, "--submission-id", job,
            "--working-dir", ".", "--runtime-env-json", json.dumps(env), "--",
            "python", "sweeps/language_count.py", "--languages", "fi,en,cs",
            "--output", str(run_dir), "--max-steps", "8",
        )  # fmt: skip
        status = ray("job", "status", "--address", DASHBOARD, job).stdout
        assert "succeeded" in status.lower(), status
        logs = ray("job", "logs", "--address", DASHBOARD, job).stdout
        for phase in ("[train]", "[generate]", "[judge]", "done in"):
            assert phase in logs, logs
        assert (run_dir / "report.html").exists()
        assert json.loads((run_dir / "run.json").read_text())["status"] == "ok"
    finally:
        _ray("down", "-y", str(cluster), check=False)
    # ray down stopped the cluster: its dashboard no longer answers.
    assert _ray("job", "list", "--address", DASHBOARD, timeout=60, check=False).returncode != 0
